"""The pre-serialised ext_proc answers decode into exactly the messages Envoy must receive."""

from __future__ import annotations

from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from extproc.envoy import answers
from extproc.envoy.answers import ClientKind, Refusal


def decode(data: bytes) -> ep.ProcessingResponse:
    return ep.ProcessingResponse.FromString(data)


def headers_of(mutation: ep.HeaderMutation) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


def test_continue_is_a_bare_request_headers_answer() -> None:
    response = decode(answers.CONTINUE)
    assert response.WhichOneof("response") == "request_headers"
    assert response.request_headers.response.status == ep.CommonResponse.CONTINUE
    assert not response.HasField("mode_override")


def test_continue_and_follow_asks_for_response_headers_only() -> None:
    response = decode(answers.CONTINUE_AND_FOLLOW)
    assert response.WhichOneof("response") == "request_headers"
    mode = response.mode_override
    assert mode.response_header_mode == processing_mode_pb2.ProcessingMode.SEND
    assert mode.request_body_mode == processing_mode_pb2.ProcessingMode.NONE
    assert mode.response_body_mode == processing_mode_pb2.ProcessingMode.NONE


def test_cold_start_response_sets_the_header() -> None:
    response = decode(answers.COLD_START_RESPONSE)
    assert response.WhichOneof("response") == "response_headers"
    assert headers_of(response.response_headers.response.header_mutation) == {"x-zerohop-cold-start": "true"}


def test_extend_timeout() -> None:
    duration = decode(answers.extend_timeout(62.25)).override_message_timeout
    assert (duration.seconds, duration.nanos) == (62, 250_000_000)


def test_continue_for_every_kind_matches_its_kind() -> None:
    for kind, data in answers.CONTINUE_FOR_KIND.items():
        assert decode(data).WhichOneof("response") == kind


def test_timeout_refusal_for_plain_clients() -> None:
    response = decode(answers.refuse(Refusal.TIMEOUT, ClientKind.OTHER, 7, "30s")).immediate_response
    assert response.status.code == 504
    headers = headers_of(response.headers)
    assert headers["retry-after"] == "7"
    assert headers["content-type"].startswith("text/plain")
    assert b"within 30s" in response.body
    assert not response.HasField("grpc_status")


def test_over_capacity_refusal_for_browsers_is_html() -> None:
    response = decode(answers.refuse(Refusal.OVER_CAPACITY, ClientKind.BROWSER, 3)).immediate_response
    assert response.status.code == 503
    assert headers_of(response.headers)["content-type"].startswith("text/html")
    assert b'<meta http-equiv="refresh" content="3">' in response.body


def test_grpc_clients_get_unavailable() -> None:
    response = decode(answers.refuse(Refusal.SHUTDOWN, ClientKind.GRPC, 5)).immediate_response
    assert response.grpc_status.status == 14
    assert headers_of(response.headers)["retry-after"] == "5"


def test_client_kind() -> None:
    assert answers.client_kind("application/grpc+proto", "") is ClientKind.GRPC
    assert answers.client_kind("", "text/html,application/xhtml+xml") is ClientKind.BROWSER
    assert answers.client_kind("application/json", "*/*") is ClientKind.OTHER
