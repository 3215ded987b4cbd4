"""Failover (`coldStartTimeoutFailoverRef`) and placeholder pages (`placeholderConfig`): parsing, the safe
template renderer, the answers zerohop sends Envoy, and the routes (plain Envoy and Istio) that act on them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import json_format

from extproc.core.coldstart import ColdGate
from extproc.core.httpso import InvalidSpec, TargetKey, parse
from extproc.core.placeholder import compile_template, render, timestamp
from extproc.core.registry import InFlightMode, TargetRegistry
from extproc.dev.envoyproc import validate_config
from extproc.envoy import answers, istio
from extproc.envoy import config as envoyconfig
from extproc.providers.local import config as local_config
from tests.helpers import wait_for
from tests.istio_gateway import istio_gateway_bootstrap

VALUES = {
    "ServiceName": "app-svc",
    "Namespace": "shop",
    "RefreshInterval": "5",
    "RequestID": "r-1",
    "Timestamp": "2026-01-02T03:04:05Z",
}


def document(name: str = "app", namespace: str = "shop", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"hosts": [f"{name}.example"], "scaleTargetRef": {"name": name, "service": name, "port": 80}}
    base.update(spec)
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": base,
    }


# --- parsing -------------------------------------------------------------------------------------------------


def test_placeholder_defaults_follow_the_add_on() -> None:
    target = parse(document(placeholderConfig={"enabled": True}))
    config = target.placeholder
    assert config is not None
    assert (config.status_code, config.refresh_interval, config.headers) == (503, 5, ())
    # No content: zerohop's own page, naming the service, with the refresh script.
    page = render(config.template, VALUES)
    assert "app-svc is starting up" in page
    assert "every = 5 * 1000" in page
    assert config.template.content_type == "text/html; charset=utf-8"


def test_placeholder_fields_are_read() -> None:
    spec = {
        "enabled": True,
        "statusCode": 200,
        "refreshInterval": 60,
        "headers": {"X-Thing": "a b", "Retry-After": "3"},
        "content": "starting {{.ServiceName}}",
    }
    config = parse(document(placeholderConfig=spec)).placeholder
    assert config is not None
    assert (config.status_code, config.refresh_interval) == (200, 60)
    assert config.headers == (("x-thing", "a b"), ("retry-after", "3"))
    assert render(config.template, VALUES) == "starting app-svc"
    assert config.template.content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"enabled": "yes"}, "spec.placeholderConfig.enabled: expected true or false"),
        ({"statusCode": 600}, "spec.placeholderConfig.statusCode: expected 100..599"),
        ({"statusCode": 99}, "spec.placeholderConfig.statusCode: must be >= 100"),
        ({"statusCode": 101}, "zerohop answers with a final status, 200..599"),
        ({"refreshInterval": 0}, "spec.placeholderConfig.refreshInterval: must be >= 1"),
        ({"refreshInterval": 61}, "expected 1..60 seconds"),
        ({"headers": {"bad name": "x"}}, "is not an HTTP header name"),
        ({"headers": {":status": "200"}}, "is not an HTTP header name"),
        (
            {"headers": {"x-a": "one\r\nset-cookie: b"}},
            "spec.placeholderConfig.headers.x-a: expected a one-line string",
        ),
        ({"headers": {"x-a": 5}}, "expected a one-line string"),
        ({"content": ["x"]}, "spec.placeholderConfig.content: expected a string"),
    ],
)
def test_placeholder_rules(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse(document(placeholderConfig={"enabled": True, **spec}))


def test_the_failover_timeout_is_the_hold_budget_as_in_the_add_on() -> None:
    failover = {"service": "backup", "port": 80}
    plain = parse(document(timeouts={"conditionWait": "7s"}))
    assert plain.hold_wait == 7.0
    # With a failover, its timeoutSeconds (default 30) replaces conditionWait.
    assert parse(document(coldStartTimeoutFailoverRef=failover)).hold_wait == 30.0
    with_both = parse(
        document(timeouts={"conditionWait": "7s"}, coldStartTimeoutFailoverRef={**failover, "timeoutSeconds": 3})
    )
    assert with_both.hold_wait == 3.0
    registry = TargetRegistry(
        ColdGate(max_held_per_target=1, max_held_total=1), hold_timeout=20, in_flight=InFlightMode.ALL
    )
    assert registry.upsert(with_both).hold_budget == 3.0
    # Never past --hold-timeout: the gateway's max_message_timeout is built from it.
    assert registry.upsert(parse(document(coldStartTimeoutFailoverRef=failover))).hold_budget == 20.0


# --- the renderer --------------------------------------------------------------------------------------------


def test_values_are_html_escaped_and_only_the_add_ons_variables_are_substituted() -> None:
    template = compile_template("<p>{{.RequestID}} {{ .Namespace }}/{{.ServiceName}} {{.Timestamp}}</p>")
    values = {**VALUES, "RequestID": '<script>alert("x")</script>'}
    page = render(template, values)
    assert page.startswith("<p>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; shop/app-svc 2026-01-02T03:04:05Z</p>")
    assert template.per_request
    assert not compile_template("{{.ServiceName}}").per_request


def test_trim_markers_and_comments_behave_as_in_go_templates() -> None:
    template = compile_template("a  {{- .ServiceName -}}  b {{/* a note */}}c")
    assert render(template, VALUES) == "aapp-svcb c"


@pytest.mark.parametrize(
    "content",
    [
        "{{.Values.secret}}",
        '{{ template "x" }}',
        "{{ if .ServiceName }}yes{{ end }}",
        '{{ .ServiceName | printf "%s" }}',
        "{{ .Unknown }}",
        "{{ call .X }}",
    ],
)
def test_anything_else_in_an_action_is_not_evaluated(content: str) -> None:
    template = compile_template(content)
    assert template.problem
    # What the add-on sends when its template cannot be executed.
    assert render(template, VALUES) == "app-svc is starting up...\n"
    target = parse(document(placeholderConfig={"enabled": True, "content": content}))
    assert any("spec.placeholderConfig.content" in line for line in target.notices())


def test_a_value_cannot_inject_an_action() -> None:
    template = compile_template("{{.RequestID}}{{.ServiceName}}")
    assert render(template, {**VALUES, "RequestID": "{{.Namespace}}"}) == "{{.Namespace}}app-svc"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ("<h1>x</h1>", "text/html; charset=utf-8"),
        ('{"status": "starting"}', "application/json"),
        ("[1]", "application/json"),
        ("starting", "text/plain; charset=utf-8"),
    ],
)
def test_content_type_follows_the_content(content: str, content_type: str) -> None:
    template = compile_template(content)
    assert template.content_type == content_type
    assert ("<script>" in render(template, VALUES)) == content_type.startswith("text/html")


def test_the_refresh_script_goes_before_the_end_of_the_body() -> None:
    page = render(compile_template("<html><BODY>x</BODY></html>"), VALUES)
    assert page.startswith("<html><BODY>x<script>")
    assert page.endswith("</script></BODY></html>")
    assert 'r.headers.get("x-keda-http-placeholder-served") !== "true"' in page


def test_timestamp_is_rfc3339() -> None:
    assert timestamp(0) == "1970-01-01T00:00:00Z"


# --- the answers ---------------------------------------------------------------------------------------------


def test_failover_answer_sets_metadata_clears_the_route_cache_and_follows_the_response() -> None:
    response = ep.ProcessingResponse.FromString(answers.failover("shop/app", "backup.shop"))
    common = response.request_headers.response
    assert common.clear_route_cache
    [header] = common.header_mutation.set_headers
    assert (header.header.key, header.header.raw_value) == (envoyconfig.FAILOVER_HEADER, b"backup.shop")
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    assert metadata == {envoyconfig.FAILOVER_METADATA_NAMESPACE: {envoyconfig.FAILOVER_METADATA_KEY: "shop/app"}}
    assert response.mode_override.response_header_mode == response.mode_override.SEND


def test_the_filter_accepts_zerohops_metadata_namespace_only() -> None:
    config = envoyconfig.ext_proc_config("c", max_message_timeout=65)
    assert config["metadata_options"] == {
        "receiving_namespaces": {"untyped": [envoyconfig.FAILOVER_METADATA_NAMESPACE]}
    }


def test_placeholder_answer_puts_the_add_ons_headers_last() -> None:
    headers = (("x-extra", "1"), ("cache-control", "public"), ("content-type", "text/x"), ("content-length", "99"))
    response = ep.ProcessingResponse.FromString(answers.placeholder(503, headers, "text/html; charset=utf-8", "<p>"))
    immediate = response.immediate_response
    assert (immediate.status.code, immediate.body, immediate.details) == (503, b"<p>", "zerohop_placeholder")
    got = {h.header.key: h.header.raw_value.decode() for h in immediate.headers.set_headers}
    assert got == {
        "x-extra": "1",
        "content-type": "text/html; charset=utf-8",
        "x-keda-http-placeholder-served": "true",
        "cache-control": "no-cache, no-store, must-revalidate",
        "x-zerohop-cold-start": "true",
    }


@pytest.mark.parametrize(
    ("content_type", "accept", "wanted"),
    [
        ("", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),
        ("", "application/json", False),
        ("", "*/*", False),
        ("", "", False),
        ("application/grpc", "text/html", False),
    ],
)
def test_who_gets_the_placeholder(content_type: str, accept: str, wanted: bool) -> None:
    assert answers.wants_html(content_type, accept) is wanted


# --- the routes ----------------------------------------------------------------------------------------------

FAILOVER = {"service": "backup", "port": 8080, "timeoutSeconds": 2}


def test_plain_envoy_routes_put_the_failover_route_first_in_each_host_of_the_target() -> None:
    targets = [
        parse(document("app", hosts=["a.example", "b.example"], coldStartTimeoutFailoverRef=FAILOVER)),
        parse(document("other", hosts=["a.example"], pathPrefixes=["/other"])),
        parse(
            document(
                "backup", hosts=["backup.example"], scaleTargetRef={"name": "b", "service": "backup", "port": 8080}
            )
        ),
    ]
    config = envoyconfig.route_configuration(targets)
    json_format.ParseDict(config, route_pb2.RouteConfiguration(), ignore_unknown_fields=False)
    hosts = {vhost["domains"][0]: vhost["routes"] for vhost in config["virtual_hosts"]}
    cluster = "outbound|8080||backup.shop.svc.cluster.local"
    assert cluster == envoyconfig.target_cluster_name(targets[2])  # the fallback is the other target's cluster
    wanted = envoyconfig.failover_route("shop/app", cluster)
    assert wanted["match"]["dynamic_metadata"][0]["value"] == {"string_match": {"exact": "shop/app"}}
    assert hosts["a.example"][0] == wanted
    assert hosts["b.example"][0] == wanted
    assert all("dynamic_metadata" not in route["match"] for route in hosts["a.example"][1:])
    assert all("dynamic_metadata" not in route["match"] for route in hosts["backup.example"])
    # Without any fallback, the configuration is what it was.
    plain = envoyconfig.route_configuration(targets[1:])
    assert plain == {
        "name": envoyconfig.ROUTE_CONFIG_NAME,
        "virtual_hosts": envoyconfig.virtual_hosts(envoyconfig.target_routes(targets[1:])),
    }


def test_istio_failover_routes_resolve_named_ports_and_skip_what_they_cannot_name() -> None:
    targets = [
        parse(document("app", hosts=["a.example", "*"], coldStartTimeoutFailoverRef=FAILOVER)),
        parse(document("named", coldStartTimeoutFailoverRef={"service": "backup", "portName": "http"})),
        parse(document("catchall", hosts=[], pathPrefixes=["/x"], coldStartTimeoutFailoverRef=FAILOVER)),
        parse(document("nofallback")),
    ]
    assert istio.failover_routes(targets) == [
        istio.FailoverRoute("a.example", "shop/app", "outbound|8080||backup.shop.svc.cluster.local")
    ]

    def resolve(namespace: str, service: str, port_name: str) -> int | None:
        return 9090 if (namespace, service, port_name) == ("shop", "backup", "http") else None

    assert istio.failover_routes(targets, resolve)[1] == istio.FailoverRoute(
        "named.example", "shop/named", "outbound|9090||backup.shop.svc.cluster.local"
    )


def test_istio_failover_patches_insert_first_in_each_virtual_host_and_envoy_accepts_them(tmp_path: Path) -> None:
    routes = [istio.FailoverRoute("managed.test", "default/managed", "outbound|80||other.default.svc.cluster.local")]
    document_ = istio.envoyfilter(hosts=["managed.test"], ports=(80, 8080), failovers=routes)
    patches = [p for p in document_["spec"]["configPatches"] if p["applyTo"] == "HTTP_ROUTE"]
    assert [p["match"]["routeConfiguration"] for p in patches] == [
        {"portNumber": 80, "vhost": {"name": "managed.test:80"}},
        {"portNumber": 8080, "vhost": {"name": "managed.test:8080"}},
    ]
    assert {p["patch"]["operation"] for p in patches} == {"INSERT_FIRST"}
    assert {p["match"]["context"] for p in patches} == {"GATEWAY"}
    value = patches[0]["patch"]["value"]
    json_format.ParseDict(value, route_components_pb2.Route(), ignore_unknown_fields=False)
    assert value["route"] == {"cluster": "outbound|80||other.default.svc.cluster.local", "timeout": "0s"}
    assert value["name"] == "zerohop-failover-default-managed"
    # Without failovers nothing else changes.
    assert istio.envoyfilter(hosts=["managed.test"]) == istio.envoyfilter(hosts=["managed.test"], failovers=())
    # Applied as istiod would (first in the virtual host), Envoy takes the route configuration.
    bootstrap = istio_gateway_bootstrap(document_, ["managed.test", "other.test"], ext_proc_port=9000)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    [vhost] = [v for v in hcm["route_config"]["virtual_hosts"] if v["name"] == "managed.test:80"]
    assert vhost["routes"][0] == value
    result = validate_config(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the local provider --------------------------------------------------------------------------------------

WORKLOADS = """
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {name: app}
spec: {command: [x], port: 18000}
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {name: backup}
spec: {command: [x], port: 18001}
"""


def httpso_yaml(name: str, extra: str = "") -> str:
    return f"""
---
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: {name}}}
spec:
  hosts: [{name}.test]
  scaleTargetRef: {{name: {name}, service: {name}, port: 8080}}
  replicas: {{max: 1}}
{extra}"""


def test_a_local_fallback_is_another_target_of_the_file() -> None:
    served = local_config.parse(
        httpso_yaml("app", "  coldStartTimeoutFailoverRef: {service: backup, port: 8080}\n")
        + httpso_yaml("backup")
        + WORKLOADS
    )
    assert served.problems == ()
    unserved = local_config.parse(
        httpso_yaml("app", "  coldStartTimeoutFailoverRef: {service: backup, port: 9999}\n")
        + httpso_yaml("backup")
        + WORKLOADS
    )
    [problem] = unserved.problems
    assert problem.severity == "warning"
    assert problem.name == str(TargetKey("default", "app"))
    assert "coldStartTimeoutFailoverRef names Service backup port 9999, which no target in this file serves" in (
        problem.message
    )


def test_zerohop_envoyfilter_from_files_carries_the_failover_routes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from extproc.app import cli

    path = tmp_path / "httpso.yaml"
    path.write_text(
        httpso_yaml("app", "  coldStartTimeoutFailoverRef: {service: backup, port: 8080}\n")
        + httpso_yaml("named", "  coldStartTimeoutFailoverRef: {service: backup, portName: http}\n")
    )
    assert cli.main(["envoyfilter", "--ports", "80", str(path)]) == 0
    out, err = capsys.readouterr()
    routes = [p for p in yaml.safe_load(out)["spec"]["configPatches"] if p["applyTo"] == "HTTP_ROUTE"]
    assert [
        (p["match"]["routeConfiguration"]["vhost"]["name"], p["patch"]["value"]["route"]["cluster"]) for p in routes
    ] == [("app.test:80", "outbound|8080||backup.default.svc.cluster.local")]
    assert "HTTPScaledObject default/named: its fallback names a port by name" in err


# --- the servicer --------------------------------------------------------------------------------------------


def _servicer_core() -> Any:
    from extproc.core.engine import Core

    core = Core(hold_timeout=30, max_held_per_target=5, max_held_total=10)
    core.apply_targets(
        [
            parse(document("fo", namespace="default", coldStartTimeoutFailoverRef={**FAILOVER, "timeoutSeconds": 1})),
            parse(
                document(
                    "page", namespace="default", placeholderConfig={"enabled": True, "content": "{{.ServiceName}}"}
                )
            ),
        ],
        {},
    )
    return core


async def _exchange(core: Any, *messages: ep.ProcessingRequest) -> list[ep.ProcessingResponse]:
    import grpc
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

    from extproc.envoy.processor import ExtProcServicer

    servicer = ExtProcServicer(core.router, core.cold_gate, retry_after=4)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((servicer.rpc_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

            async def requests() -> Any:
                for message in messages:
                    yield message

            return [r async for r in ep_grpc.ExternalProcessorStub(channel).Process(requests())]
    finally:
        await server.stop(0)


def _request(host: str, *extra: tuple[str, str]) -> ep.ProcessingRequest:
    from envoy.config.core.v3 import base_pb2

    pairs = [(":authority", host), (":path", "/"), (":method", "GET"), *extra]
    values = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]
    return ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=values)))


def _response(status: str, details: str) -> ep.ProcessingRequest:
    from envoy.config.core.v3 import base_pb2
    from google.protobuf import struct_pb2

    header = base_pb2.HeaderValue(key=":status", raw_value=status.encode())
    message = ep.ProcessingRequest(response_headers=ep.HttpHeaders(headers=base_pb2.HeaderMap(headers=[header])))
    attributes = struct_pb2.Struct()
    attributes.update({envoyconfig.CODE_DETAILS_ATTRIBUTE: details})
    message.attributes[envoyconfig.ATTRIBUTES_KEY].CopyFrom(attributes)
    return message


@pytest.mark.parametrize(
    ("status", "details", "answered"),
    [
        ("503", "via_upstream", True),  # the fallback's own 503 goes to the client
        ("503", "no_healthy_upstream", False),
        ("503", "upstream_reset_before_response_started{remote_connection_failure}", False),
    ],
)
async def test_the_fallback_answers_unless_the_gateway_had_to(status: str, details: str, answered: bool) -> None:
    core = _servicer_core()
    extend, release, last = await _exchange(core, _request("fo.example"), _response(status, details))
    assert extend.HasField("override_message_timeout")
    assert release.SerializeToString() == answers.failover("default/fo", "backup.default")
    if answered:
        assert last.SerializeToString() == answers.FAILOVER_RESPONSE
    else:
        assert last.immediate_response.status.code == 504
    state = core.registry.get(TargetKey("default", "fo"))
    # A 504 counts as the timeout it is for the client; an answer from the fallback as a failover.
    assert state.traffic.outcomes == {"failover" if answered else "timeout": 1}
    assert (state.traffic.in_flight, core.cold_gate.held_total) == (0, 0)


async def test_only_browsers_get_the_placeholder() -> None:
    core = _servicer_core()
    [page] = await _exchange(core, _request("page.example", ("accept", "text/html")))
    assert page.immediate_response.body == b"page"
    assert page.immediate_response.status.code == 503
    state = core.registry.get(TargetKey("default", "page"))
    assert state.traffic.outcomes == {"placeholder": 1}
    assert state.gate.wakes == 1  # the target wakes for the page's request
    assert state.gate.cold_since is not None
    # An API client is held (its answer starts with the longer wait), never given the page.
    stream = _exchange(core, _request("page.example", ("accept", "application/json")))
    task = asyncio.ensure_future(stream)
    await wait_for(lambda: core.cold_gate.held_total == 1, 5, what="API request held")
    core.set_routable(TargetKey("default", "page"), True)
    answers_ = await task
    assert answers_[0].HasField("override_message_timeout")
    assert answers_[1].HasField("request_headers")
    assert not any(a.HasField("immediate_response") for a in answers_)
