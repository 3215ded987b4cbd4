"""Which gateway pods can route to a cluster, read from each pod's own Envoy stats.

An Istio gateway keeps its Envoy admin on localhost, but every pod serves its stats on
`POD_IP:15090/stats/prometheus`. A cluster is routable through a pod once that pod reports
`envoy_cluster_membership_healthy >= 1` for it; a target is routable once every Ready gateway pod does.
The pods themselves come from whoever knows them (the Kubernetes provider watches them) via `set_pods`.

Pods are polled only while someone waits (a cold start being confirmed), every few milliseconds, one
request in flight per pod, asking only for the clusters being waited on. A pod whose stats cannot be read
(unreachable, or the stats inclusion is missing so no outbound cluster appears) is *blind*: it is said
loudly (a WARNING once per pod, `status()`), and a wait that only blind pods hold up ends after the
fallback delay instead (the old `--propagation-delay` guess).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from extproc.core.background import BackgroundTasks
from extproc.envoy.adminapi import ClusterCounters, GatewayReading
from extproc.envoy.stats import (
    MEMBERSHIP_HEALTHY,
    NONE_HEALTHY,
    PROMETHEUS_PATH,
    UPSTREAM_RQ_ACTIVE,
    UPSTREAM_RQ_TOTAL,
    StatsClient,
    StatsEndpoint,
    StatsError,
    cluster_filter,
    outbound_filter,
    parse_cluster_stats,
)

log = logging.getLogger(__name__)

_INCLUSION_RECHECK = 30.0
# Any outbound cluster's membership line: the answer can be large, so it is searched, not parsed.
_OUTBOUND_SAMPLE = MEMBERSHIP_HEALTHY + '{cluster_name="outbound|'
_ERROR_BACKOFF_MAX = 1.0
_COUNTER_FAMILIES = (UPSTREAM_RQ_TOTAL, UPSTREAM_RQ_ACTIVE, NONE_HEALTHY)


@dataclass(frozen=True, slots=True)
class GatewayPod:
    """One Ready gateway pod: its name (for messages) and the IP its stats listener is on."""

    name: str
    ip: str


class PodStatsState(enum.Enum):
    """What zerohop knows of one pod's stats."""

    UNKNOWN = "unknown"  # not asked yet
    OK = "ok"  # answers, and shows outbound clusters
    UNREACHABLE = "unreachable"  # no answer (NetworkPolicy, wrong port, pod going away)
    NO_STATS = "no-stats"  # answers, but no outbound cluster stats: the stats inclusion is not installed


BLIND = frozenset({PodStatsState.UNREACHABLE, PodStatsState.NO_STATS})


class Confirmation(enum.Enum):
    """How a wait for routability ended."""

    STATS = "stats"  # every Ready gateway pod reported a healthy member
    FALLBACK = "fallback"  # some pods' stats could not be read: the fallback delay passed
    NO_PODS = "no_pods"  # no gateway pod known: the fallback delay passed


@dataclass(slots=True)
class _Pod:
    pod: GatewayPod
    endpoint: StatsEndpoint
    state: PodStatsState = PodStatsState.UNKNOWN
    error: str = ""
    since: float = field(default_factory=time.time)
    warned: bool = False
    inclusion_checked: float = -1e18
    # cluster -> (membership_healthy, monotonic time the fetch that saw it was sent)
    seen: dict[str, tuple[float, float]] = field(default_factory=dict)
    task: asyncio.Future[None] | None = None

    def set_state(self, state: PodStatsState, error: str = "") -> None:
        if state is not self.state:
            self.since = time.time()
        self.state = state
        self.error = error


@dataclass(frozen=True, slots=True)
class PodStatsStatus:
    """One gateway pod's stats as zerohop last saw them; `since` is wall-clock seconds."""

    name: str
    ip: str
    stats: PodStatsState
    error: str
    since: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ip": self.ip, "stats": self.stats.value, "error": self.error, "since": self.since}


@dataclass(frozen=True, slots=True)
class GatewayStatsStatus:
    """The gateway pods' stats at one moment: for /status and the gateway metrics."""

    stats_port: int
    pods: tuple[PodStatsStatus, ...]
    fetches: int
    fetch_errors: int
    confirmations: tuple[tuple[Confirmation, int], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "statsPort": self.stats_port,
            "pods": [pod.as_dict() for pod in self.pods],
            "fetches": self.fetches,
            "fetchErrors": self.fetch_errors,
            "confirmations": {outcome.value: count for outcome, count in self.confirmations},
        }


class GatewayStats:
    """Waits until every Ready gateway pod can route to a cluster, from the pods' Prometheus stats."""

    def __init__(
        self,
        port: int,
        *,
        fallback_delay: float,
        client: StatsClient | None = None,
        poll_interval: float = 0.005,
        path: str = PROMETHEUS_PATH,
    ) -> None:
        self.port = port
        self.fallback_delay = fallback_delay
        self.poll_interval = poll_interval
        self._path = path
        self._client = client or StatsClient()
        self._pods: dict[str, _Pod] = {}
        self._pods_known = False
        self._waiting: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._warned_no_pods = False
        self._tasks = BackgroundTasks()
        # Called when a pod turns blind or readable again (the provider updates the objects' conditions).
        self.on_visibility_change: Callable[[], None] | None = None
        self.fetches = 0
        self.fetch_errors = 0
        self.confirmations = dict.fromkeys(Confirmation, 0)

    # --- pods -------------------------------------------------------------------------------------

    def set_pods(self, pods: Iterable[GatewayPod]) -> None:
        """The Ready gateway pods now; pods not listed are forgotten."""
        wanted = {pod.name: pod for pod in pods}
        self._pods_known = True
        for name in [name for name, known in self._pods.items() if wanted.get(name) != known.pod]:
            gone = self._pods.pop(name)
            if gone.task is not None:
                gone.task.cancel()
            if gone.state in BLIND:
                self._visibility_changed()
        for name, pod in wanted.items():
            if name not in self._pods:
                state = self._pods[name] = _Pod(pod, StatsEndpoint(pod.ip, self.port, self._path))
                log.info("gateway pod %s (%s) followed through its stats on port %d", name, pod.ip, self.port)
                # A first look now, so a missing inclusion or a blocked port is reported before any cold start.
                self._tasks.spawn(self._look(state), name=f"gateway stats look {name}")
        if wanted:
            self._warned_no_pods = False
        self._start_polling()
        self._notify()

    @property
    def pods(self) -> list[GatewayPod]:
        return [state.pod for state in self._pods.values()]

    def blind_pods(self) -> list[str]:
        """Names of pods whose stats cannot be read now."""
        return [name for name, state in self._pods.items() if state.state in BLIND]

    # --- waiting ----------------------------------------------------------------------------------

    async def wait_routable(self, cluster: str, fallback_delay: float | None = None) -> Confirmation:
        """Return once every Ready gateway pod has a healthy member in `cluster` (seen in a fetch sent after
        this call), or, where pods are blind or unknown, once the fallback delay has passed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + (self.fallback_delay if fallback_delay is None else fallback_delay)
        self._waiting[cluster] = self._waiting.get(cluster, 0) + 1
        self._start_polling()
        try:
            while True:
                changed = self._changed
                now = loop.time()
                outcome = self._evaluate(cluster, started, now >= deadline)
                if outcome is not None:
                    self.confirmations[outcome] += 1
                    return outcome
                timeout = max(0.0, deadline - now) if now < deadline else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout)
        finally:
            self._waiting[cluster] -= 1
            if not self._waiting[cluster]:
                del self._waiting[cluster]

    def _evaluate(self, cluster: str, started: float, past_deadline: bool) -> Confirmation | None:
        if not self._pods:
            if not self._warned_no_pods:
                self._warned_no_pods = True
                log.warning(
                    "no Ready gateway pod known (%s); releasing held requests %.2fs after the endpoint is "
                    "ready instead of when the gateway has it",
                    "selector matches none" if self._pods_known else "gateway pods not listed yet",
                    self.fallback_delay,
                )
            return Confirmation.NO_PODS if past_deadline else None
        blind = 0
        for pod in self._pods.values():
            seen = pod.seen.get(cluster)
            if seen is not None and seen[1] >= started and seen[0] >= 1:
                continue
            if pod.state in BLIND:
                blind += 1
                continue
            return None
        if not blind:
            return Confirmation.STATS
        return Confirmation.FALLBACK if past_deadline else None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- polling ----------------------------------------------------------------------------------

    def _start_polling(self) -> None:
        if not self._waiting:
            return
        for pod in self._pods.values():
            if pod.task is None or pod.task.done():
                pod.task = self._tasks.spawn(self._poll(pod), name=f"gateway stats {pod.pod.name}")

    async def _poll(self, pod: _Pod) -> None:
        backoff = self.poll_interval
        while self._waiting and self._pods.get(pod.pod.name) is pod:
            clusters = list(self._waiting)
            sent = asyncio.get_running_loop().time()
            self.fetches += 1
            try:
                text = await self._client.fetch_text(pod.endpoint, cluster_filter(clusters, [MEMBERSHIP_HEALTHY]))
            except StatsError as exc:
                self.fetch_errors += 1
                self._blind(pod, PodStatsState.UNREACHABLE, str(exc))
                self._notify()
                backoff = min(_ERROR_BACKOFF_MAX, max(0.05, backoff * 2))
                await asyncio.sleep(backoff)
                continue
            backoff = self.poll_interval
            stats = parse_cluster_stats(text, [MEMBERSHIP_HEALTHY])
            missing = False
            for cluster in clusters:
                value = stats.get((MEMBERSHIP_HEALTHY, cluster))
                if value is None:
                    missing = True
                else:
                    pod.seen[cluster] = (value, sent)
            if not missing:
                self._seeing(pod)
            elif pod.state is not PodStatsState.OK or sent - pod.inclusion_checked > _INCLUSION_RECHECK:
                await self._check_inclusion(pod, sent)
            self._notify()
            await asyncio.sleep(self.poll_interval)

    async def _look(self, pod: _Pod) -> None:
        """Check a new pod's stats, then again every so often while it stays blind, so that what the
        status says (and the GatewayVisible condition) follows a fixed NetworkPolicy or a rolled gateway."""
        while self._pods.get(pod.pod.name) is pod:
            await self._check_inclusion(pod, asyncio.get_running_loop().time())
            if pod.state not in BLIND:
                return
            await asyncio.sleep(_INCLUSION_RECHECK)

    async def _check_inclusion(self, pod: _Pod, now: float) -> None:
        """A cluster is missing from the answer: is it not loaded yet, or does the pod show no outbound stats?"""
        pod.inclusion_checked = now
        self.fetches += 1
        try:
            text = await self._client.fetch_text(pod.endpoint, outbound_filter())
        except StatsError as exc:
            self.fetch_errors += 1
            self._blind(pod, PodStatsState.UNREACHABLE, str(exc))
            return
        if _OUTBOUND_SAMPLE in text:
            self._seeing(pod)
        else:
            self._blind(
                pod,
                PodStatsState.NO_STATS,
                "no outbound cluster stats: install zerohop's proxyStatsMatcher inclusion (docs/istio.md)",
            )

    def _seeing(self, pod: _Pod) -> None:
        was_blind = pod.state in BLIND
        if was_blind:
            log.info("gateway pod %s: stats readable; routability is exact for it", pod.pod.name)
            pod.warned = False
        pod.set_state(PodStatsState.OK)
        if was_blind:
            self._visibility_changed()

    def _blind(self, pod: _Pod, state: PodStatsState, error: str) -> None:
        was_blind = pod.state in BLIND
        pod.set_state(state, error)
        if not was_blind:
            self._visibility_changed()
        if not pod.warned:
            pod.warned = True
            log.warning(
                "gateway pod %s (%s): cannot read its stats (%s); held requests for targets it serves are "
                "released %.2fs after their endpoint is ready instead of when this pod has it",
                pod.pod.name,
                pod.endpoint.url,
                error,
                self.fallback_delay,
            )

    def _visibility_changed(self) -> None:
        if self.on_visibility_change is not None:
            try:
                self.on_visibility_change()
            except Exception:
                log.exception("gateway visibility listener failed")

    def recheck_blind(self, min_interval: float = 1.0) -> None:
        """Look again, now, at each blind pod not looked at for `min_interval` (someone needs to see them: the
        warm path opens no host while a pod is blind, and the slow re-check is for status only)."""
        now = asyncio.get_running_loop().time()
        for pod in self._pods.values():
            if pod.state in BLIND and now - pod.inclusion_checked >= min_interval:
                pod.inclusion_checked = now
                self._tasks.spawn(self._check_inclusion(pod, now), name=f"gateway stats recheck {pod.pod.name}")

    # --- counters (the warm path) -------------------------------------------------------------------

    async def read_counters(self, clusters: list[str]) -> GatewayReading:
        """Each Ready pod's request counters of `clusters` (`upstream_rq_total`, `upstream_rq_active`,
        `upstream_cx_none_healthy`), by pod name; a pod that cannot be read is an error. A cluster a pod
        does not show is absent for it."""
        pods = list(self._pods.values())
        answers = await asyncio.gather(
            *(self._client.fetch_text(pod.endpoint, cluster_filter(clusters, _COUNTER_FAMILIES)) for pod in pods),
            return_exceptions=True,
        )
        reading = GatewayReading()
        for pod, answer in zip(pods, answers, strict=True):
            self.fetches += 1
            if isinstance(answer, StatsError):
                self.fetch_errors += 1
                reading.errors[pod.pod.name] = str(answer)
                continue
            if isinstance(answer, BaseException):
                raise answer
            stats = parse_cluster_stats(answer, _COUNTER_FAMILIES)
            found: dict[str, ClusterCounters] = {}
            for cluster in clusters:
                total = stats.get((UPSTREAM_RQ_TOTAL, cluster))
                if total is not None:
                    active = stats.get((UPSTREAM_RQ_ACTIVE, cluster), 0.0)
                    none_healthy = stats.get((NONE_HEALTHY, cluster), 0.0)
                    found[cluster] = ClusterCounters(int(total), int(active), int(none_healthy))
            reading.counters[pod.pod.name] = found
        return reading

    # --- lifecycle and views ----------------------------------------------------------------------

    def status(self) -> GatewayStatsStatus:
        pods = tuple(PodStatsStatus(p.pod.name, p.pod.ip, p.state, p.error, p.since) for p in self._pods.values())
        return GatewayStatsStatus(self.port, pods, self.fetches, self.fetch_errors, tuple(self.confirmations.items()))

    async def close(self) -> None:
        await self._tasks.close()
        await self._client.close()
