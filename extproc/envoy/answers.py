"""Every `ProcessingResponse` zerohop sends to Envoy, serialised once and reused.

The warm path writes one of these byte strings as is (the gRPC handler's serializer is the identity), so a
warm request builds no protobuf object. Answers that depend on a value (a timeout, a status code and the
kind of client) are built on first use and memoised; the set of distinct values is small and bounded.
"""

from __future__ import annotations

import enum
import functools
import html
import math

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.type.v3 import http_status_pb2
from google.protobuf import duration_pb2, struct_pb2

from extproc.core.placeholder import SERVED_HEADER
from extproc.envoy.config import (
    FAILOVER_HEADER,
    FAILOVER_METADATA_KEY,
    FAILOVER_METADATA_NAMESPACE,
    GATE_GATED,
    GATE_HEADER,
)

COLD_START_HEADER = "x-zerohop-cold-start"
_SEND = processing_mode_pb2.ProcessingMode.SEND
_GRPC_UNAVAILABLE = 14


def _serialize(response: ep.ProcessingResponse) -> bytes:
    return bytes(response.SerializeToString(deterministic=True))


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


# Request headers: let the request go, nothing else to see.
CONTINUE = _serialize(ep.ProcessingResponse(request_headers=ep.HeadersResponse()))

# Request headers: let it go, and send this request's response headers so its end can be observed.
CONTINUE_AND_FOLLOW = _serialize(
    ep.ProcessingResponse(
        request_headers=ep.HeadersResponse(),
        mode_override=processing_mode_pb2.ProcessingMode(response_header_mode=_SEND),
    )
)

# Response headers of a followed warm request: nothing to change.
CONTINUE_RESPONSE = _serialize(ep.ProcessingResponse(response_headers=ep.HeadersResponse()))

# Response headers of a released cold request: mark it as a cold start.
COLD_START_RESPONSE = _serialize(
    ep.ProcessingResponse(
        response_headers=ep.HeadersResponse(
            response=ep.CommonResponse(
                header_mutation=ep.HeaderMutation(set_headers=[_header(COLD_START_HEADER, "true")])
            )
        )
    )
)

# Response headers of a request sent to its target's fallback: a cold start, answered by the fallback.
FAILOVER_RESPONSE = _serialize(
    ep.ProcessingResponse(
        response_headers=ep.HeadersResponse(
            response=ep.CommonResponse(
                header_mutation=ep.HeaderMutation(
                    set_headers=[_header(COLD_START_HEADER, "true"), _header(FAILOVER_HEADER, "true")]
                )
            )
        )
    )
)


# A warm-path probe that reached zerohop: ext_proc is on for its virtual host (see config.PROBE_HEADER).
GATED_PROBE = _serialize(
    ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.NoContent),
            headers=ep.HeaderMutation(set_headers=[_header(GATE_HEADER, GATE_GATED)]),
        )
    )
)


@functools.lru_cache(maxsize=256)
def failover(target: str, fallback: str) -> bytes:
    """Request headers of a held request whose hold ran out: let it go to the fallback of `target` (its
    `namespace/name`) instead; the request header names the `fallback` Service for the app that gets it.

    The dynamic metadata selects the fallback route (config.FAILOVER_METADATA_*, value `target`); Envoy
    re-matches routes only after a header mutation with `clear_route_cache`, which the request header
    provides. The response headers are asked for, to mark the answer and to tell a fallback that is down
    from one that answered."""
    metadata = struct_pb2.Struct()
    metadata.update({FAILOVER_METADATA_NAMESPACE: {FAILOVER_METADATA_KEY: target}})
    return _serialize(
        ep.ProcessingResponse(
            request_headers=ep.HeadersResponse(
                response=ep.CommonResponse(
                    header_mutation=ep.HeaderMutation(set_headers=[_header(FAILOVER_HEADER, fallback)]),
                    clear_route_cache=True,
                )
            ),
            dynamic_metadata=metadata,
            mode_override=processing_mode_pb2.ProcessingMode(response_header_mode=_SEND),
        )
    )


def placeholder(status: int, headers: tuple[tuple[str, str], ...], content_type: str, body: str) -> bytes:
    """The placeholder page as an ImmediateResponse: the object's headers, then the add-on's own (which win)."""
    fixed = (
        ("content-type", content_type),
        (SERVED_HEADER, "true"),
        ("cache-control", "no-cache, no-store, must-revalidate"),
        (COLD_START_HEADER, "true"),
    )
    # The body's framing is Envoy's to write: an object's length or encoding header would contradict it.
    names = {name for name, _ in fixed} | {"content-length", "transfer-encoding", "connection"}
    mutation = [_header(name, value) for name, value in headers if name not in names]
    mutation += [_header(name, value) for name, value in fixed]
    immediate = ep.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=status),
        headers=ep.HeaderMutation(set_headers=mutation),
        body=body.encode(),
        details="zerohop_placeholder",
    )
    return _serialize(ep.ProcessingResponse(immediate_response=immediate))


# A CONTINUE for every kind of message, for input zerohop did not ask for (misconfigured processing mode).
CONTINUE_FOR_KIND: dict[str, bytes] = {
    "request_headers": CONTINUE,
    "response_headers": CONTINUE_RESPONSE,
    "request_body": _serialize(ep.ProcessingResponse(request_body=ep.BodyResponse())),
    "response_body": _serialize(ep.ProcessingResponse(response_body=ep.BodyResponse())),
    "request_trailers": _serialize(ep.ProcessingResponse(request_trailers=ep.TrailersResponse())),
    "response_trailers": _serialize(ep.ProcessingResponse(response_trailers=ep.TrailersResponse())),
}


@functools.lru_cache(maxsize=64)
def extend_timeout(seconds: float) -> bytes:
    """Ask Envoy to wait up to `seconds` for the next answer (bounded by the filter's max_message_timeout)."""
    whole = math.floor(seconds)
    duration = duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
    return _serialize(ep.ProcessingResponse(override_message_timeout=duration))


class ClientKind(enum.Enum):
    """Who gets a refusal, which decides its shape."""

    GRPC = "grpc"
    BROWSER = "browser"
    OTHER = "other"


def client_kind(content_type: str, accept: str) -> ClientKind:
    if content_type.startswith("application/grpc"):
        return ClientKind.GRPC
    if "text/html" in accept:
        return ClientKind.BROWSER
    return ClientKind.OTHER


def wants_html(content_type: str, accept: str) -> bool:
    """A browser (or anything asking for HTML): who gets a placeholder page instead of being held."""
    return client_kind(content_type, accept) is ClientKind.BROWSER


class Refusal(enum.Enum):
    """Why a request is answered by zerohop instead of the target."""

    TIMEOUT = (504, "the service did not become ready within {wait}")
    OVER_CAPACITY = (503, "too many requests are waiting for the service to start")
    SHUTDOWN = (503, "zerohop is shutting down and the service is not ready yet")

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="{retry}">
<title>Starting up</title></head>
<body style="font-family: sans-serif; margin: 4em;">
<h1>{title}</h1><p>{message}.</p><p>This page retries in {retry} seconds.</p>
</body></html>
"""


@functools.lru_cache(maxsize=128)
def refuse(reason: Refusal, kind: ClientKind, retry_after: int, wait: str = "") -> bytes:
    """An ImmediateResponse for `reason`, shaped for the client: grpc-status 14, an HTML page, or text."""
    message = reason.message.format(wait=wait or "the hold budget")
    headers = [
        _header("retry-after", str(retry_after)),
        _header("cache-control", "no-store"),
        _header(COLD_START_HEADER, "true"),
    ]
    grpc_status = None
    if kind is ClientKind.GRPC:
        body = message.encode()
        grpc_status = ep.GrpcStatus(status=_GRPC_UNAVAILABLE)
    elif kind is ClientKind.BROWSER:
        title = "Gateway timeout" if reason is Refusal.TIMEOUT else "Service unavailable"
        body = _HTML.format(retry=retry_after, title=title, message=html.escape(message)).encode()
        headers.append(_header("content-type", "text/html; charset=utf-8"))
    else:
        body = (message + "\n").encode()
        headers.append(_header("content-type", "text/plain; charset=utf-8"))
    immediate = ep.ImmediateResponse(
        status=http_status_pb2.HttpStatus(code=reason.status),
        headers=ep.HeaderMutation(set_headers=headers),
        body=body,
        grpc_status=grpc_status,
        details=f"zerohop_{reason.name.lower()}",
    )
    return _serialize(ep.ProcessingResponse(immediate_response=immediate))
