"""The KEDA-facing servicer (`externalscaler.ExternalScaler`), answering as the KEDA HTTP add-on's scaler does.

- which target: trigger metadata `interceptorRoute` (the user's own ScaledObject for an InterceptorRoute), else
  `httpScaledObject`, else the ScaledObject's own name; always in the ScaledObject's namespace;
- metric name `http-<ns>/<name>` (escaped), target = the scaling metric's targetValue; asked through
  `interceptorRoute`, one metric per scaling metric the route sets: `http_<route>_concurrency`,
  `http_<route>_rate` (both when both are set);
- GetMetrics = request rate or in-flight (held included), summed over every zerohop replica the
  `CountSource` knows, in both the int (ceil) and float fields; for a route with both metrics, the one
  asked for by name (KEDA asks per metric), or both when the name is none of them;
- IsActive = a metric is above zero or requests are held, or the warm path is not confirmed gated
  (`TargetState.forced_active`: requests may bypass zerohop, so only a confirmed gate lets it say false);
- StreamIsActive pushes `true` the moment a cold request wakes the target (event-driven, no ticker).
An unknown ScaledObjectRef is a NOT_FOUND that names what was asked (names clipped: the answer's size is
bounded whatever the client sends). A request that is no valid message, or a ScaledObjectRef naming nothing,
is an INVALID_ARGUMENT and at most one rate-limited log line, never a traceback per call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from extproc._proto import externalscaler_pb2 as pb
from extproc._proto import externalscaler_pb2_grpc as pb_grpc
from extproc.core.activation import ActivationBus
from extproc.core.httpso import ScalingMetric, TargetKey, route_metric_name
from extproc.core.iroute import TRIGGER_KEY as ROUTE_METADATA_KEY
from extproc.core.loglimit import LogLimiter, clip
from extproc.core.registry import TargetState
from extproc.core.routing import Router
from extproc.core.traffic import TrafficSnapshot

log = logging.getLogger(__name__)

HTTPSO_METADATA_KEY = "httpScaledObject"
SERVICE_NAME = "externalscaler.ExternalScaler"
# Kubernetes object names are at most 253 characters.
_NAME_LIMIT = 253

M = TypeVar("M", bound=Message)


class CountSource(Protocol):
    """Where the scaler reads a target's counts: this process alone, or summed over peer replicas."""

    async def totals(self, state: TargetState) -> TrafficSnapshot: ...


class LocalCounts:
    """Counts of this process only (a single replica)."""

    async def totals(self, state: TargetState) -> TrafficSnapshot:
        return state.snapshot()


def target_key(ref: pb.ScaledObjectRef) -> TargetKey:
    """The target a ScaledObjectRef means: `scalerMetadata.interceptorRoute`, else `httpScaledObject`, else
    the ScaledObject's own name."""
    name = ref.scalerMetadata.get(ROUTE_METADATA_KEY) or ref.scalerMetadata.get(HTTPSO_METADATA_KEY) or ref.name
    return TargetKey(ref.namespace or "default", name)


def _metrics(state: TargetState, ref: pb.ScaledObjectRef) -> list[tuple[str, ScalingMetric]]:
    """The metrics KEDA is told about, by name: the add-on's names for what the trigger named."""
    route = ref.scalerMetadata.get(ROUTE_METADATA_KEY)
    if route:
        return [(route_metric_name(route, metric.kind), metric) for metric in state.spec.scaling_metrics]
    return [(state.spec.metric_name, state.spec.metric)]


def _lenient(message: type[M]) -> Callable[[bytes], M | None]:
    """A request deserializer that gives None for bytes that are no `message`, so the servicer can answer
    INVALID_ARGUMENT (gRPC would answer UNKNOWN and log a traceback)."""

    def parse(data: bytes) -> M | None:
        try:
            return message.FromString(data)
        except DecodeError:
            return None

    return parse


class ScalerServicer(pb_grpc.ExternalScalerServicer):
    def __init__(self, router: Router, bus: ActivationBus, counts: CountSource) -> None:
        self._router = router
        self._bus = bus
        self._counts = counts
        self.calls: dict[str, int] = {"IsActive": 0, "StreamIsActive": 0, "GetMetricSpec": 0, "GetMetrics": 0}
        self._invalid_log = LogLimiter(log)

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The handler to add to a grpc.aio server (instead of the generated `add_..._to_server`)."""
        ref, request = _lenient(pb.ScaledObjectRef), _lenient(pb.GetMetricsRequest)
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "IsActive": grpc.unary_unary_rpc_method_handler(self.IsActive, ref, pb.IsActiveResponse.SerializeToString),
            "StreamIsActive": grpc.unary_stream_rpc_method_handler(
                self.StreamIsActive, ref, pb.IsActiveResponse.SerializeToString
            ),
            "GetMetricSpec": grpc.unary_unary_rpc_method_handler(
                self.GetMetricSpec, ref, pb.GetMetricSpecResponse.SerializeToString
            ),
            "GetMetrics": grpc.unary_unary_rpc_method_handler(
                self.GetMetrics, request, pb.GetMetricsResponse.SerializeToString
            ),
        }
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    async def _invalid(self, context: grpc.aio.ServicerContext[object, object], problem: str) -> None:
        self._invalid_log.log(logging.WARNING, "invalid scaler request from %s: %s", clip(context.peer()), problem)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    async def _target(
        self, ref: pb.ScaledObjectRef | None, context: grpc.aio.ServicerContext[object, object]
    ) -> TargetState:
        if ref is None:
            await self._invalid(context, "the request is not a valid externalscaler message")
        assert ref is not None  # abort() above raises
        named = ref.scalerMetadata.get(ROUTE_METADATA_KEY) or ref.scalerMetadata.get(HTTPSO_METADATA_KEY)
        if not (ref.name or named):
            await self._invalid(context, "the ScaledObjectRef names no ScaledObject (name and metadata are empty)")
        key = target_key(ref)
        state = self._router.table.states.get(key)
        if state is None:
            asked = f"ScaledObject {clip(ref.namespace, _NAME_LIMIT)}/{clip(ref.name, _NAME_LIMIT)}"
            what = "HTTPScaledObject"
            for metadata_key in (ROUTE_METADATA_KEY, HTTPSO_METADATA_KEY):
                if ref.scalerMetadata.get(metadata_key):
                    asked += f" with {metadata_key}={clip(ref.scalerMetadata[metadata_key], _NAME_LIMIT)}"
                    what = "InterceptorRoute" if metadata_key == ROUTE_METADATA_KEY else what
                    break
            asked_key = f"{clip(key.namespace, _NAME_LIMIT)}/{clip(key.name, _NAME_LIMIT)}"
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"zerohop serves no {what} {asked_key} (asked for {asked}); "
                "check that it exists and is valid (its status conditions say why not)",
            )
        return state  # abort() above raises, so state is not None here

    async def _is_active(self, state: TargetState) -> bool:
        totals = await self._counts.totals(state)
        return state.forced_active or totals.forced_active or state.active(totals)

    async def IsActive(
        self, request: pb.ScaledObjectRef | None, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.IsActiveResponse:
        self.calls["IsActive"] += 1
        state = await self._target(request, context)
        return pb.IsActiveResponse(result=await self._is_active(state))

    async def StreamIsActive(
        self, request: pb.ScaledObjectRef | None, context: grpc.aio.ServicerContext[object, object]
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
        self, request: pb.ScaledObjectRef | None, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetMetricSpecResponse:
        self.calls["GetMetricSpec"] += 1
        state = await self._target(request, context)
        assert request is not None
        specs = [
            pb.MetricSpec(
                metricName=name, targetSize=math.ceil(metric.target_value), targetSizeFloat=metric.target_value
            )
            for name, metric in _metrics(state, request)
        ]
        return pb.GetMetricSpecResponse(metricSpecs=specs)

    async def GetMetrics(
        self, request: pb.GetMetricsRequest | None, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetMetricsResponse:
        self.calls["GetMetrics"] += 1
        state = await self._target(None if request is None else request.scaledObjectRef, context)
        assert request is not None
        totals = await self._counts.totals(state)
        metrics = _metrics(state, request.scaledObjectRef)
        if len(metrics) > 1:
            # KEDA asks once per metric and hands every value it gets to the HPA under the name it asked for:
            # answering both would add concurrency and rate together.
            asked = [(name, metric) for name, metric in metrics if name == request.metricName]
            metrics = asked or metrics
        elif request.metricName and request.metricName != metrics[0][0]:
            log.debug("GetMetrics for %s asked for metric %r; answering it", state.key, request.metricName)
            metrics = [(request.metricName, metrics[0][1])]
        values = []
        for name, metric in metrics:
            value = state.metric_value(totals, metric)
            values.append(pb.MetricValue(metricName=name, metricValue=math.ceil(value), metricValueFloat=value))
        return pb.GetMetricsResponse(metricValues=values)
