"""The built-in autoscaler's decisions (KEDA activation + HPA math + cooldown) and how it follows edits."""

from __future__ import annotations

import time
from typing import Any

import pytest

from extproc.core.httpso import ScaledTarget, TargetKey, parse
from extproc.core.provider import ReplicaCounts
from extproc.keda.autoscaler import LocalAutoscaler, _TargetLoop


def target(**spec: Any) -> ScaledTarget:
    body: dict[str, Any] = {
        "hosts": ["a"],
        "scaleTargetRef": {"name": "a", "service": "a", "port": 80},
        "replicas": {"min": 0, "max": 5},
        "scalingMetric": {"requestRate": {"targetValue": 10}},
        "scaledownPeriod": 30,
    }
    body.update(spec)
    return parse(
        {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject", "metadata": {"name": "a"}, "spec": body}
    )


class Replicas:
    def __init__(self, current: int = 0) -> None:
        self.current = current
        self.changes: list[tuple[int, str]] = []

    def set(self, replicas: int, reason: str) -> None:
        self.changes.append((replicas, reason))
        self.current = replicas


def loop(spec: ScaledTarget, replicas: Replicas) -> _TargetLoop:
    return _TargetLoop(spec, None, "unused:0", replicas.set, lambda: replicas.current, 1.0)  # type: ignore[arg-type]


def test_activation_from_zero_goes_to_max_one_min() -> None:
    replicas = Replicas(0)
    loop(target(), replicas).decide(metric=0.3, active=True, now=100)
    assert replicas.current == 1
    replicas = Replicas(0)
    loop(target(replicas={"min": 2, "max": 5}), replicas).decide(metric=0.0, active=True, now=100)
    assert replicas.current == 2


def test_pushed_true_activates_only_from_zero() -> None:
    replicas = Replicas(0)
    control = loop(target(), replicas)
    control._activate("push")
    assert replicas.current == 1
    replicas.current = 3
    control._activate("push")
    assert replicas.current == 3


@pytest.mark.parametrize(("metric", "expected"), [(5, 1), (10, 1), (10.5, 2), (31, 4), (500, 5)])
def test_scale_up_is_ceil_of_metric_over_target_clamped(metric: float, expected: int) -> None:
    replicas = Replicas(1)
    loop(target(), replicas).decide(metric=metric, active=True, now=100)
    assert replicas.current == expected


def test_scale_down_waits_for_the_stabilization_window() -> None:
    replicas = Replicas(1)
    control = loop(target(scaledownPeriod=30), replicas)
    control.decide(metric=40, active=True, now=100)
    assert replicas.current == 4
    control.decide(metric=10, active=True, now=110)
    assert replicas.current == 4  # a higher recommendation is still inside the window
    control.decide(metric=10, active=True, now=131)
    assert replicas.current == 1


def test_inactive_goes_to_zero_only_after_the_cooldown() -> None:
    replicas = Replicas(1)
    control = loop(target(scaledownPeriod=30), replicas)
    t0 = control._started
    control.decide(metric=1, active=True, now=t0 + 100)
    control.decide(metric=0, active=False, now=t0 + 120)
    assert replicas.current == 1
    control.decide(metric=0, active=False, now=t0 + 130.5)
    assert replicas.current == 0


def test_min_replicas_are_kept_and_restored() -> None:
    replicas = Replicas(0)
    control = loop(target(replicas={"min": 1, "max": 3}, scaledownPeriod=0), replicas)
    t0 = control._started
    control.decide(metric=0, active=False, now=t0 + 100)
    assert replicas.current == 1
    control.decide(metric=0, active=False, now=t0 + 200)
    assert replicas.current == 1


def test_initial_cooldown_delays_the_first_scale_to_zero() -> None:
    replicas = Replicas(1)
    control = loop(target(scaledownPeriod=0, initialCooldownPeriod=60), replicas)
    started = control._started
    control.decide(metric=0, active=False, now=started + 10)
    assert replicas.current == 1
    control.decide(metric=0, active=False, now=started + 61)
    assert replicas.current == 0


class Provider:
    """What LocalAutoscaler drives: targets to follow and a replica count per target."""

    def __init__(self, spec: ScaledTarget, current: int = 0) -> None:
        self.specs = {spec.key: spec}
        self.current = current

    @property
    def targets(self) -> dict[TargetKey, ScaledTarget]:
        return dict(self.specs)

    def scale(self, key: TargetKey, replicas: int) -> None:
        self.current = replicas

    def replicas(self, key: TargetKey) -> ReplicaCounts | None:
        return ReplicaCounts(self.current, self.current)


async def test_an_edited_target_keeps_its_activity_and_replicas() -> None:
    # Nothing listens on the address: the loops' own scaler calls fail, decide() is driven by hand.
    first = target(scaledownPeriod=60)
    provider = Provider(first)
    autoscaler = LocalAutoscaler("127.0.0.1:1", provider, polling_interval=3600)
    await autoscaler.start()
    try:
        t0 = time.monotonic()
        autoscaler._loops[first.key].decide(metric=5, active=True, now=t0)
        assert provider.current == 1
        provider.specs = {first.key: target(scaledownPeriod=60, scalingMetric={"requestRate": {"targetValue": 20}})}
        autoscaler._sync()
        control = autoscaler._loops[first.key]
        assert control.target.metric.target_value == 20
        control.decide(metric=0, active=False, now=t0 + 20)
        assert provider.current == 1  # 20 s after the last request, inside scaledownPeriod 60
        control.decide(metric=0, active=False, now=t0 + 61)
        assert provider.current == 0
    finally:
        await autoscaler.stop()


async def test_a_removed_target_stops_its_loop() -> None:
    provider = Provider(target())
    autoscaler = LocalAutoscaler("127.0.0.1:1", provider, polling_interval=3600)
    await autoscaler.start()
    try:
        provider.specs = {}
        autoscaler._sync()
        assert autoscaler._loops == {}
    finally:
        await autoscaler.stop()
