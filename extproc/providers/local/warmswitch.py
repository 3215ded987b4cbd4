"""The local provider's warm-path switch: writes which virtual hosts skip ext_proc into the gateway's route
file, confirms each switch from the gateway's loaded route version, and counts open targets from the
gateway's stats into the same traffic counters the scaler reads.

The decisions are `core.warmpath.WarmPath`'s; this is the loop and the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.core.registry import TargetState
from extproc.core.warmpath import PathState, WarmPath, counter_increase
from extproc.envoy.adminapi import EnvoyAdminError
from extproc.envoy.config import ROUTE_CONFIG_NAME, target_cluster_name
from extproc.envoy.gatewayview import GatewayView

log = logging.getLogger(__name__)

# A request ext_proc counts while the gateway's counters are being read may reach the gateway after the read:
# counted by both when it went past ext_proc afterwards. Read again (at most this often) until none was.
_CONSISTENT_TRIES = 4


@dataclass(slots=True)
class ScrapeHealth:
    """How reading the gateways' stats goes: failures are counted and the last one kept for /status."""

    scrapes: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock
    failing: bool = False


class WarmSwitch:
    """Runs the warm path for the local provider. `write_routes(open_hosts)` rewrites the route file with
    those hosts open; `routes_version()` is the version of the last route file written."""

    def __init__(
        self,
        core: Core,
        warm: WarmPath,
        gateway: GatewayView,
        write_routes: Callable[[frozenset[str]], None],
        routes_version: Callable[[], str],
        stats_interval: float,
    ) -> None:
        self._core = core
        self.warm = warm
        self._gateway = gateway
        self._write_routes = write_routes
        self._routes_version = routes_version
        self._interval = stats_interval
        self.written: frozenset[str] = frozenset()
        self.health = ScrapeHealth()
        self.gateway_503: dict[TargetKey, int] = {}
        self._none_healthy: dict[TargetKey, int | None] = {}
        self._kick = asyncio.Event()
        core.add_routable_hook(self._routable)

    def _routable(self, key: TargetKey, routable: bool) -> None:
        if not routable and self.warm.routable_lost(key):
            log.warning("target %s lost its endpoints while its warm path was open: gating it again now", key)
            self._kick.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._interval)
            self._kick.clear()
            try:
                await self.tick()
            except Exception:  # one bad round must not end the loop: open hosts would stay open
                log.exception("warm path: a round failed; trying again")

    async def tick(self) -> None:
        """One round: decide, switch (and wait for the gateway to confirm), then count from the stats."""
        want = self.warm.update(time.monotonic())
        if want != self.written:
            # A target about to bypass zerohop gets its counters' baseline before the switch is written, so
            # the requests that go past between the write and the next read are counted.
            new = [s for s in self._bypassing() if not self.warm.has_counter(s.key)]
            if not new or await self._scrape(new):
                await self._switch(want)
        await self._scrape(self._bypassing() + [s for s in self._core.registry if self._settling(s)])

    def _bypassing(self) -> list[TargetState]:
        return [s for s in self._core.registry if self.warm.target_state(s.key) is not PathState.GATED]

    def _settling(self, state: TargetState) -> bool:
        return self.warm.target_state(state.key) is PathState.GATED and self.warm.has_counter(state.key)

    async def _switch(self, want: frozenset[str]) -> None:
        opened, closed = sorted(want - self.written), sorted(self.written - want)
        self.written = want
        self._write_routes(want)
        version = await self._gateway.wait_route_version(ROUTE_CONFIG_NAME, self._routes_version)
        self.warm.confirmed(self.written)
        log.info("warm path: gateway loaded routes version %s (opened %s, gated %s)", version, opened, closed)

    async def _scrape(self, states: list[TargetState]) -> bool:
        """Read the gateways' counters of `states` and count what went past ext_proc; False when unreadable."""
        if not states:
            return True
        clusters = {target_cluster_name(s.spec): s for s in states}
        for _ in range(_CONSISTENT_TRIES):
            own = [s.traffic.requests for s in states]
            try:
                counters = await self._gateway.counters(list(clusters))
            except EnvoyAdminError as exc:
                self._failed(str(exc))
                return False
            # ext_proc counted nothing while the gateway was read: the two counts belong to one moment.
            if own == [s.traffic.requests for s in states]:
                break
        self.health.scrapes += 1
        self.health.failing = False
        now = time.monotonic()
        for cluster, state in clusters.items():
            found = counters.get(cluster)
            if found is None:
                continue
            self._count(state, found.requests, found.active, found.none_healthy, now)
        return True

    def _count(self, state: TargetState, total: int, active: int, none_healthy: int, now: float) -> None:
        traffic = state.traffic
        counter = self.warm.counter(state.key)
        bypassed = counter.add(total, traffic.requests)
        if bypassed:
            traffic.requests += bypassed
            traffic.rate.record(now, bypassed)
            counter.own_counted(bypassed)
        answered = counter_increase(self._none_healthy.get(state.key), none_healthy)
        self._none_healthy[state.key] = none_healthy
        if answered:
            self.gateway_503[state.key] = self.gateway_503.get(state.key, 0) + answered
        if self.warm.target_state(state.key) is PathState.GATED:
            # The gate is confirmed and this read took the last requests that went past it.
            traffic.gateway_in_flight = 0
            self.warm.settled(state.key)
            self._none_healthy.pop(state.key, None)
        else:
            traffic.gateway_in_flight = active

    def _failed(self, error: str) -> None:
        health = self.health
        health.failures += 1
        health.last_error = error
        health.last_error_at = time.time()
        if not health.failing:
            log.warning("warm path: cannot read the gateway's stats (counts catch up when it answers): %s", error)
        health.failing = True

    # What /metrics reads (`observability.metrics.WarmPathSource`).

    def target_state(self, key: TargetKey) -> PathState:
        return self.warm.target_state(key)

    def gateway_503s(self, key: TargetKey) -> int:
        return self.gateway_503.get(key, 0)

    @property
    def gated_unexpectedly(self) -> int:
        return self.warm.gated_unexpectedly

    def status(self) -> dict[str, Any]:
        health = self.health
        return {
            "openHosts": sorted(self.written),
            "statsScrapes": health.scrapes,
            "statsFailures": health.failures,
            "statsFailing": health.failing,
            "lastStatsError": health.last_error,
            "lastStatsErrorAt": health.last_error_at,
            "gatedUnexpectedly": self.warm.gated_unexpectedly,
            "targets": {
                str(state.key): {
                    "state": self.warm.target_state(state.key).value,
                    "gateway503": self.gateway_503.get(state.key, 0),
                }
                for state in self._core.registry
            },
        }
