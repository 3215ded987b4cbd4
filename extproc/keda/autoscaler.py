"""The built-in autoscaler: KEDA's (and the HPA's) part for the local provider, played through the scaler API.

It talks to zerohop only the way KEDA does: `GetMetricSpec`, then every polling interval `GetMetrics` and
`IsActive`, and it keeps a `StreamIsActive` stream open (`external-push`) so a cold request activates the
target at once. Its decisions:
- inactive -> active: scale 0 -> max(1, replicas.min), immediately on a pushed `true`;
- active: `ceil(metric / targetValue)` clamped to [max(1, min), max]; up at once, down only when every
  recommendation of the last `scaledownPeriod` seconds agrees (the HPA's stabilization window);
- not active for `scaledownPeriod` seconds (and past `initialCooldownPeriod`): scale to replicas.min;
- never below replicas.min.

A target edited in place (same namespace/name, another `targetValue`, `replicas`, `scaledownPeriod`...) keeps
its loop: the loop is retargeted, so its activity, recommendations and the replicas it set carry over, as
KEDA's would when a ScaledObject is updated. Only a target that disappears stops its loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import grpc

from extproc._proto import externalscaler_pb2 as pb
from extproc._proto import externalscaler_pb2_grpc as pb_grpc
from extproc.core import iroute
from extproc.core.background import BackgroundTasks
from extproc.core.httpso import ScaledTarget, TargetKey
from extproc.core.provider import ReplicaCounts

log = logging.getLogger(__name__)

_STREAM_BACKOFF_MIN = 2.0
_STREAM_BACKOFF_MAX = 60.0


class Scalable(Protocol):
    """What the autoscaler drives: the targets, and setting a target's replica count."""

    @property
    def targets(self) -> dict[TargetKey, ScaledTarget]: ...

    def scale(self, key: TargetKey, replicas: int) -> None: ...

    def replicas(self, key: TargetKey) -> ReplicaCounts | None: ...


class ScaleEvent(Protocol):
    def __call__(self, key: TargetKey, before: int, after: int, reason: str) -> None: ...


class _TargetLoop:
    """The control loop of one target."""

    def __init__(
        self,
        target: ScaledTarget,
        stub: pb_grpc.ExternalScalerAsyncStub,
        address: str,
        set_replicas: Callable[[int, str], None],
        current: Callable[[], int],
        polling_interval: float,
    ) -> None:
        self.target = target
        self._stub = stub
        self._set = set_replicas
        self._current = current
        self._interval = polling_interval
        # As the trigger of the ScaledObject the add-on's operator creates, or of the user's own for a route.
        names = iroute.TRIGGER_KEY if target.kind == iroute.KIND else "httpScaledObject"
        self._ref = pb.ScaledObjectRef(
            name=target.key.name,
            namespace=target.key.namespace,
            scalerMetadata={"scalerAddress": address, names: target.key.name},
        )
        self._started = time.monotonic()
        self._last_active = -math.inf
        self._recommendations: deque[tuple[float, int]] = deque()
        self._tasks = BackgroundTasks()
        self._spec_stale = False

    def retarget(self, target: ScaledTarget) -> None:
        """Follow an edited target: same identity, new spec; activity and recommendations are kept."""
        assert target.key == self.target.key
        self.target = target
        self._spec_stale = True

    def start(self) -> None:
        name = str(self.target.key)
        self._tasks.spawn(self._listen(), name=f"autoscaler stream {name}")
        self._tasks.spawn(self._poll(), name=f"autoscaler poll {name}")

    async def stop(self) -> None:
        await self._tasks.close()

    def _activate(self, reason: str) -> None:
        self._last_active = time.monotonic()
        if self._current() == 0:
            self._set(self.target.activation_replicas, reason)

    async def _listen(self) -> None:
        backoff = _STREAM_BACKOFF_MIN
        while True:
            try:
                async for response in self._stub.StreamIsActive(self._ref):
                    backoff = _STREAM_BACKOFF_MIN
                    if response.result:
                        self._activate("StreamIsActive pushed true")
            except grpc.aio.AioRpcError as exc:
                log.debug("StreamIsActive for %s ended: %s", self.target.key, exc.code())
            await asyncio.sleep(backoff)
            backoff = min(_STREAM_BACKOFF_MAX, backoff * 2)

    async def _poll(self) -> None:
        metrics: list[tuple[str, float]] = []
        while True:
            try:
                if not metrics or self._spec_stale:
                    self._spec_stale = False
                    spec = await self._stub.GetMetricSpec(self._ref, timeout=5)
                    metrics = [(m.metricName, m.targetSizeFloat or float(m.targetSize)) for m in spec.metricSpecs]
                await self._tick(metrics)
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "autoscaler: scaler API call for %s failed: %s %s",
                    self.target.key,
                    exc.code(),
                    exc.details(),
                )
            await asyncio.sleep(self._interval)

    async def _tick(self, metrics: list[tuple[str, float]]) -> None:
        # One GetMetrics per metric, as KEDA asks; with two (a route scaling on both) the HPA follows the one
        # that wants more replicas, so the decision gets that one, in units of the target's own metric.
        values: list[tuple[float, float]] = []
        for name, target_size in metrics:
            request = pb.GetMetricsRequest(scaledObjectRef=self._ref, metricName=name)
            value = (await self._stub.GetMetrics(request, timeout=5)).metricValues[0]
            values.append(
                (value.metricValueFloat if value.metricValueFloat > 0 else float(value.metricValue), target_size)
            )
        active = (await self._stub.IsActive(self._ref, timeout=5)).result
        if len(values) == 1:
            metric = values[0][0]
        else:
            metric = max(v / t for v, t in values if t > 0) * self.target.metric.target_value
        self.decide(metric, active, time.monotonic())

    def decide(self, metric: float, active: bool, now: float) -> None:
        """One polling decision (separate from I/O so it can be tested directly)."""
        target = self.target
        current = self._current()
        if current < target.min_replicas:
            self._set(target.min_replicas, "below replicas.min")
            return
        if active:
            self._last_active = now
            if current == 0:
                self._set(target.activation_replicas, "IsActive")
                return
            floor = max(1, target.min_replicas)
            wanted = min(target.max_replicas, max(floor, math.ceil(metric / target.metric.target_value)))
            self._recommendations.append((now, wanted))
            window = target.scaledown_period
            while self._recommendations and self._recommendations[0][0] < now - window:
                self._recommendations.popleft()
            stabilized = max(r for _, r in self._recommendations)
            if wanted > current:
                self._set(wanted, f"metric {metric:g} / target {target.metric.target_value:g}")
            elif stabilized < current:
                self._set(stabilized, f"metric {metric:g} below target for {window}s")
            return
        self._recommendations.clear()
        cooled = now - self._last_active >= target.scaledown_period
        past_initial = now - self._started >= target.initial_cooldown_period
        if current > target.min_replicas and cooled and past_initial:
            self._set(target.min_replicas, f"inactive for {target.scaledown_period}s")


class LocalAutoscaler:
    """Runs one control loop per target of a local provider, against zerohop's scaler gRPC address."""

    def __init__(
        self,
        scaler_address: str,
        provider: Scalable,
        polling_interval: float,
        on_scale: ScaleEvent | None = None,
    ) -> None:
        self._address = scaler_address
        self._provider = provider
        self._interval = polling_interval
        self._on_scale = on_scale
        self._channel: grpc.aio.Channel | None = None
        self._loops: dict[TargetKey, _TargetLoop] = {}
        self._tasks = BackgroundTasks()

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self._address)
        self._sync()
        self._tasks.spawn(self._resync(), name="autoscaler sync")

    def _replicas(self, key: TargetKey) -> int:
        counts = self._provider.replicas(key)
        return 0 if counts is None else counts.desired

    def _setter(self, key: TargetKey) -> Callable[[int, str], None]:
        def set_replicas(replicas: int, reason: str) -> None:
            before = self._replicas(key)
            if replicas == before:
                return
            log.info("autoscaler: %s %d -> %d (%s)", key, before, replicas, reason)
            self._provider.scale(key, replicas)
            if self._on_scale is not None:
                self._on_scale(key, before, replicas, reason)

        return set_replicas

    def _sync(self) -> None:
        assert self._channel is not None
        targets = self._provider.targets
        for key in [k for k in self._loops if k not in targets]:
            self._tasks.spawn(self._loops.pop(key).stop(), name=f"autoscaler stop {key}", cancel_on_close=False)
        stub = pb_grpc.ExternalScalerStub(self._channel)
        for key, target in targets.items():
            existing = self._loops.get(key)
            if existing is not None:
                if existing.target != target:
                    existing.retarget(target)
            else:
                loop = _TargetLoop(target, stub, self._address, self._setter(key), self._counter(key), self._interval)
                self._loops[key] = loop
                loop.start()

    def _counter(self, key: TargetKey) -> Callable[[], int]:
        return lambda: self._replicas(key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._sync()

    async def stop(self) -> None:
        await self._tasks.close()
        await asyncio.gather(*(loop.stop() for loop in self._loops.values()))
        self._loops.clear()
        if self._channel is not None:
            await self._channel.close()
