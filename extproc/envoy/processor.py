"""The Envoy-facing servicer (`envoy.service.ext_proc.v3.ExternalProcessor/Process`).

One gRPC stream per HTTP request. The request-headers message is mapped to a target; a warm target gets a
pre-serialised CONTINUE at once, a cold one is held by the cold gate and let go when the gateway can route
it (or refused with 504/503 and `Retry-After`). Where a request's end matters (concurrency metric, held
requests) the answer asks Envoy for this request's response headers, and the stream's end releases the
in-flight count whichever way it ends: answer, client abort (stream reset) or server shutdown.

The warm path logs nothing, opens no span and builds no protobuf message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from extproc.core.coldstart import ColdGate, HoldOutcome
from extproc.core.durations import format_duration
from extproc.core.loglimit import LogLimiter
from extproc.core.placeholder import render, timestamp
from extproc.core.registry import TargetState
from extproc.core.routing import NO_UPSTREAM, NoUpstream, Router
from extproc.envoy import answers
from extproc.envoy.answers import Refusal
from extproc.envoy.config import (
    ATTRIBUTES_KEY,
    CLUSTER_ATTRIBUTE,
    CODE_DETAILS_ATTRIBUTE,
    MESH_ATTRIBUTE,
    PROBE_HEADER,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
# Envoy's response code details when the gateway itself could not pick an upstream host or cluster.
NOT_ROUTED_DETAILS = frozenset({"no_healthy_upstream", "cluster_not_found"})
# ... and when it found no upstream host that answered (a fallback that is down gets the 504 instead).
NOT_ANSWERED_PREFIX = "upstream_reset_before_response_started"
# zerohop answers a timed-out hold itself this long before Envoy's own message timer would fire.
TIMEOUT_MARGIN = 2.0

_EOF = grpc.aio.EOF
_CONTINUE = answers.CONTINUE
_CONTINUE_AND_FOLLOW = answers.CONTINUE_AND_FOLLOW
_CONTINUE_RESPONSE = answers.CONTINUE_RESPONSE
_monotonic = time.monotonic


class ProcessorStats:
    """Plain counters of what the servicer did; read by status and metrics, bumped on the hot path."""

    __slots__ = (
        "cold_requests",
        "errors",
        "failovers",
        "failovers_down",
        "malformed",
        "not_routed",
        "over_capacity",
        "placeholders",
        "probes",
        "released",
        "released_5xx",
        "removed",
        "shutdown_refusals",
        "streams",
        "timeouts",
        "unmatched",
    )

    def __init__(self) -> None:
        self.streams = 0
        self.unmatched = 0
        self.malformed = 0
        self.errors = 0
        self.cold_requests = 0
        self.released = 0
        self.released_5xx = 0
        self.not_routed = 0  # released or watched requests the gateway answered "no healthy upstream" itself
        self.removed = 0
        self.timeouts = 0
        self.over_capacity = 0
        self.shutdown_refusals = 0
        self.failovers = 0  # held past the budget and sent to the target's fallback
        self.failovers_down = 0  # ... whose fallback could not answer either (answered 504)
        self.placeholders = 0  # browsers answered the placeholder page instead of being held
        self.probes = 0  # warm-path probes answered "gated" (the Kubernetes provider's switch confirmation)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def _header_value(header: Any) -> bytes:
    raw: bytes = header.raw_value
    return raw if raw else header.value.encode("latin-1", "replace")


def _headers_dict(headers: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for header in headers:
        key = header.key.lower()
        if key not in found:
            found[key] = _header_value(header).decode("latin-1")
    return found


class _ExtProcReader:
    """The route table's `RequestReader` over a request-headers `ProcessingRequest`; stateless, one for all."""

    __slots__ = ()

    def cluster(self, request: Any) -> str | NoUpstream | None:
        attributes = request.attributes.get(ATTRIBUTES_KEY)
        if attributes is None:
            return None
        fields = attributes.fields
        cluster = fields.get(CLUSTER_ATTRIBUTE)
        if cluster is not None:
            name: str = cluster.string_value
            return name
        # zerohop's filter asks for the cluster; an attribute set without it means Envoy had none to send.
        if not fields or (len(fields) == 1 and MESH_ATTRIBUTE in fields):
            return NO_UPSTREAM
        return None

    def from_mesh(self, request: Any) -> bool:
        """Did the request come through a client's sidecar (its filter asks for MESH_ATTRIBUTE)?"""
        attributes = request.attributes.get(ATTRIBUTES_KEY)
        return attributes is not None and MESH_ATTRIBUTE in attributes.fields

    def authority(self, request: Any) -> bytes:
        headers = request.request_headers.headers.headers
        for header in headers:
            if header.key == ":authority":
                return _header_value(header)
        log.debug("request headers without :authority (%d headers); treated as unmatched", len(headers))
        return b""

    def path(self, request: Any) -> str:
        for header in request.request_headers.headers.headers:
            if header.key == ":path":
                return _header_value(header).decode("latin-1")
        return "/"

    def headers(self, request: Any) -> dict[str, str]:
        return _headers_dict(request.request_headers.headers.headers)


_READER = _ExtProcReader()


class HoldObserver(Protocol):
    """Told when a cold request starts and stops being held (tracing, histograms); never on the warm path.

    `hold_started` runs before the target is woken, so work done in wake hooks happens inside whatever
    context it sets up (e.g. the hold's trace span).
    """

    def hold_started(self, context: grpc.aio.ServicerContext[Any, bytes], request: Any, state: TargetState) -> Any: ...

    def hold_ended(self, token: Any, state: TargetState, outcome: HoldOutcome, seconds: float) -> None: ...


class WarmObserver(Protocol):
    """Told of each warm request; only installed when warm requests are to be traced."""

    def warm(self, context: grpc.aio.ServicerContext[Any, bytes], request: Any, state: TargetState) -> None: ...


class ExtProcServicer:
    """Answers Envoy's ext_proc streams from the current route table and the cold gate."""

    def __init__(
        self,
        router: Router,
        gate: ColdGate,
        *,
        retry_after: int,
        observer: HoldObserver | None = None,
        warm_observer: WarmObserver | None = None,
    ) -> None:
        self._router = router
        self._gate = gate
        self._retry_after = retry_after
        self.observer = observer
        self.warm_observer = warm_observer
        self._warm_observer_failed = False
        self.stats = ProcessorStats()
        self._error_log = LogLimiter(log)

    def rpc_handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a grpc.aio server; responses are written pre-serialised."""
        handler: grpc.RpcMethodHandler[Any, bytes] = grpc.stream_stream_rpc_method_handler(
            self.process,
            request_deserializer=ep.ProcessingRequest.FromString,
            response_serializer=None,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Process": handler})

    async def process(self, _requests: object, context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        try:
            await self._process(context)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.errors += 1
            self._error_log.log(logging.WARNING, "ext_proc stream ended with an error", traceback_once=True)

    async def _process(self, context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        self.stats.streams += 1
        request = await context.read()
        if request is _EOF:
            return
        if not request.HasField("request_headers"):
            await self._unexpected(request, context)
            return
        try:
            state = self._router.table.lookup(request, _READER)
        except Exception:
            self.stats.malformed += 1
            log.debug("could not route ext_proc request headers; continuing", exc_info=True)
            state = None
        if state is None:
            if _is_probe(request):
                # A warm-path probe (its route has no cluster, so it never matches a target): answering it
                # tells the prober that ext_proc is on for this virtual host.
                self.stats.probes += 1
                await context.write(answers.GATED_PROBE)
                return
            self.stats.unmatched += 1
            await context.write(_CONTINUE)
            return
        traffic = state.traffic
        if traffic.fence is not None:
            await traffic.fence.wait()  # the warm path reads the target's baseline: a few ms, once per opening
        traffic.requests += 1
        mesh = traffic.mesh_apart and _READER.from_mesh(request)
        if mesh:
            traffic.mesh_requests += 1
        traffic.rate.record(_monotonic())
        if state.gate.routable:
            if self.warm_observer is not None:
                self._observe_warm(context, request, state)
            if not state.follow_end:
                await context.write(_CONTINUE)
                return
            traffic.in_flight += 1
            traffic.mesh_in_flight += mesh
            try:
                await context.write(_CONTINUE_AND_FOLLOW)
                response = await self._response_headers(context)
                if response is not None:
                    gate = state.gate
                    # Watched (a guessed release), or turned unroutable while this request was in flight.
                    # Judged before answering: see _hold.
                    if (gate.watching or not gate.routable) and _routed(response) is False:
                        self.stats.not_routed += 1
                        self._gate.released(gate, False, False)
                    await context.write(_CONTINUE_RESPONSE)
            finally:
                traffic.in_flight -= 1
                traffic.mesh_in_flight -= mesh
            return
        if state.spec.placeholder is not None:
            headers = _headers_dict(request.request_headers.headers.headers)
            if answers.wants_html(headers.get("content-type", ""), headers.get("accept", "")):
                await self._placeholder(headers, state, context)
                return
        await self._hold(request, state, context)

    async def _placeholder(
        self, headers: dict[str, str], state: TargetState, context: grpc.aio.ServicerContext[Any, bytes]
    ) -> None:
        """A browser asking for a cold target with `placeholderConfig`: the page at once, and the target wakes."""
        self.stats.placeholders += 1
        self._gate.wake_cold(state.gate)
        state.traffic.hold_ended(HoldOutcome.PLACEHOLDER, None)
        config = state.spec.placeholder
        assert config is not None
        template = config.template
        values = {
            "ServiceName": state.spec.scale_target.service,
            "Namespace": state.key.namespace,
            "RefreshInterval": str(config.refresh_interval),
            "RequestID": headers.get("x-request-id", ""),
            "Timestamp": timestamp(),
        }
        content_type = template.content_type
        body = render(template, values)
        await context.write(answers.placeholder(config.status_code, config.headers, content_type, body))

    async def _hold(self, request: Any, state: TargetState, context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        stats = self.stats
        stats.cold_requests += 1
        traffic = state.traffic
        mesh = traffic.mesh_apart and _READER.from_mesh(request)
        traffic.in_flight += 1
        traffic.mesh_in_flight += mesh
        observer = self.observer
        token = self._hold_started(observer, context, request, state) if observer is not None else None
        outcome = HoldOutcome.ABORTED  # unless set below: the client went away (Envoy reset the stream)
        held: float | None = None  # stays None for requests refused without being held
        try:
            hold = self._gate.try_hold(state.gate)
            if hold is None:
                if self._gate.draining:
                    outcome, reason = HoldOutcome.SHUTDOWN, Refusal.SHUTDOWN
                    stats.shutdown_refusals += 1
                else:
                    outcome, reason = HoldOutcome.OVER_CAPACITY, Refusal.OVER_CAPACITY
                    stats.over_capacity += 1
                await context.write(self._refusal(request, reason, state))
                return
            try:
                await context.write(answers.extend_timeout(state.hold_budget + TIMEOUT_MARGIN))
                result = await hold.wait(state.hold_budget)
            finally:
                held = hold.duration
                hold.close()
            outcome = result
            if result is HoldOutcome.RELEASED:
                stats.released += 1
                routed: bool | None = None
                try:
                    await context.write(_CONTINUE_AND_FOLLOW)
                    response = await self._response_headers(context)
                    if response is not None:
                        # Judged and counted before answering: Envoy ends the stream as soon as it has the
                        # answer, and grpc.aio may cancel this task while that write is still awaited.
                        routed = _routed(response)
                        status = _status(response.response_headers.headers.headers)
                        if status.startswith(b"5"):
                            stats.released_5xx += 1
                            traffic.released_5xx += 1
                            if routed is False:
                                stats.not_routed += 1
                            else:
                                log.info("released cold request for %s got HTTP %s", state.key, status.decode())
                        await context.write(answers.COLD_START_RESPONSE)
                finally:
                    # Reported however the stream ends: a probe whose client went away must not leave the
                    # gate waiting for its verdict.
                    self._gate.released(state.gate, hold.probe, routed)
            elif result is HoldOutcome.REMOVED:
                stats.removed += 1
                await context.write(_CONTINUE)
            elif result is HoldOutcome.TIMEOUT and state.spec.failover is not None:
                # The client's answer decides: the fallback's (FAILOVER), or the 504 (TIMEOUT) when it had none;
                # the outcome is set before that answer is written (see RELEASED).
                outcome, answer = await self._failover(request, state, context)
                if answer is not None:
                    await context.write(answer)
            elif result is HoldOutcome.TIMEOUT:
                stats.timeouts += 1
                log.info("request for %s timed out after %.1fs held", state.key, state.hold_budget)
                await context.write(self._refusal(request, Refusal.TIMEOUT, state))
            else:
                stats.shutdown_refusals += 1
                await context.write(self._refusal(request, Refusal.SHUTDOWN, state))
        finally:
            traffic.in_flight -= 1
            traffic.mesh_in_flight -= mesh
            traffic.hold_ended(outcome, held)
            if observer is not None:
                try:
                    observer.hold_ended(token, state, outcome, held or 0.0)
                except Exception:
                    log.warning("hold observer failed; the request was answered", exc_info=True)

    async def _failover(
        self, request: Any, state: TargetState, context: grpc.aio.ServicerContext[Any, bytes]
    ) -> tuple[HoldOutcome, bytes | None]:
        """The hold ran out and the target has a fallback: send the request there (the fallback route matches
        zerohop's dynamic metadata). Returns the outcome and the answer still to write to the fallback's
        response headers: FAILOVER and the marked headers, or TIMEOUT and the 504 when the fallback could not
        answer either (None when the stream ended first: the client went away, the request was sent)."""
        ref = state.spec.failover
        assert ref is not None
        self.stats.failovers += 1
        log.info("request for %s held %.1fs: sending it to its fallback %s", state.key, state.hold_budget, ref.service)
        await context.write(answers.failover(str(state.key), f"{ref.service}.{state.key.namespace}"))
        response = await self._response_headers(context)
        if response is None:
            return HoldOutcome.FAILOVER, None
        if _answered(response):
            return HoldOutcome.FAILOVER, answers.FAILOVER_RESPONSE
        self.stats.failovers_down += 1
        self.stats.timeouts += 1
        log.info("fallback %s of %s could not answer either; answering 504", ref.service, state.key)
        return HoldOutcome.TIMEOUT, self._refusal(request, Refusal.TIMEOUT, state)

    # Observers (tracing) must never keep a request from its answer: a failure there is logged and the
    # request goes on as if no observer were installed.
    def _observe_warm(self, context: grpc.aio.ServicerContext[Any, bytes], request: Any, state: TargetState) -> None:
        assert self.warm_observer is not None
        try:
            self.warm_observer.warm(context, request, state)
        except Exception:
            self.stats.errors += 1
            first, self._warm_observer_failed = not self._warm_observer_failed, True
            log.log(logging.WARNING if first else logging.DEBUG, "warm observer failed; continuing", exc_info=True)

    def _hold_started(
        self, observer: HoldObserver, context: grpc.aio.ServicerContext[Any, bytes], request: Any, state: TargetState
    ) -> Any:
        try:
            return observer.hold_started(context, request, state)
        except Exception:
            self.stats.errors += 1
            log.warning("hold observer failed; holding the request untraced", exc_info=True)
            return None

    def _refusal(self, request: Any, reason: Refusal, state: TargetState) -> bytes:
        headers = _headers_dict(request.request_headers.headers.headers)
        kind = answers.client_kind(headers.get("content-type", ""), headers.get("accept", ""))
        return answers.refuse(reason, kind, self._retry_after, format_duration(state.hold_budget))

    async def _response_headers(self, context: grpc.aio.ServicerContext[Any, bytes]) -> Any:
        """This request's response headers message, unanswered (None when the stream ended first); messages of
        other kinds before it are answered with CONTINUE."""
        while True:
            message = await context.read()
            if message is _EOF:
                return None
            if message.HasField("response_headers"):
                return message
            kind = message.WhichOneof("request")
            if kind is None:
                return None
            await context.write(answers.CONTINUE_FOR_KIND[kind])

    async def _unexpected(self, request: Any, context: grpc.aio.ServicerContext[Any, bytes]) -> None:
        """Messages zerohop did not ask for: answer each with CONTINUE of its kind, never fail the request."""
        self.stats.malformed += 1
        while request is not _EOF:
            kind = request.WhichOneof("request")
            log.debug("unexpected ext_proc message %r; answering CONTINUE", kind)
            if kind is None:
                return
            await context.write(answers.CONTINUE_FOR_KIND[kind])
            request = await context.read()


def _is_probe(request: Any) -> bool:
    return any(header.key == PROBE_HEADER for header in request.request_headers.headers.headers)


def _routed(message: Any) -> bool | None:
    """Did the gateway send this request upstream? False when it answered "no healthy upstream" itself.

    Exact from the `response.code_details` attribute (zerohop's filter config asks for it); without it, a
    503 that no upstream timed (`x-envoy-upstream-service-time` absent) is taken as the gateway's own."""
    attributes = message.attributes.get(ATTRIBUTES_KEY)
    if attributes is not None:
        details = attributes.fields.get(CODE_DETAILS_ATTRIBUTE)
        if details is not None:
            return details.string_value not in NOT_ROUTED_DETAILS
    headers = message.response_headers.headers.headers
    if _status(headers) != b"503":
        return True
    return any(header.key == "x-envoy-upstream-service-time" for header in headers)


def _answered(message: Any) -> bool:
    """Did an upstream answer this request (not the gateway itself: no host, no cluster, no connection)?"""
    if _routed(message) is False:
        return False
    attributes = message.attributes.get(ATTRIBUTES_KEY)
    details = attributes.fields.get(CODE_DETAILS_ATTRIBUTE) if attributes is not None else None
    return details is None or not details.string_value.startswith(NOT_ANSWERED_PREFIX)


def _status(headers: Any) -> bytes:
    for header in headers:
        if header.key == ":status":
            return _header_value(header)
    return b""
