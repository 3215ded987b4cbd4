"""zerohop's own work on a warm request, in-process: what its handler does beyond the tuned floor's (E).

The wire-level setups cannot separate a few microseconds from the run-to-run noise of a shared 2-CPU box,
so this measures the two handlers themselves, with one harness: the real `ExtProcServicer` (a real route
table holding setup B's target, routable) and setup E's `tuned_process`, each fed the same serialised
request-headers message, shaped as the gateway sends it (headers in `raw_value`, the `xds.cluster_name`
attribute), through a context whose `read()` parses it (as grpc's request deserializer would) and whose
`write()` takes the answer. A handler that would wait on anything fails the measurement instead of being
timed. The difference is zerohop's routing and counting; gRPC's own cost, the bulk of the total, is the
same for both and is not in either number.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2

from bench.bare_extproc import tuned_process
from bench.setups import WARM_TARGET
from extproc import answers
from extproc.core import Core
from extproc.envoyconfig import target_cluster_name
from extproc.httpso import parse as parse_httpso
from extproc.processor import ATTRIBUTES_KEY, CLUSTER_ATTRIBUTE, ExtProcServicer

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


def _run_once(handler: Handler, context: _Context) -> None:
    coroutine = handler(None, context)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("the handler waited on something; a warm request must not")


def _per_call_us(handler: Handler, data: bytes) -> float:
    best = float("inf")
    for _ in range(REPEATS):
        context = _Context(data)
        started = time.perf_counter()
        for _ in range(CALLS):
            _run_once(handler, context)
        best = min(best, (time.perf_counter() - started) / CALLS * 1e6)
        if context.written != [answers.CONTINUE] * CALLS:
            raise RuntimeError("the handler did not answer every request with CONTINUE")
    return best


def zerohop_servicer() -> tuple[ExtProcServicer, Core]:
    """The servicer as `zerohop serve` wires it, with setup B's target warm."""
    target = parse_httpso(WARM_TARGET.documents(8080)[0])
    core = Core(hold_timeout=60.0, max_held_per_target=1000, max_held_total=10_000)
    core.apply_targets([target], {target_cluster_name(target): target.key})
    core.set_routable(target.key, True)
    return ExtProcServicer(core.router, core.gate, retry_after=5), core


def measure() -> dict[str, Any]:
    """Best-of-REPEATS microseconds per call of each handler, and the difference."""
    servicer, core = zerohop_servicer()
    target = parse_httpso(WARM_TARGET.documents(8080)[0])
    data = warm_request(target.hosts[0], target_cluster_name(target))
    floor = _per_call_us(tuned_process, data)
    zerohop = _per_call_us(servicer.process, data)
    state = core.registry.get(target.key)
    if state is None or state.traffic.requests != REPEATS * CALLS or servicer.stats.unmatched:
        raise RuntimeError("zerohop did not count every request for its target")
    return {
        "repeats": REPEATS,
        "calls_per_repeat": CALLS,
        "request_bytes": len(data),
        "floor_us": round(floor, 3),
        "zerohop_us": round(zerohop, 3),
        "own_us": round(zerohop - floor, 3),
    }
