"""Live state of every scale target (spec, counters, gate), kept across route-table rebuilds.

Route tables are immutable snapshots that point at these states, so a rebuild never resets a count or
drops a held request: a target that survives an update keeps its `TargetState` object.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace

from extproc.core.coldstart import ColdGate, TargetGate
from extproc.core.httpso import MetricKind, ScaledTarget, ScalingMetric, TargetKey
from extproc.core.traffic import TargetTraffic, TrafficSnapshot

log = logging.getLogger(__name__)


class InFlightMode(enum.Enum):
    """Which warm requests zerohop follows to their end (costs one more message per request)."""

    CONCURRENCY = "concurrency"  # only targets scaled on concurrency
    ALL = "all"


class TargetState:
    """One target as the hot path sees it: spec, counters, gate and the derived per-request choices."""

    __slots__ = ("follow_base", "follow_end", "forced_active", "gate", "hold_budget", "key", "spec", "traffic")

    def __init__(self, spec: ScaledTarget, gate: TargetGate, hold_budget: float, follow_end: bool) -> None:
        self.key = spec.key
        self.spec = spec
        self.gate = gate
        self.traffic = TargetTraffic(spec.metric.window, spec.metric.granularity)
        self.hold_budget = hold_budget
        self.follow_base = follow_end
        # What the hot path reads: follow_base, or every request while a release is being watched.
        self.follow_end = follow_end or gate.watching
        # The warm path is (or may be) open: requests can bypass zerohop, so IsActive stays true until the
        # gate is confirmed back in place (core/warmpath.py).
        self.forced_active = False

    def set_follow(self, base: bool | None = None) -> None:
        """Recompute `follow_end` after the base choice or the gate's watch window changed."""
        if base is not None:
            self.follow_base = base
        self.follow_end = self.follow_base or self.gate.watching

    def snapshot(self, now: float | None = None) -> TrafficSnapshot:
        snapshot = self.traffic.snapshot(time.monotonic() if now is None else now, self.gate.held)
        return replace(snapshot, forced_active=True) if self.forced_active else snapshot

    def metric_value(self, snapshot: TrafficSnapshot, metric: ScalingMetric | None = None) -> float:
        """The value KEDA scales on: request rate or in-flight (held included), per the spec's `metric` (or
        the one given: an InterceptorRoute reports both)."""
        if (metric or self.spec.metric).kind is MetricKind.REQUEST_RATE:
            return snapshot.rate
        return float(snapshot.in_flight)

    def active(self, snapshot: TrafficSnapshot) -> bool:
        """Any reported metric above zero, or requests held: what IsActive says (the warm path aside)."""
        return snapshot.held > 0 or any(self.metric_value(snapshot, m) > 0 for m in self.spec.scaling_metrics)


class TargetRegistry:
    """Creates, updates and forgets TargetStates as the set of valid HTTPScaledObjects changes."""

    def __init__(self, gate: ColdGate, *, hold_timeout: float, in_flight: InFlightMode) -> None:
        self._cold_gate = gate
        self._hold_timeout = hold_timeout
        self._in_flight = in_flight
        self._states: dict[TargetKey, TargetState] = {}

    def sync(self, specs: Iterable[ScaledTarget]) -> dict[TargetKey, TargetState]:
        """Make the registry hold exactly `specs`; returns the live states by key."""
        wanted = {spec.key: spec for spec in specs}
        for key in [key for key in self._states if key not in wanted]:
            self.remove(key)
        for spec in wanted.values():
            self.upsert(spec)
        return dict(self._states)

    def upsert(self, spec: ScaledTarget) -> TargetState:
        """Add the target, or update it in place (its counters, gate and held requests survive)."""
        key = spec.key
        state = self._states.get(key)
        budget = self._budget(spec)
        follow = self._in_flight is InFlightMode.ALL or any(
            metric.kind is MetricKind.CONCURRENCY for metric in spec.scaling_metrics
        )
        if state is None:
            state = self._states[key] = TargetState(spec, self._cold_gate.for_target(key), budget, follow)
            log.info("target %s added", key)
            return state
        if state.spec.metric != spec.metric:
            state.traffic.rate = TargetTraffic(spec.metric.window, spec.metric.granularity).rate
        state.spec = spec
        state.hold_budget = budget
        state.set_follow(follow)
        return state

    def remove(self, key: TargetKey) -> bool:
        """Forget the target (and its gate); False when there was none."""
        if self._states.pop(key, None) is None:
            return False
        self._cold_gate.forget(key)
        log.info("target %s removed", key)
        return True

    def _budget(self, spec: ScaledTarget) -> float:
        wanted = spec.hold_wait
        if wanted is None:
            return self._hold_timeout
        if wanted > self._hold_timeout:
            log.warning(
                "target %s: %s %.1fs exceeds --hold-timeout %.1fs; using %.1fs",
                spec.key,
                "the failover timeout" if spec.failover else "timeouts.conditionWait",
                wanted,
                self._hold_timeout,
                self._hold_timeout,
            )
            return self._hold_timeout
        return wanted

    def get(self, key: TargetKey) -> TargetState | None:
        return self._states.get(key)

    def __iter__(self) -> Iterator[TargetState]:
        return iter(list(self._states.values()))

    def __len__(self) -> int:
        return len(self._states)
