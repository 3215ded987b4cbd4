"""zerohop's own work on a warm request, in-process: what its handler does beyond the tuned floor's (E).

The wire-level setups cannot separate a few microseconds from the run-to-run noise of a shared 2-CPU box,
so this measures the two handlers themselves, with one harness: the real `ExtProcServicer` (a real route
table holding setup B's target, routable) and setup E's `tuned_process`, each fed the same serialised
request-headers message, shaped as the gateway sends it (headers in `raw_value`, the `xds.cluster_name`
attribute), through a context whose `read()` parses it (as grpc's request deserializer would) and whose
`write()` takes the answer. A handler that would wait on anything fails the measurement instead of being
timed. The difference is zerohop's routing and counting; gRPC's own cost, the bulk of the total, is the
same for both and is not in either number.

zerohop is timed three ways: telemetry off; tracing on as `OTEL_*` would set it up (an SDK tracer provider
with a batch span processor, spans dropped by the exporter), where a warm request must cost what it costs
with tracing off, since it gets no span; and with `--trace-warm-requests`, a `zerohop.continue` span per
request, which shows what that setting costs. The context carries the `traceparent` Envoy's tracer puts in
the stream's metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2

from bench.bare_extproc import tuned_process
from bench.setups import WARM_TARGET
from extproc.core.engine import Core
from extproc.core.httpso import parse as parse_httpso
from extproc.envoy import answers
from extproc.envoy.config import ATTRIBUTES_KEY, CLUSTER_ATTRIBUTE, target_cluster_name
from extproc.envoy.processor import ExtProcServicer
from extproc.observability.telemetry import Telemetry

Handler = Callable[[object, Any], Coroutine[Any, Any, None]]
REPEATS = 7
CALLS = 20_000


def warm_request(host: str, cluster: str) -> bytes:
    """A request-headers message as the bench gateway sends it for a wrk request."""
    request = ep.ProcessingRequest()
    headers = request.request_headers.headers.headers
    for key, value in (
        (":authority", host),
        (":path", "/"),
        (":method", "GET"),
        (":scheme", "http"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0d9c6f1e-5b7a-4c1e-9a7d-3f2b8c4e6a10"),
        ("x-envoy-expected-rq-timeout-ms", "15000"),
    ):
        headers.add(key=key, raw_value=value.encode())
    request.request_headers.end_of_stream = True
    attributes = struct_pb2.Struct()
    attributes.fields[CLUSTER_ATTRIBUTE].string_value = cluster
    request.attributes[ATTRIBUTES_KEY].CopyFrom(attributes)
    return bytes(request.SerializeToString())


TRACEPARENT = (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)


class _Context:
    """The part of grpc.aio's ServicerContext the handlers use, answering at once."""

    __slots__ = ("data", "written")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.written: list[bytes] = []

    async def read(self) -> Any:
        return ep.ProcessingRequest.FromString(self.data)

    async def write(self, message: bytes) -> None:
        self.written.append(message)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return TRACEPARENT


def _run_once(handler: Handler, context: _Context) -> None:
    coroutine = handler(None, context)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("the handler waited on something; a warm request must not")


def _per_call_us(handler: Handler, data: bytes) -> float:
    """One timed run of CALLS calls, in microseconds per call; checks that every call answered CONTINUE."""
    context = _Context(data)
    started = time.perf_counter()
    for _ in range(CALLS):
        _run_once(handler, context)
    elapsed = time.perf_counter() - started
    if context.written != [answers.CONTINUE] * CALLS:
        raise RuntimeError("the handler did not answer every request with CONTINUE")
    return elapsed / CALLS * 1e6


class _DropSpans:
    """A span exporter that takes every batch and keeps nothing (the cost of export is not the point)."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _count_spans() -> Any:
    """A span processor that counts ended spans (the batch processor may drop some when its queue is full)."""
    from opentelemetry.sdk.trace import SpanProcessor

    class CountSpans(SpanProcessor):  # type: ignore[misc]
        ended = 0

        def on_end(self, span: Any) -> None:
            self.ended += 1

    return CountSpans()


def _tracing() -> tuple[Telemetry, Any]:
    """Tracing as `Telemetry.from_env` sets it up for an OTLP endpoint, with the spans dropped."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    counter = _count_spans()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_DropSpans()))
    provider.add_span_processor(counter)
    return Telemetry(provider, None), counter


def zerohop_servicer(telemetry: Telemetry | None = None, *, trace_warm: bool = False) -> tuple[ExtProcServicer, Core]:
    """The servicer as `zerohop serve` wires it, with setup B's target warm."""
    target = parse_httpso(WARM_TARGET.documents(8080)[0])
    core = Core(hold_timeout=60.0, max_held_per_target=1000, max_held_total=10_000)
    core.apply_targets([target], {target_cluster_name(target): target.key})
    core.set_routable(target.key, True)
    observer = warm = None
    if telemetry is not None:
        observer = telemetry.hold_observer(lambda _key: 1)
        warm = telemetry.warm_observer() if trace_warm else None
    servicer = ExtProcServicer(core.router, core.cold_gate, retry_after=5, observer=observer, warm_observer=warm)
    return servicer, core


def measure() -> dict[str, Any]:
    """Microseconds per call of each handler (best of REPEATS runs, the handlers taking turns in a rotating
    order after one untimed warm-up run each), and the differences."""
    target = parse_httpso(WARM_TARGET.documents(8080)[0])
    data = warm_request(target.hosts[0], target_cluster_name(target))
    telemetry, spans = _tracing()
    plain, plain_core = zerohop_servicer()
    traced, traced_core = zerohop_servicer(telemetry)
    spanned, spanned_core = zerohop_servicer(telemetry, trace_warm=True)
    handlers: dict[str, Handler] = {
        "floor": tuned_process,
        "zerohop": plain.process,
        "tracing_on": traced.process,
        "warm_spans": spanned.process,
    }
    best = dict.fromkeys(handlers, float("inf"))
    order = list(handlers)
    try:
        for name in order:
            _per_call_us(handlers[name], data)
        for round_ in range(REPEATS):
            for name in order[round_ % len(order) :] + order[: round_ % len(order)]:
                best[name] = min(best[name], _per_call_us(handlers[name], data))
    finally:
        telemetry.tracer_provider.shutdown()
    calls = (REPEATS + 1) * CALLS
    for servicer, core in ((plain, plain_core), (traced, traced_core), (spanned, spanned_core)):
        state = core.registry.get(target.key)
        if state is None or state.traffic.requests != calls or servicer.stats.unmatched or servicer.stats.errors:
            raise RuntimeError("zerohop did not count every request for its target")
    if spans.ended != calls:  # all from --trace-warm-requests: with tracing merely on, warm requests get none
        raise RuntimeError(f"{spans.ended} spans for the {calls} requests traced with --trace-warm-requests")
    return {
        "repeats": REPEATS,
        "calls_per_repeat": CALLS,
        "request_bytes": len(data),
        "floor_us": round(best["floor"], 3),
        "zerohop_us": round(best["zerohop"], 3),
        "own_us": round(best["zerohop"] - best["floor"], 3),
        "tracing_on_us": round(best["tracing_on"], 3),
        "warm_spans_us": round(best["warm_spans"], 3),
    }
