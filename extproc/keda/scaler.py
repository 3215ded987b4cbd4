"""The KEDA-facing servicer (`externalscaler.ExternalScaler`), answering as the KEDA HTTP add-on's scaler does.

- metric name `http-<ns>/<name>` (escaped), target = the scaling metric's targetValue;
- GetMetrics = request rate or in-flight (held included), summed over every zerohop replica the
  `CountSource` knows, in both the int (ceil) and float fields;
- IsActive = the metric is above zero or requests are held;
- StreamIsActive pushes `true` the moment a cold request wakes the target (event-driven, no ticker).
An unknown ScaledObjectRef is a NOT_FOUND that names what was asked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Protocol

import grpc

from extproc._proto import externalscaler_pb2 as pb
from extproc._proto import externalscaler_pb2_grpc as pb_grpc
from extproc.core.activation import ActivationBus
from extproc.core.httpso import TargetKey
from extproc.core.registry import TargetState
from extproc.core.routing import Router
from extproc.core.traffic import TrafficSnapshot

log = logging.getLogger(__name__)

HTTPSO_METADATA_KEY = "httpScaledObject"


class CountSource(Protocol):
    """Where the scaler reads a target's counts: this process alone, or summed over peer replicas."""

    async def totals(self, state: TargetState) -> TrafficSnapshot: ...


class LocalCounts:
    """Counts of this process only (a single replica)."""

    async def totals(self, state: TargetState) -> TrafficSnapshot:
        return state.snapshot()


def target_key(ref: pb.ScaledObjectRef) -> TargetKey:
    """The HTTPScaledObject a ScaledObjectRef means: `scalerMetadata.httpScaledObject`, else its own name."""
    name = ref.scalerMetadata.get(HTTPSO_METADATA_KEY) or ref.name
    return TargetKey(ref.namespace or "default", name)


class ScalerServicer(pb_grpc.ExternalScalerServicer):
    def __init__(self, router: Router, bus: ActivationBus, counts: CountSource) -> None:
        self._router = router
        self._bus = bus
        self._counts = counts
        self.calls: dict[str, int] = {"IsActive": 0, "StreamIsActive": 0, "GetMetricSpec": 0, "GetMetrics": 0}

    async def _target(self, ref: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[object, object]) -> TargetState:
        key = target_key(ref)
        state = self._router.table.states.get(key)
        if state is None:
            asked = f"ScaledObject {ref.namespace}/{ref.name}"
            if ref.scalerMetadata.get(HTTPSO_METADATA_KEY):
                asked += f" with httpScaledObject={ref.scalerMetadata[HTTPSO_METADATA_KEY]}"
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"zerohop serves no HTTPScaledObject {key} (asked for {asked}); "
                "check that it exists and is valid (its status conditions say why not)",
            )
        return state  # abort() above raises, so state is not None here

    async def _is_active(self, state: TargetState) -> bool:
        totals = await self._counts.totals(state)
        return totals.held > 0 or state.metric_value(totals) > 0

    async def IsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.IsActiveResponse:
        self.calls["IsActive"] += 1
        state = await self._target(request, context)
        return pb.IsActiveResponse(result=await self._is_active(state))

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.IsActiveResponse]:
        self.calls["StreamIsActive"] += 1
        state = await self._target(request, context)
        subscription = self._bus.subscribe(state.key)
        log.debug("KEDA opened StreamIsActive for %s", state.key)
        try:
            if await self._is_active(state):
                yield pb.IsActiveResponse(result=True)
            while True:
                await subscription.next()
                yield pb.IsActiveResponse(result=True)
        finally:
            subscription.close()
            log.debug("StreamIsActive for %s closed", state.key)

    async def GetMetricSpec(
        self, request: pb.ScaledObjectRef, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetMetricSpecResponse:
        self.calls["GetMetricSpec"] += 1
        state = await self._target(request, context)
        target = state.spec.metric.target_value
        spec = pb.MetricSpec(metricName=state.spec.metric_name, targetSize=math.ceil(target), targetSizeFloat=target)
        return pb.GetMetricSpecResponse(metricSpecs=[spec])

    async def GetMetrics(
        self, request: pb.GetMetricsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetMetricsResponse:
        self.calls["GetMetrics"] += 1
        state = await self._target(request.scaledObjectRef, context)
        value = state.metric_value(await self._counts.totals(state))
        name = request.metricName or state.spec.metric_name
        if name != state.spec.metric_name:
            log.debug("GetMetrics for %s asked for metric %r; answering it", state.key, name)
        metric = pb.MetricValue(metricName=name, metricValue=math.ceil(value), metricValueFloat=value)
        return pb.GetMetricsResponse(metricValues=[metric])
