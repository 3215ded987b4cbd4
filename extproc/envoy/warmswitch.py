"""The warm-path loop both providers run: decide which virtual hosts skip ext_proc, have the gateways switch
them (and wait until every gateway runs the new config), and count what went past zerohop from the
gateways' own counters into the same traffic counters the scaler reads.

The decisions are `core.warmpath.WarmPath`'s; where a switch is written and how it is confirmed is the
provider's (`SwitchedGateways`): the local provider rewrites its route file and reads the version each
gateway loaded, the Kubernetes provider rewrites the scoped EnvoyFilter and probes every gateway pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.core.registry import TargetState
from extproc.core.warmpath import GatewayCounters, PathState, WarmPath
from extproc.envoy.adminapi import ClusterCounters, GatewayReading
from extproc.envoy.config import target_cluster_name

log = logging.getLogger(__name__)

# A request ext_proc counts while the gateway's counters are being read may reach the gateway after the read:
# counted by both when it went past ext_proc afterwards. Read again (at most this often) until none was.
_CONSISTENT_TRIES = 4
# A counter's baseline is read once zerohop has counted no request of the target for `_QUIET` (so none is
# still inside the gateway between zerohop's answer and the upstream), waiting at most `_QUIET_WAIT` for that.
_QUIET = 0.01
_QUIET_POLL = 0.002
_QUIET_WAIT = 3.0


class SwitchedGateways(Protocol):
    """What a provider gives the warm-path loop."""

    async def switch(self, open_hosts: frozenset[str], opened: frozenset[str], closed: frozenset[str]) -> None:
        """Write a gateway config with exactly `open_hosts` open (`opened` and `closed` changed since the
        last call); return once every gateway runs it. May take long; never gives up on its own."""
        ...

    async def read(self, clusters: list[str]) -> GatewayReading:
        """The counters of `clusters` on every gateway now."""
        ...

    def countable(self) -> str | None:
        """Why the gateways' counters cannot be trusted now (None: they can). A host is opened only while
        they can: an open host whose requests nobody counts would read as idle to KEDA."""
        ...

    def confirmable(self, host: str) -> bool:
        """Whether a switch of `host` is known to be confirmable on every gateway now (a host whose switch
        could never be confirmed must not open: its switch back would never end)."""
        ...

    async def check_confirmable(self, hosts: Iterable[str]) -> None:
        """Find out for `hosts` (gated now), so that `confirmable` can answer."""
        ...


@dataclass(slots=True)
class ScrapeHealth:
    """How reading the gateways' stats goes: failures are counted and the last one kept for /status."""

    scrapes: int = 0
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None  # wall clock
    failing: bool = False


class WarmSwitch:
    """Runs the warm path: `run()` until cancelled; `tick()` is one round."""

    def __init__(
        self,
        core: Core,
        warm: WarmPath,
        gateways: SwitchedGateways,
        stats_interval: float,
        refresh: Callable[[], None] | None = None,
        cluster_of: Callable[[TargetState], str] | None = None,
    ) -> None:
        """`refresh` (optional) is called at the start of each round, e.g. to hand `warm` the current
        targets and hosts. `cluster_of` names the gateway cluster whose counters are a target's requests
        (default: its Service's; a provider that knows subset clusters says which)."""
        self._core = core
        self._cluster_of = cluster_of or _service_cluster
        self._refresh = refresh
        self.warm = warm
        self._gateways = gateways
        self._interval = stats_interval
        self.written: frozenset[str] = frozenset()
        self.health = ScrapeHealth()
        self.gateway_503: dict[TargetKey, int] = {}
        self.blind: str | None = None  # why no host may be opened now (the gateways cannot be counted)
        self.quiet_baselines = 0  # counters started at a moment nothing was between zerohop and the upstream
        self.busy_baselines = 0  # ... or at a moment something may have been (see `_baseline`)
        self._none_healthy: dict[TargetKey, GatewayCounters] = {}
        self._kick = asyncio.Event()
        self._switching: asyncio.Future[None] | None = None
        self._retry = False  # the last switch failed: write it again
        self._unconfirmed: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        core.add_routable_hook(self._routable)

    def assume_written(self, open_hosts: Iterable[str]) -> None:
        """The gateways may already run these hosts open (a config left by an earlier process)."""
        hosts = frozenset(open_hosts)
        self.warm.assume_open(hosts)
        self.written = hosts

    def _routable(self, key: TargetKey, routable: bool) -> None:
        if routable:
            self.warm.routable_changed(key, True)
        elif self.warm.routable_lost(key):
            log.warning("target %s lost its endpoints while its warm path was open: gating it again now", key)
            self._kick.set()

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self._interval)
                self._kick.clear()
                try:
                    await self.tick()
                except Exception:  # one bad round must not end the loop: open hosts would stay open
                    log.exception("warm path: a round failed; trying again")
        finally:
            if self._switching is not None:
                self._switching.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._switching

    async def settle(self) -> None:
        """Wait for the switch under way, if any, to be confirmed (tests, shutdown)."""
        if self._switching is not None:
            await asyncio.shield(self._switching)

    async def tick(self) -> None:
        """One round: decide, switch (and wait for the gateways to confirm), then count from the stats."""
        if self._refresh is not None:
            self._refresh()
        blind = self._gateways.countable()
        if blind != self.blind:
            if blind is not None:
                log.warning("warm path: no host is opened while %s", blind)
            self.blind = blind
        want = self.warm.update(
            time.monotonic(), may_open=blind is None and not self.health.failing, confirmable=self._gateways.confirmable
        )
        if self.warm.unconfirmable:
            await self._gateways.check_confirmable(self.warm.unconfirmable)
        # One switch at a time, confirmed in the background: a gateway slow to load it (or unreachable) must
        # not stop the counting. The next switch starts once it is confirmed.
        if (want != self.written or self._retry) and (self._switching is None or self._switching.done()):
            # A target about to bypass zerohop gets its counters' baseline before the switch is written, so
            # the requests that go past between the write and the next read are counted.
            new = [s for s in self._bypassing() if not self.warm.has_counter(s.key)]
            if all(await asyncio.gather(*(self._baseline(state) for state in new))):
                self._retry = False
                self._switching = asyncio.ensure_future(self._switch(want))
                self._switching.add_done_callback(self._switched)
        await self._scrape(self._bypassing() + self.warm.settling())

    async def _baseline(self, state: TargetState) -> bool:
        """Start counting `state` from the gateways (it is still gated: every request asks zerohop).

        A request zerohop let go just before the read that reaches the gateway's upstream just after it would
        be counted twice (by zerohop, then as a gateway increase). So the read is taken at a quiet moment:
        zerohop has counted no request of the target for `_QUIET` and counts none during two reads of the
        gateways, which agree (no request still on its way from zerohop's answer to the upstream). A steady
        rate above roughly 1 / `_QUIET` may leave no such moment within `_QUIET_WAIT`: the baseline is then
        read anyway (`busy_baselines`; see the limits in docs/how-it-works.md).
        """
        cluster = self._cluster_of(state)
        traffic = state.traffic
        traffic.mesh_apart = True  # before the first read of gateway_requests: east-west calls are in none
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _QUIET_WAIT
        quiet = False
        while True:
            seen, since = traffic.gateway_requests, loop.time()
            while loop.time() - since < _QUIET and loop.time() < deadline:
                await asyncio.sleep(_QUIET_POLL)
                if traffic.gateway_requests != seen:
                    seen, since = traffic.gateway_requests, loop.time()
            # Two reads: a gateway counter still moving means a request is still on its way to the upstream.
            first = await self._gateways.read([cluster])
            own = traffic.gateway_requests  # the baseline's own count if no quiet moment comes: the nearest to the read
            reading = await self._gateways.read([cluster])
            errors = first.errors | reading.errors
            if errors:
                self._failed("; ".join(f"{gateway}: {error}" for gateway, error in sorted(errors.items())))
                return False
            totals = _totals(reading, cluster)
            quiet = traffic.gateway_requests == seen == own and totals == _totals(first, cluster)
            if quiet or loop.time() >= deadline:
                break
        if quiet:
            self.quiet_baselines += 1
        else:
            self.busy_baselines += 1
        self.warm.counter(state.key).add(totals, own)
        return True

    def _switched(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("warm path: a switch failed; retrying", exc_info=error)
            self._retry = True
        self._kick.set()

    def _bypassing(self) -> list[TargetState]:
        return self.warm.bypassing()

    async def _switch(self, want: frozenset[str]) -> None:
        # A failed switch's hosts are confirmed with this one (those still going the same way).
        failed_opened, failed_closed = self._unconfirmed
        opened = (want - self.written) | (failed_opened & want)
        closed = (self.written - want) | (failed_closed - want)
        self._unconfirmed = (opened, closed)
        self.written = want
        await self._gateways.switch(want, opened, closed)
        self._unconfirmed = (frozenset(), frozenset())
        self.warm.confirmed(self.written)
        log.info("warm path: every gateway runs the switch (opened %s, gated %s)", sorted(opened), sorted(closed))

    async def _scrape(self, states: list[TargetState]) -> bool:
        """Read the gateways' counters of `states` and count what went past ext_proc; False when unreadable."""
        if not states:
            return True
        clusters = {self._cluster_of(s): s for s in states}
        for state in states:
            state.traffic.mesh_apart = True  # a counter started without `_baseline` (a new leader's open hosts)
        for _ in range(_CONSISTENT_TRIES):
            own = [s.traffic.gateway_requests for s in states]
            reading = await self._gateways.read(list(clusters))
            # ext_proc counted nothing while the gateways were read: the two counts belong to one moment.
            if own == [s.traffic.gateway_requests for s in states]:
                break
        if reading.errors:
            self._failed("; ".join(f"{gateway}: {error}" for gateway, error in sorted(reading.errors.items())))
        if not reading.counters:
            return False
        self.health.scrapes += 1
        if not reading.errors:
            self.health.failing = False
        now = time.monotonic()
        for cluster, state in clusters.items():
            found = {gateway: c[cluster] for gateway, c in reading.counters.items() if cluster in c}
            if found:
                self._count(state, found, now)
        return True

    def _count(self, state: TargetState, found: Mapping[str, ClusterCounters], now: float) -> None:
        traffic = state.traffic
        counter = self.warm.counter(state.key)
        # ext_proc's own count of the gateways' requests: east-west calls (mesh_requests) never pass a gateway.
        bypassed = counter.add({gateway: c.requests for gateway, c in found.items()}, traffic.gateway_requests)
        if bypassed:
            traffic.requests += bypassed
            traffic.rate.record(now, bypassed)
            counter.own_counted(bypassed)
        none_healthy = self._none_healthy.setdefault(state.key, GatewayCounters())
        answered = none_healthy.increase({gateway: c.none_healthy for gateway, c in found.items()})
        if answered:
            self.gateway_503[state.key] = self.gateway_503.get(state.key, 0) + answered
        if self.warm.target_state(state.key) is PathState.GATED:
            # The gate is confirmed and this read took the last requests that went past it.
            traffic.gateway_in_flight = 0
            self.warm.settled(state.key)
            self._none_healthy.pop(state.key, None)
        else:
            traffic.gateway_in_flight = sum(c.active for c in found.values())

    def _failed(self, error: str) -> None:
        health = self.health
        health.failures += 1
        health.last_error = error
        health.last_error_at = time.time()
        if not health.failing:
            log.warning("warm path: cannot read the gateways' stats (counts catch up when they answer): %s", error)
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
            "mayOpen": self.blind is None and not health.failing,
            "quietBaselines": self.quiet_baselines,
            "busyBaselines": self.busy_baselines,
            "blind": self.blind,
            "targets": {
                str(state.key): {
                    "state": self.warm.target_state(state.key).value,
                    "gateway503": self.gateway_503.get(state.key, 0),
                }
                for state in self._core.registry
            },
        }


def _service_cluster(state: TargetState) -> str:
    return target_cluster_name(state.spec)


def _totals(reading: GatewayReading, cluster: str) -> dict[str, int]:
    """`upstream_rq_total` of `cluster` by gateway, in one reading."""
    return {
        gateway: counters[cluster].requests for gateway, counters in reading.counters.items() if cluster in counters
    }
