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
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from extproc.core.coldstart import HoldOutcome
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey, parse
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


def test_metrics_reach_opentelemetry_with_the_same_values() -> None:
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
    state = core.registry.get(TargetKey("default", "app"))
    assert state is not None
    state.traffic.requests = 7
    state.traffic.in_flight = 2
    reader = InMemoryMetricReader()
    otel = telemetry.Telemetry(None, MeterProvider(metric_readers=[reader]))
    otel.observe(lambda: metrics.collect(metrics.Sources(core)))
    otel.record_hold(state, HoldOutcome.RELEASED, 0.4)
    data = reader.get_metrics_data()
    points: dict[str, Any] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    [requests] = points["zerohop_requests"]
    assert requests.value == 7
    assert dict(requests.attributes) == {"namespace": "default", "name": "app"}
    assert points["zerohop_in_flight_requests"][0].value == 2
    [hold] = points["zerohop.hold.duration"]
    assert (hold.count, hold.sum) == (1, 0.4)
    assert type(dict(hold.attributes)["outcome"]) is str
    assert dict(hold.attributes)["outcome"] == "released"


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
