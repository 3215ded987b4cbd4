"""A small client for Envoy's admin API: which endpoints of a cluster a running Envoy has loaded, and readiness.

`gatewayview` uses it, for either provider given `--envoy-admin`, to learn when each gateway can really route
to a new endpoint, which is when held requests may be released; `dev.envoyproc` uses it to wait for Envoy.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

import aiohttp

_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


class EnvoyAdminError(RuntimeError):
    """The admin API did not answer as expected (Envoy down, wrong URL)."""


@dataclass(frozen=True, slots=True)
class ClusterCounters:
    """One cluster's request counters in one Envoy: requests sent upstream (a counter), open now (a gauge),
    and requests it answered itself for want of a healthy endpoint (a counter)."""

    requests: int = 0
    active: int = 0
    none_healthy: int = 0

    def __add__(self, other: ClusterCounters) -> ClusterCounters:
        return ClusterCounters(
            self.requests + other.requests, self.active + other.active, self.none_healthy + other.none_healthy
        )


@dataclass(slots=True)
class GatewayReading:
    """One read of several gateways' counters: per gateway (an admin URL, a pod) the counters of each
    cluster it has; the gateways that could not be read are in `errors` instead."""

    counters: dict[str, dict[str, ClusterCounters]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


_COUNTER_FIELDS = {
    "upstream_rq_total": "requests",
    "upstream_rq_active": "active",
    "upstream_cx_none_healthy": "none_healthy",
}


@dataclass(frozen=True, slots=True)
class LoadedHost:
    address: str
    port: int
    healthy: bool


class EnvoyAdmin:
    """Admin API of one Envoy, e.g. `EnvoyAdmin("http://127.0.0.1:9901")`. Use as an async context manager."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EnvoyAdmin:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=_TIMEOUT)
        return self._session

    async def _get_json(self, path: str) -> dict[str, object]:
        try:
            async with self._client().get(self.url + path) as response:
                if response.status != 200:
                    raise EnvoyAdminError(f"{self.url}{path}: HTTP {response.status}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EnvoyAdminError(f"{self.url}{path}: {exc!r}") from exc
        if not isinstance(data, dict):
            raise EnvoyAdminError(f"{self.url}{path}: unexpected answer")
        return data

    async def cluster_hosts(self) -> dict[str, list[LoadedHost]]:
        """Every cluster's loaded hosts, by cluster name."""
        data = await self._get_json("/clusters?format=json")
        result: dict[str, list[LoadedHost]] = {}
        for cluster in data.get("cluster_statuses", []) or []:  # type: ignore[attr-defined]
            hosts = []
            for host in cluster.get("host_statuses", []) or []:
                socket = host.get("address", {}).get("socket_address", {})
                health = host.get("health_status", {})
                failed = any(value for key, value in health.items() if key.startswith("failed"))
                healthy = health.get("eds_health_status", "HEALTHY") == "HEALTHY" and not failed
                hosts.append(LoadedHost(socket.get("address", ""), int(socket.get("port_value", 0)), healthy))
            result[cluster.get("name", "")] = hosts
        return result

    async def active_requests(self, cluster: str) -> int:
        """Requests this Envoy has open to `cluster`'s upstreams now (`cluster.NAME.upstream_rq_active`)."""
        pattern = "^" + re.escape(f"cluster.{cluster}.upstream_rq_active") + "$"
        data = await self._get_json(f"/stats?format=json&filter={urllib.parse.quote(pattern, safe='')}")
        stats = data.get("stats")
        total = 0
        for stat in stats if isinstance(stats, list) else []:
            if isinstance(stat, dict):
                total += int(stat.get("value", 0))
        return total

    async def cluster_counters(self, clusters: list[str]) -> dict[str, ClusterCounters]:
        """`ClusterCounters` of each of `clusters` (one request, an exact-name filter); a cluster the Envoy
        does not have is absent."""
        if not clusters:
            return {}
        names = "|".join(re.escape(c) for c in clusters)
        pattern = rf"^cluster\.({names})\.({'|'.join(_COUNTER_FIELDS)})$"
        data = await self._get_json(f"/stats?format=json&filter={urllib.parse.quote(pattern, safe='')}")
        stats = data.get("stats")
        values: dict[str, dict[str, int]] = {}
        for stat in stats if isinstance(stats, list) else []:
            if not isinstance(stat, dict) or "value" not in stat:
                continue
            cluster, _, name = str(stat.get("name", "")).removeprefix("cluster.").rpartition(".")
            field = _COUNTER_FIELDS.get(name)
            if field is not None and cluster in clusters:
                values.setdefault(cluster, {})[field] = int(stat["value"])
        return {cluster: ClusterCounters(**fields) for cluster, fields in values.items()}

    async def route_config_version(self, name: str) -> str | None:
        """The `version_info` of the dynamic route configuration `name` this Envoy has loaded (None: none)."""
        data = await self._get_json("/config_dump?resource=dynamic_route_configs")
        configs = data.get("configs")
        for config in configs if isinstance(configs, list) else []:
            if isinstance(config, dict) and config.get("route_config", {}).get("name") == name:
                version = config.get("version_info")
                return None if version is None else str(version)
        return None

    async def ready(self) -> bool:
        try:
            async with self._client().get(self.url + "/ready") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
