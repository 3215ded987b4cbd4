"""Read one Envoy's per-cluster stats from its Prometheus endpoint.

Envoy serves its stats in Prometheus text format on the admin API (`/stats/prometheus`); an Istio proxy
also serves them to the pod network on `:15090/stats/prometheus`, a listener routed to its admin. Both
take `filter=REGEX` (RE2, matched against the full stat name such as
`cluster.outbound|8080||app.default.svc.cluster.local.membership_healthy`), which keeps an answer to the
few clusters asked about. Istio names the cluster tag `cluster_name`; plain Envoy does too.

This module parses those answers and fetches them over a keep-alive connection; what the numbers mean
for routing is `gatewaystats`' job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp

MEMBERSHIP_HEALTHY = "envoy_cluster_membership_healthy"
UPSTREAM_RQ_TOTAL = "envoy_cluster_upstream_rq_total"
UPSTREAM_RQ_ACTIVE = "envoy_cluster_upstream_rq_active"
NONE_HEALTHY = "envoy_cluster_upstream_cx_none_healthy"
PROMETHEUS_PATH = "/stats/prometheus"

# The stat-name suffix of each family, for building `filter=` expressions.
STAT_SUFFIX = {
    MEMBERSHIP_HEALTHY: "membership_healthy",
    UPSTREAM_RQ_TOTAL: "upstream_rq_total",
    UPSTREAM_RQ_ACTIVE: "upstream_rq_active",
    NONE_HEALTHY: "upstream_cx_none_healthy",
}

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}

ClusterStats = dict[tuple[str, str], float]
"""(metric family, cluster name) -> value, e.g. `(MEMBERSHIP_HEALTHY, "outbound|80||a.ns.svc.cluster.local")`."""


class StatsError(RuntimeError):
    """The stats endpoint did not answer, or answered something other than Prometheus text."""


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE.sub(lambda match: _ESCAPES.get(match.group(1), match.group(1)), value)


def parse_cluster_stats(text: str, families: Iterable[str] = STAT_SUFFIX) -> ClusterStats:
    """The samples of `families` that carry a `cluster_name` label; other lines are skipped."""
    wanted = frozenset(families)
    found: ClusterStats = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        match = _SAMPLE.match(line)
        if match is None or match.group(1) not in wanted or not match.group(2):
            continue
        cluster = None
        for label in _LABEL.finditer(match.group(2)):
            if label.group(1) == "cluster_name":
                cluster = _unescape(label.group(2))
                break
        if cluster is None:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        if not math.isnan(value):
            found[(match.group(1), cluster)] = value
    return found


def _re2_escape(text: str) -> str:
    return re.sub(r"([^A-Za-z0-9_])", r"\\\1", text)


def cluster_filter(clusters: Iterable[str], families: Iterable[str]) -> str:
    """A `filter=` regex matching exactly these families' stats of exactly these clusters."""
    names = "|".join(sorted(_re2_escape(c) for c in set(clusters)))
    suffixes = "|".join(sorted(STAT_SUFFIX[f] for f in set(families)))
    return rf"^cluster\.({names})\.({suffixes})$"


def outbound_filter(family: str = MEMBERSHIP_HEALTHY) -> str:
    """A `filter=` regex matching one family of every Istio outbound cluster (is the inclusion installed?)."""
    return rf"^cluster\.outbound\|.*\.{STAT_SUFFIX[family]}$"


@dataclass(frozen=True, slots=True)
class StatsEndpoint:
    """Where one Envoy serves Prometheus stats: `http://HOST:PORT/stats/prometheus`."""

    host: str
    port: int
    path: str = PROMETHEUS_PATH

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


class StatsClient:
    """Fetches Prometheus stats over keep-alive connections; one client serves many endpoints."""

    def __init__(self, *, timeout: float = 1.0, connections: int = 16) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections, limit_per_host=2)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self._session

    async def fetch_text(self, endpoint: StatsEndpoint, filter_regex: str) -> str:
        """The endpoint's answer to `?filter=filter_regex`; raises StatsError on anything but HTTP 200."""
        try:
            async with self._client().get(endpoint.url, params={"filter": filter_regex}) as response:
                body = await response.text(errors="replace")
                if response.status != 200:
                    raise StatsError(f"{endpoint.url}: HTTP {response.status}: {body[:200].strip()}")
                return body
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise StatsError(f"{endpoint.url}: {type(exc).__name__}: {exc}") from exc

    async def fetch(self, endpoint: StatsEndpoint, filter_regex: str, families: Iterable[str]) -> ClusterStats:
        return parse_cluster_stats(await self.fetch_text(endpoint, filter_regex), families)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
