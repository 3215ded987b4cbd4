"""A cold request's trace, for real: Envoy's OpenTelemetry tracer and zerohop both export OTLP/gRPC to a
receiver the test runs; the request's trace holds Envoy's spans and zerohop's `zerohop.hold` span as their
descendant, with the `zerohop.activate` span inside it."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from extproc.envoy.config import otel_tracing, otlp_cluster
from extproc.observability.telemetry import Telemetry
from tests.helpers import free_port, wait_for
from tests.integration.stack import Stack, app, httpso

pytestmark = pytest.mark.envoy


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver keeping every span it is sent, with its service name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "service": attributes.get("service.name", ""),
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "links": [link.span_id.hex() for link in span.links],
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, int]]:
    servicer = OtlpReceiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(0)


def traced_gateway(bootstrap: dict[str, Any], otlp_port: int) -> dict[str, Any]:
    """The test gateway plus Envoy's OpenTelemetry tracer, sampling everything and flushing at once."""
    bootstrap = copy.deepcopy(bootstrap)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["tracing"] = otel_tracing()  # what `zerohop envoy-bootstrap --otlp-endpoint` writes
    bootstrap["static_resources"]["clusters"].append(otlp_cluster("127.0.0.1", otlp_port))
    bootstrap["layered_runtime"] = {
        "layers": [
            {
                "name": "flush",
                "static_layer": {
                    "tracing.opentelemetry.flush_interval_ms": 100,
                    "tracing.opentelemetry.min_flush_spans": 1,
                },
            }
        ]
    }
    return bootstrap


async def test_a_cold_request_is_one_trace_from_envoy_into_zerohop(
    tmp_path: Path, receiver: tuple[OtlpReceiver, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    spans, otlp_port = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{otlp_port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "zerohop")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    telemetry = Telemetry.from_env()
    assert telemetry is not None
    config = httpso("cold", replicas="{min: 0, max: 1}") + app("cold", startup_delay=0.3)
    stack = Stack(tmp_path, config, telemetry=telemetry, gateway_transform=lambda b: traced_gateway(b, otlp_port))
    async with stack:
        reply = await stack.get("cold.test")
        assert reply.status == 200
        assert reply.headers.get("x-zerohop-cold-start") == "true"
        for _ in range(3):  # warm now: traced by Envoy, but zerohop adds no span
            warm = await stack.get("cold.test")
            assert warm.status == 200
            assert warm.headers.get("x-zerohop-cold-start") is None
        # Flushing blocks until the export is done: off the event loop, where the receiver runs.
        await asyncio.to_thread(telemetry.tracer_provider.force_flush)

        def hold_span() -> dict[str, Any] | None:
            return next((s for s in spans.spans if s["name"] == "zerohop.hold"), None)

        await wait_for(lambda: hold_span() is not None, 10, 0.05, what="zerohop's hold span")
        hold = hold_span()
        assert hold is not None
        trace = [s for s in spans.spans if s["trace_id"] == hold["trace_id"]]
        await wait_for(
            lambda: any(
                s["service"] == "gateway" and not s["parent_id"]
                for s in spans.spans
                if s["trace_id"] == hold["trace_id"]
            ),
            10,
            0.05,
            what="Envoy's root span in the same trace",
        )
        trace = [s for s in spans.spans if s["trace_id"] == hold["trace_id"]]
        by_id = {s["span_id"]: s for s in trace}
        chain = []
        parent = hold["parent_id"]
        while parent in by_id:
            chain.append(by_id[parent])
            parent = by_id[parent]["parent_id"]
        assert chain, f"zerohop.hold has no parent in the trace: {trace}"
        assert chain[-1]["service"] == "gateway"
        assert not chain[-1]["parent_id"], "the chain ends at Envoy's root span of the request"
        assert all(s["service"] == "gateway" for s in chain)
        assert hold["attributes"]["zerohop.target"] == "default/cold"
        assert hold["attributes"]["zerohop.outcome"] == "released"
        assert hold["attributes"]["zerohop.held_seconds"] >= 0.3
        [activate] = [s for s in trace if s["name"] == "zerohop.activate"]
        assert activate["parent_id"] == hold["span_id"]
        assert activate["attributes"]["zerohop.keda_streams"] == 1  # the built-in autoscaler's stream
        # The server side of Envoy's ext_proc client span, so service graphs draw gateway -> zerohop.
        assert hold["kind"] == trace_pb2.Span.SPAN_KIND_SERVER
        assert chain[0]["kind"] == trace_pb2.Span.SPAN_KIND_CLIENT
        assert hold["attributes"]["rpc.system"] == "grpc"
        assert hold["attributes"]["rpc.service"] == "envoy.service.ext_proc.v3.ExternalProcessor"
        assert hold["attributes"]["rpc.method"] == "Process"
        assert hold["links"] == [activate["span_id"]]
        # The warm requests were traced (Envoy exported their traces), and zerohop added no span to them.
        await wait_for(
            lambda: len({s["trace_id"] for s in spans.spans if s["service"] == "gateway"}) == 4,
            10,
            0.05,
            what="Envoy's traces of the cold and the 3 warm requests",
        )
        ours = sorted(s["name"] for s in spans.spans if s["service"] == "zerohop")
        assert ours == ["zerohop.activate", "zerohop.hold"]


async def test_a_collector_that_is_down_costs_no_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Envoy's tracer and zerohop both export to a port where nothing listens: requests are answered as
    # without tracing, the spans are dropped, and zerohop's shutdown waits at most the exporter's timeout.
    dead = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    telemetry = Telemetry.from_env()
    assert telemetry is not None
    config = httpso("cold", replicas="{min: 0, max: 1}") + app("cold", startup_delay=0.3)
    stack = Stack(tmp_path, config, telemetry=telemetry, gateway_transform=lambda b: traced_gateway(b, dead))
    loop = asyncio.get_running_loop()
    async with stack:
        reply = await stack.get("cold.test")
        assert reply.status == 200
        assert reply.headers.get("x-zerohop-cold-start") == "true"
        for _ in range(3):
            warm = await stack.get("cold.test")
            assert warm.status == 200
            assert warm.elapsed < 1.0
        stopping = loop.time()
    # zerohop's exporter was retrying the hold span when shutdown began: the stop waits for that, bounded by
    # OTEL_EXPORTER_OTLP_TIMEOUT (2 s here, 10 s by default), then drops it.
    assert loop.time() - stopping < 2 + 3
