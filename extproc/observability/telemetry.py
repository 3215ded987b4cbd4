"""OpenTelemetry: traces of held requests and activations, and zerohop's metrics over OTLP.

Off unless the standard variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces/metrics
specific endpoints), `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER` (`otlp`, `console`, `none`),
`OTEL_SDK_DISABLED`, `OTEL_EXPORTER_OTLP(_TRACES|_METRICS)_PROTOCOL` (`grpc`, the default, or
`http/protobuf`); the SDK itself reads `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_PROPAGATORS` and the exporters' own settings (endpoint, headers, ...).

Envoy starts each ext_proc stream as a child of the request's span and puts `traceparent` in the stream's
gRPC metadata; a held request's `zerohop.hold` span continues that trace (or the request's own
`traceparent` header when the metadata has none) as the SERVER side of that call, and the target's wake is
a `zerohop.activate` span inside it, linked from every hold that waited for it. Warm requests get no span
unless `--trace-warm-requests` asks for it. Needs the `otel` extra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from extproc.core.coldstart import HoldOutcome
from extproc.core.httpso import TargetKey

if TYPE_CHECKING:
    from extproc.core.registry import TargetState
    from extproc.observability.metrics import Family

log = logging.getLogger(__name__)

TRACER_NAME = "zerohop"
_REPAIR = (
    "the OTLP exporter cannot import opentelemetry.proto: its files were overwritten by xds-protos's older "
    "copy (both ship opentelemetry/proto/...). Repair with: "
    "pip install --force-reinstall --no-deps opentelemetry-proto"
)
# The ext_proc call a hold or warm span serves, as OpenTelemetry's RPC conventions name it: with the SERVER
# kind, service graphs draw the gateway's ext_proc client span -> zerohop.
RPC_ATTRIBUTES = {
    "rpc.system": "grpc",
    "rpc.service": "envoy.service.ext_proc.v3.ExternalProcessor",
    "rpc.method": "Process",
}
HOLD_DURATION = "zerohop.hold.duration"  # the histogram recorded as holds end (defined in metrics.collect)
_ERROR_OUTCOMES = {
    HoldOutcome.TIMEOUT: "held past its budget",
    HoldOutcome.OVER_CAPACITY: "too many held",
    HoldOutcome.SHUTDOWN: "zerohop stopping",
}


def _protocol(env: Mapping[str, str], signal: str) -> str:
    """`grpc` or `http/protobuf`, from OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL."""
    value = env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    value = value.strip().lower()
    if value not in ("grpc", "http/protobuf"):
        log.error("OTLP protocol %r is not supported (grpc or http/protobuf); using grpc", value)
        return "grpc"
    return value


def _wanted(env: Mapping[str, str], signal: str) -> str | None:
    """The exporter wanted for `signal` (traces, metrics): otlp, console or None for off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporter = env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    if exporter in ("otlp", "console"):
        return exporter
    if exporter == "none":
        return None
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        return "otlp"
    return None


def packaging_problem() -> str | None:
    """None when the OTLP exporter and Envoy's protos import together, else what is wrong and how to fix it."""
    try:
        from envoy.service.ext_proc.v3 import external_processor_pb2  # noqa: F401
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: F401
    except ImportError as exc:
        if (exc.name or "").startswith("opentelemetry.proto") or "opentelemetry.proto" in str(exc):
            return f"{_REPAIR} ({exc})"
        if (exc.name or "").startswith("opentelemetry"):
            return "OpenTelemetry is not installed: pip install 'zerohop[otel]' (after zerohop itself)"
        raise
    return None


class Telemetry:
    """The configured tracer and meter provider; `None` from `from_env` when nothing is configured."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = tracer_provider.get_tracer(TRACER_NAME) if tracer_provider is not None else None
        self._hold_histogram: Any = None
        # Per target, the span context of its latest `zerohop.activate`: the wake a held request waited for.
        self.activations: dict[TargetKey, Any] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Telemetry | None:
        env = os.environ if env is None else env
        traces, metrics = _wanted(env, "traces"), _wanted(env, "metrics")
        if traces is None and metrics is None:
            return None
        problem = packaging_problem() if "otlp" in (traces, metrics) else None
        if problem is not None:
            log.error("OpenTelemetry export is off: %s", problem)
            return None
        os.environ.setdefault("OTEL_SERVICE_NAME", "zerohop")
        from opentelemetry.sdk.resources import Resource

        resource = Resource.create()
        tracer_provider = _tracer_provider(traces, _protocol(env, "traces"), resource) if traces else None
        meter_provider = _meter_provider(metrics, _protocol(env, "metrics"), resource) if metrics else None
        log.info("OpenTelemetry on: traces %s, metrics %s", traces or "off", metrics or "off")
        return cls(tracer_provider, meter_provider)

    # --- traces -----------------------------------------------------------------------------------

    def hold_observer(self, replicas: Callable[[TargetKey], int | None]) -> HoldTracer:
        return HoldTracer(self.tracer, replicas, self)

    def warm_observer(self) -> WarmTracer | None:
        return WarmTracer(self.tracer) if self.tracer is not None else None

    def record_hold(self, state: TargetState, outcome: HoldOutcome, seconds: float) -> None:
        if self._hold_histogram is not None:
            attributes = {"namespace": state.key.namespace, "name": state.key.name, "outcome": outcome.value}
            self._hold_histogram.record(seconds, attributes)

    def activation_hook(self, details: Callable[[TargetKey], dict[str, Any]]) -> Callable[[TargetKey], None]:
        """A wake hook recording a `zerohop.activate` span (inside the hold span that caused the wake)."""
        tracer = self.tracer
        activations = self.activations

        def activated(key: TargetKey) -> None:
            if tracer is None:
                return
            attributes = {"zerohop.target": str(key), **details(key)}
            span = tracer.start_span("zerohop.activate", attributes=attributes)
            span.end()
            activations[key] = span.get_span_context()

        return activated

    # --- metrics ----------------------------------------------------------------------------------

    def observe(self, collect: Callable[[], list[Family]]) -> None:
        """Export the families `collect` returns as OpenTelemetry instruments under their OpenTelemetry names
        and units: counters as observable counters (integer monotonic sums), additive gauges as observable
        up-down counters (integer sums), other gauges as observable gauges, each read at export; the
        histogram (OpenTelemetry has no observable one) is recorded as holds end, with the family's bounds."""
        if self.meter_provider is None:
            return
        from opentelemetry.metrics import CallbackOptions, Observation

        meter = self.meter_provider.get_meter(TRACER_NAME)
        cache: dict[str, Family] = {}

        def reading(name: str, integer: bool) -> Callable[[CallbackOptions], Iterable[Observation]]:
            def callback(_options: CallbackOptions) -> Iterable[Observation]:
                # Every instrument's callback runs in one collection: collect once, on the first of them.
                if name not in cache:
                    cache.clear()
                    cache.update({family.otel_name: family for family in collect()})
                family = cache.pop(name, None)
                if family is None:
                    return []
                return [Observation(int(v) if integer else v, dict(labels)) for labels, v in family.samples]

            return callback

        for family in collect():
            name, unit, description = family.otel_name, family.unit, family.help
            if family.kind == "histogram":
                if name == HOLD_DURATION:
                    self._hold_histogram = meter.create_histogram(
                        name, unit=unit, description=description, explicit_bucket_boundaries_advisory=family.bounds
                    )
            elif family.kind == "counter":
                callbacks = [reading(name, integer=True)]
                meter.create_observable_counter(name, callbacks, unit=unit, description=description)
            elif family.additive:
                callbacks = [reading(name, integer=True)]
                meter.create_observable_up_down_counter(name, callbacks, unit=unit, description=description)
            else:
                meter.create_observable_gauge(name, [reading(name, False)], unit=unit, description=description)

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider):
            if provider is not None:
                try:
                    provider.shutdown()
                except Exception:
                    log.exception("OpenTelemetry shutdown failed")


def _span_exporter(exporter: str, protocol: str) -> Any:
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

        return HttpSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _metric_exporter(exporter: str, protocol: str) -> Any:
    if exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

        return HttpMetricExporter()
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter()


def _tracer_provider(exporter: str, protocol: str, resource: Any) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_span_exporter(exporter, protocol)))
    return provider


def _meter_provider(exporter: str, protocol: str, resource: Any) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(_metric_exporter(exporter, protocol))
    return MeterProvider(resource=resource, metric_readers=[reader])


def _header(request: Any, name: str) -> str | None:
    for header in request.request_headers.headers.headers:
        if header.key == name:
            raw: bytes = header.raw_value or header.value.encode()
            return raw.decode("latin-1")
    return None


def _parent(context: Any, request: Any) -> Any:
    """The trace context Envoy sent: the ext_proc stream's gRPC metadata, else the request's headers."""
    from opentelemetry import propagate

    carrier = {key.lower(): value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)}
    if "traceparent" not in carrier:
        for name in ("traceparent", "tracestate"):
            value = _header(request, name)
            if value is not None:
                carrier[name] = value
    return propagate.extract(carrier)


class WarmTracer:
    """With --trace-warm-requests: a `zerohop.continue` span for each warm request Envoy traces."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    def warm(self, context: Any, request: Any, state: TargetState) -> None:
        from opentelemetry.trace import SpanKind

        attributes = {**RPC_ATTRIBUTES, "zerohop.target": str(state.key)}
        parent = _parent(context, request)
        self._tracer.start_span("zerohop.continue", context=parent, kind=SpanKind.SERVER, attributes=attributes).end()


class HoldTracer:
    """The processor's HoldObserver: a `zerohop.hold` span per held request (when tracing), and the hold
    duration histogram (when exporting metrics). The span is the SERVER side of Envoy's ext_proc call
    (`rpc.*` attributes), has `error.type` when the hold ends in an error, and links to the
    `zerohop.activate` span of the target's latest wake: the one the request waited for, which may be in
    another request's trace."""

    def __init__(self, tracer: Any, replicas: Callable[[TargetKey], int | None], telemetry: Telemetry) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        self._server = trace.SpanKind.SERVER
        self._tracer = tracer
        self._replicas = replicas
        self._telemetry = telemetry
        self._context = otel_context
        self._trace = trace

    def hold_started(self, context: Any, request: Any, state: TargetState) -> Any:
        if self._tracer is None:
            return None
        parent = _parent(context, request)
        attributes: dict[str, Any] = {**RPC_ATTRIBUTES, "zerohop.target": str(state.key)}
        host = _header(request, ":authority")
        if host:
            attributes["server.address"] = host
        ready = self._replicas(state.key)
        if ready is not None:
            attributes["zerohop.replicas_at_start"] = ready
        span = self._tracer.start_span("zerohop.hold", context=parent, kind=self._server, attributes=attributes)
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        return span, token

    def hold_ended(self, handle: Any, state: TargetState, outcome: HoldOutcome, seconds: float) -> None:
        self._telemetry.record_hold(state, outcome, seconds)
        if handle is None:
            return
        span, token = handle
        span.set_attribute("zerohop.outcome", outcome.value)
        span.set_attribute("zerohop.held_seconds", round(seconds, 6))
        activation = self._telemetry.activations.get(state.key)
        if activation is not None:
            span.add_link(activation, {"zerohop.link": "activation"})
        if outcome in _ERROR_OUTCOMES:
            from opentelemetry.trace import Status, StatusCode

            span.set_attribute("error.type", outcome.value)
            span.set_status(Status(StatusCode.ERROR, _ERROR_OUTCOMES[outcome]))
        span.end()
        self._context.detach(token)


class TraceIds(logging.Filter):
    """Adds `trace_id` and `span_id` to log records emitted inside a sampled span."""

    def __init__(self) -> None:
        super().__init__()
        try:
            from opentelemetry import trace
        except ImportError:
            self._trace: Any = None
        else:
            self._trace = trace

    def filter(self, record: logging.LogRecord) -> bool:
        if self._trace is not None:
            context = self._trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
                record.span_id = format(context.span_id, "016x")
        return True
