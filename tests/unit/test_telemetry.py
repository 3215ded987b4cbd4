"""OpenTelemetry wiring: off unless configured, the packaging check, metrics through OTel's reader, and log
lines with trace ids in every format."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import TracerProvider

from extproc.core.coldstart import HoldOutcome
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey, parse
from extproc.core.traffic import HOLD_BUCKETS
from extproc.observability import logs, metrics, telemetry


def test_off_unless_configured() -> None:
    assert telemetry.Telemetry.from_env({}) is None
    assert telemetry.Telemetry.from_env({"OTEL_SERVICE_NAME": "x"}) is None
    assert (
        telemetry.Telemetry.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"})
        is None
    )
    assert telemetry._wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, "traces") == "otlp"
    assert telemetry._wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_METRICS_EXPORTER": "none"}, "metrics") is None
    assert telemetry._wanted({"OTEL_TRACES_EXPORTER": "console"}, "traces") == "console"
    assert telemetry._wanted({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "x"}, "metrics") == "otlp"


def test_protocol_selection() -> None:
    assert telemetry._protocol({}, "traces") == "grpc"
    assert telemetry._protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "traces") == "http/protobuf"
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"}
    assert telemetry._protocol(env, "metrics") == "grpc"
    assert telemetry._protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "traces") == "grpc"
    assert type(telemetry._span_exporter("otlp", "http/protobuf")).__module__.startswith(
        "opentelemetry.exporter.otlp.proto.http"
    )
    assert type(telemetry._span_exporter("otlp", "grpc")).__module__.startswith(
        "opentelemetry.exporter.otlp.proto.grpc"
    )


def test_the_otlp_exporter_and_envoy_protos_import_together() -> None:
    code = (
        "from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter\n"
        "from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter\n"
        "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http\n"
        "from envoy.service.ext_proc.v3 import external_processor_pb2, external_processor_pb2_grpc\n"
        "from envoy.config.trace.v3 import opentelemetry_pb2\n"
        "import extproc.observability.telemetry as t\n"
        "assert t.packaging_problem() is None, t.packaging_problem()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


def test_a_stale_opentelemetry_proto_is_named_with_its_repair() -> None:
    # What xds-protos's old copy of common_pb2 looks like to the exporter: no InstrumentationScope.
    code = (
        "import sys, types\n"
        "name = 'opentelemetry.proto.common.v1.common_pb2'\n"
        "sys.modules[name] = types.ModuleType(name)\n"
        "import extproc.observability.telemetry as t\n"
        "print(t.packaging_problem())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "overwritten by xds-protos" in result.stdout
    assert "pip install --force-reinstall --no-deps opentelemetry-proto" in result.stdout


def exported(collect_core: Core, record: float | None = None) -> dict[str, Any]:
    """zerohop's metrics as OpenTelemetry's SDK exports them: {name: Metric}, read by an InMemoryMetricReader."""
    reader = InMemoryMetricReader()
    otel = telemetry.Telemetry(None, MeterProvider(metric_readers=[reader]))
    otel.observe(lambda: metrics.collect(metrics.Sources(collect_core)))
    state = collect_core.registry.get(TargetKey("default", "app"))
    if record is not None and state is not None:
        otel.record_hold(state, HoldOutcome.RELEASED, record)
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name: metric
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


def one_target() -> Core:
    core = Core(hold_timeout=5, max_held_per_target=5, max_held_total=5)
    target = parse(
        {
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": "app"},
            "spec": {"hosts": ["a"], "scaleTargetRef": {"name": "a", "service": "a", "port": 80}},
        }
    )
    core.apply_targets([target], {})
    return core


def test_metrics_reach_opentelemetry_with_the_same_values() -> None:
    core = one_target()
    state = core.registry.get(TargetKey("default", "app"))
    assert state is not None
    state.traffic.requests = 7
    state.traffic.in_flight = 2
    exported_metrics = exported(core, record=0.4)
    requests = exported_metrics["zerohop.requests"]
    [point] = requests.data.data_points
    assert point.value == 7
    assert dict(point.attributes) == {"namespace": "default", "name": "app"}
    assert exported_metrics["zerohop.in_flight_requests"].data.data_points[0].value == 2
    [hold] = exported_metrics["zerohop.hold.duration"].data.data_points
    assert (hold.count, hold.sum) == (1, 0.4)
    assert type(dict(hold.attributes)["outcome"]) is str
    assert dict(hold.attributes)["outcome"] == "released"


def test_the_otlp_hold_histogram_has_the_prometheus_histograms_bounds() -> None:
    [hold] = exported(one_target(), record=0.07)["zerohop.hold.duration"].data.data_points
    assert tuple(hold.explicit_bounds) == HOLD_BUCKETS
    assert hold.bucket_counts[1] == 1  # 0.05 < 0.07 <= 0.1: not lumped with every hold under 5 s


def test_otlp_metrics_follow_the_opentelemetry_conventions() -> None:
    core = one_target()
    state = core.registry.get(TargetKey("default", "app"))
    assert state is not None
    state.traffic.requests = 3
    state.traffic.in_flight = 1
    by_name = exported(core, record=0.5)
    for name in by_name:
        assert name.startswith("zerohop.")
        assert "_total" not in name  # a counter's kind is metadata in OTLP, not a suffix
        assert not name.endswith(("_seconds", ".seconds")), f"{name}: the unit belongs in `unit`"
    assert by_name["zerohop.hold.duration"].unit == "s"

    requests = by_name["zerohop.requests"]
    assert requests.unit == "{request}"
    assert isinstance(requests.data, Sum)
    assert requests.data.is_monotonic
    assert isinstance(requests.data.data_points[0].value, int)  # an integer sum, not a double
    in_flight = by_name["zerohop.in_flight_requests"]
    assert isinstance(in_flight.data, Sum)  # additive over replicas: an UpDownCounter
    assert not in_flight.data.is_monotonic
    assert isinstance(in_flight.data.data_points[0].value, int)
    assert isinstance(by_name["zerohop.request_rate"].data, Gauge)


def test_prometheus_names_derive_from_the_opentelemetry_names() -> None:
    name = metrics.prometheus_name
    assert name("zerohop.requests", "{request}", "counter") == "zerohop_requests_total"
    assert name("zerohop.hold.duration", "s", "histogram") == "zerohop_hold_duration_seconds"
    assert name("zerohop.peer.last_answer_age", "s", "gauge") == "zerohop_peer_last_answer_age_seconds"
    assert name("zerohop.leader", "", "gauge") == "zerohop_leader"
    assert name("zerohop.thing_seconds", "s", "gauge") == "zerohop_thing_seconds"  # a suffix is never doubled
    with pytest.raises(ValueError, match="unit"):
        name("zerohop.size", "MiB", "gauge")
    families = metrics.collect(metrics.Sources(one_target()))
    for family in families:
        assert family.otel_name.startswith("zerohop."), family.otel_name
        assert family.name == name(family.otel_name, family.unit, family.kind)


def emit(formatter: str, *, in_span: bool) -> str:
    stream = io.StringIO()
    logs.configure("info", formatter)
    handler = logging.getLogger().handlers[0]
    handler.setStream(stream)  # type: ignore[attr-defined]
    logger = logging.getLogger("extproc.test")
    if in_span:
        tracer = TracerProvider().get_tracer("test")
        with tracer.start_as_current_span("hold") as span:
            logger.info("cold start of %s", "default/app")
            return stream.getvalue() + "|" + format(span.get_span_context().trace_id, "032x")
    logger.info("target %s is routable", "default/app")
    return stream.getvalue()


@pytest.fixture(autouse=True)
def restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_trace_id_inside_a_span() -> None:
    line, trace_id = emit("json", in_span=True).split("|")
    record = json.loads(line)
    assert record["message"] == "cold start of default/app"
    assert record["trace_id"] == trace_id
    assert "trace_id" not in json.loads(emit("json", in_span=False))


def test_logfmt_and_text_lines() -> None:
    line, trace_id = emit("logfmt", in_span=True).split("|")
    assert 'msg="cold start of default/app"' in line
    assert f"trace_id={trace_id}" in line
    assert "level=info logger=extproc.test" in line
    text, trace_id = emit("text", in_span=True).split("|")
    assert text.rstrip().endswith(f"trace_id={trace_id}")
    assert "trace_id" not in emit("text", in_span=False)


class StreamContext:
    """What HoldTracer reads of a gRPC servicer context: the stream's metadata (Envoy's traceparent)."""

    def __init__(self, traceparent: str) -> None:
        self.metadata = (("traceparent", traceparent),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


def headers_request(host: str) -> Any:
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2

    request = external_processor_pb2.ProcessingRequest()
    request.request_headers.headers.headers.append(base_pb2.HeaderValue(key=":authority", raw_value=host.encode()))
    return request


def test_hold_spans_follow_the_conventions_and_link_to_the_wake_they_waited_for() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    otel = telemetry.Telemetry(provider, None)
    state = one_target().registry.get(TargetKey("default", "app"))
    assert state is not None
    holds = otel.hold_observer(lambda _key: 0)
    activated = otel.activation_hook(lambda _key: {})
    # Two requests in two traces (as Envoy starts them): the first wakes the target, the second waits for
    # that same wake and times out.
    first = holds.hold_started(StreamContext(f"00-{'1' * 32}-{'a' * 16}-01"), headers_request("a"), state)
    activated(state.key)
    second = holds.hold_started(StreamContext(f"00-{'2' * 32}-{'b' * 16}-01"), headers_request("a"), state)
    holds.hold_ended(second, state, HoldOutcome.TIMEOUT, 5.0)
    holds.hold_ended(first, state, HoldOutcome.RELEASED, 0.5)
    by_name: dict[str, list[Any]] = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    [activate] = by_name["zerohop.activate"]
    released, timed_out = sorted(by_name["zerohop.hold"], key=lambda s: s.context.trace_id)
    assert activate.parent.span_id == released.context.span_id  # the wake sits in the request that caused it
    for hold in (released, timed_out):
        assert hold.kind is SpanKind.SERVER  # the server side of Envoy's ext_proc client span
        assert hold.attributes["rpc.system"] == "grpc"
        assert hold.attributes["rpc.service"] == "envoy.service.ext_proc.v3.ExternalProcessor"
        assert hold.attributes["rpc.method"] == "Process"
        assert [link.context.span_id for link in hold.links] == [activate.context.span_id]
    assert timed_out.context.trace_id != activate.context.trace_id  # the link crosses traces
    assert timed_out.attributes["error.type"] == "timeout"
    assert timed_out.status.status_code is StatusCode.ERROR
    assert "error.type" not in released.attributes
    assert released.status.status_code is StatusCode.UNSET
