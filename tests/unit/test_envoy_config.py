"""Every Envoy config zerohop writes parses into its exact proto type (unknown fields rejected), and a
bootstrap built from them passes `envoy --mode validate` with the real Envoy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.ext_proc.v3 import ext_proc_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from extproc.app import cli
from extproc.core.httpso import parse
from extproc.dev.envoyproc import validate_config
from extproc.envoy import config as envoyconfig
from extproc.envoy import istio, processor
from extproc.providers.local.xds_files import XdsFiles
from tests.istio_gateway import istio_gateway_bootstrap

ROOT = Path(__file__).resolve().parents[2]

# Registers every type an Any in these configs may name.
import envoy.extensions.filters.http.router.v3.router_pb2  # noqa: E402
import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2  # noqa: E402
import envoy.extensions.upstreams.http.v3.http_protocol_options_pb2  # noqa: E402, F401


def strict(message: Any, data: dict[str, Any]) -> Any:
    return json_format.ParseDict(data, message, ignore_unknown_fields=False)


def targets() -> list[Any]:
    return [
        parse(
            {
                "apiVersion": "http.keda.sh/v1alpha1",
                "kind": "HTTPScaledObject",
                "metadata": {"name": "a"},
                "spec": {
                    "hosts": ["a.example", "*.wild.example"],
                    "pathPrefixes": ["/api", "/"],
                    "headers": [{"name": "x-tenant", "value": "t1"}, {"name": "x-beta"}],
                    "scaleTargetRef": {"name": "a", "service": "a", "port": 8080},
                    "timeouts": {"responseHeader": "5s"},
                },
            }
        ),
        parse(
            {
                "apiVersion": "http.keda.sh/v1alpha1",
                "kind": "HTTPScaledObject",
                "metadata": {"name": "b", "namespace": "other"},
                "spec": {
                    "hosts": ["a.example"],
                    "pathPrefixes": ["/b/"],
                    "scaleTargetRef": {"name": "b", "service": "b", "port": 80},
                },
            }
        ),
    ]


def test_ext_proc_filter_is_an_exact_external_processor() -> None:
    config = envoyconfig.ext_proc_config("zerohop", max_message_timeout=65)
    body = {k: v for k, v in config.items() if k != "@type"}
    message = strict(ext_proc_pb2.ExternalProcessor(), body)
    assert message.failure_mode_allow
    assert message.allow_mode_override
    assert message.processing_mode.response_header_mode == message.processing_mode.SKIP
    assert message.max_message_timeout.seconds == 65
    assert list(message.request_attributes) == ["xds.cluster_name"]
    with pytest.raises(json_format.ParseError):
        strict(ext_proc_pb2.ExternalProcessor(), {**body, "not_a_field": True})


def test_clusters_and_routes_are_exact_protos(tmp_path: Path) -> None:
    for cluster in envoyconfig.target_clusters(targets(), tmp_path):
        strict(cluster_pb2.Cluster(), cluster)
    strict(cluster_pb2.Cluster(), envoyconfig.ext_proc_cluster("127.0.0.1", 9000))
    strict(cluster_pb2.Cluster(), envoyconfig.ext_proc_cluster("zerohop.svc", 9000))
    routes = strict(route_pb2.RouteConfiguration(), envoyconfig.route_configuration(targets()))
    by_domain = {vh.domains[0]: vh for vh in routes.virtual_hosts}
    matches = [(r.match.WhichOneof("path_specifier"), r.match) for r in by_domain["a.example"].routes]
    # Whole segments, like zerohop's own matcher; Envoy rejects a path_separated_prefix ending in "/".
    assert [(kind, getattr(match, kind)) for kind, match in matches] == [
        ("path_separated_prefix", "/api"),
        ("path_separated_prefix", "/b"),
        ("prefix", "/"),
    ]
    assert by_domain["*"].routes[0].direct_response.status == 404


def test_an_open_virtual_host_skips_ext_proc_and_the_others_keep_it() -> None:
    config = envoyconfig.route_configuration(targets(), open_hosts=frozenset({"a.example"}))
    routes = strict(route_pb2.RouteConfiguration(), config)
    by_domain = {vh.domains[0]: vh for vh in routes.virtual_hosts}
    # The route's generic FilterConfig, which Envoy reads before it creates the filter: an ExtProcPerRoute
    # would be read by a filter already created for each request.
    per_filter = by_domain["a.example"].typed_per_filter_config[envoyconfig.EXT_PROC_FILTER]
    filter_config = route_components_pb2.FilterConfig()
    assert per_filter.Unpack(filter_config), per_filter.type_url
    assert filter_config.disabled
    assert not filter_config.HasField("config")
    others = [vh for domain, vh in by_domain.items() if domain != "a.example"]
    assert others
    assert all(not vh.typed_per_filter_config for vh in others)
    # Gated everywhere is today's config, byte for byte.
    assert envoyconfig.route_configuration(targets(), open_hosts=frozenset()) == envoyconfig.route_configuration(
        targets()
    )
    assert "typed_per_filter_config" not in json.dumps(envoyconfig.route_configuration(targets()))


def test_xds_files_parse_as_discovery_responses(tmp_path: Path) -> None:
    files = XdsFiles(tmp_path)
    files.write_clusters(envoyconfig.target_clusters(targets(), tmp_path))
    files.write_routes(envoyconfig.route_configuration(targets()))
    files.write_endpoints("outbound|8080||a.default.svc.cluster.local", [("127.0.0.1", 18000)])
    for path in tmp_path.glob("*.json"):
        strict(discovery_pb2.DiscoveryResponse(), json.loads(path.read_text()))
    assert not list(tmp_path.glob(".*.tmp"))


def test_local_bootstrap_passes_envoy_validate(tmp_path: Path) -> None:
    files = XdsFiles(tmp_path / "xds")
    files.write_clusters(envoyconfig.target_clusters(targets(), files.directory))
    files.write_routes(envoyconfig.route_configuration(targets()))
    ports = envoyconfig.GatewayPorts("127.0.0.1", 10000, 9901, "127.0.0.1", 9000)
    bootstrap = envoyconfig.local_bootstrap(ports, files.directory, max_message_timeout=65)
    strict(bootstrap_pb2.Bootstrap(), bootstrap)
    result = validate_config(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bootstrap_with_a_bad_field_fails_envoy_validate(tmp_path: Path) -> None:
    ports = envoyconfig.GatewayPorts("127.0.0.1", 10000, 9901, "127.0.0.1", 9000)
    bootstrap = envoyconfig.local_bootstrap(ports, tmp_path, max_message_timeout=65)
    listener = bootstrap["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"][0]["typed_config"]["max_message_timeout"] = "not-a-duration"
    assert validate_config(bootstrap, tmp_path).returncode != 0


def test_istio_envoyfilter_patch_is_an_exact_filter_and_the_files_are_current() -> None:
    committed = (ROOT / "envoyfilter" / "ingressgateway.yaml").read_text()
    assert committed == istio.render_envoyfilters(), "envoyfilter/ingressgateway.yaml is stale (extproc/envoy/istio.py)"
    gateway_api = (ROOT / "envoyfilter" / "gateway-api.yaml").read_text()
    assert gateway_api == istio.render_gateway_api(), "envoyfilter/gateway-api.yaml is stale (extproc/envoy/istio.py)"
    assert yaml.safe_load(gateway_api)["spec"]["workloadSelector"]["labels"] == {istio.GATEWAY_API_LABEL: "gateway"}
    document = yaml.safe_load(committed)
    [patch] = document["spec"]["configPatches"]
    value = patch["patch"]["value"]
    assert value["name"] == envoyconfig.EXT_PROC_FILTER
    body = {k: v for k, v in value["typed_config"].items() if k != "@type"}
    message = strict(ext_proc_pb2.ExternalProcessor(), body)
    assert message.grpc_service.envoy_grpc.cluster_name == "outbound|9000||zerohop.zerohop-system.svc.cluster.local"


def test_envoyfilter_command_points_the_filter_at_the_named_service(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["envoyfilter", "--service-name", "zh-edge", "--namespace", "edge", "--hold-timeout", "30s"]) == 0
    [patch] = yaml.safe_load(capsys.readouterr().out)["spec"]["configPatches"]
    typed_config = patch["patch"]["value"]["typed_config"]
    assert typed_config["grpc_service"]["envoy_grpc"]["cluster_name"] == "outbound|9000||zh-edge.edge.svc.cluster.local"
    assert typed_config["max_message_timeout"] == "35s"


def test_envoy_waits_longer_than_a_held_request_asks() -> None:
    hold_timeout = 60.0
    # A held request asks for its budget (at most the hold timeout) plus the processor's margin.
    asked = hold_timeout + processor.TIMEOUT_MARGIN
    assert envoyconfig.max_message_timeout_for(hold_timeout) > asked


def test_scoped_envoyfilter_patches_are_exact_protos_and_envoy_accepts_them(tmp_path: Path) -> None:
    from envoy.config.route.v3 import route_components_pb2
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

    document = istio.envoyfilter(hosts=["managed.test", "*.wild.test"], ports=(80, 8080))
    patches = document["spec"]["configPatches"]
    filter_value = patches[0]["patch"]["value"]
    assert filter_value["disabled"] is True
    strict(hcm_pb2.HttpFilter(), filter_value)
    names = [p["match"]["routeConfiguration"]["vhost"]["name"] for p in patches[1:]]
    assert names == ["*.wild.test:80", "*.wild.test:8080", "managed.test:80", "managed.test:8080"]
    for patch in patches[1:]:
        strict(route_components_pb2.VirtualHost(), {"name": "x", "domains": ["x"], **patch["patch"]["value"]})
    bootstrap = istio_gateway_bootstrap(document, ["managed.test", "other.test"], ext_proc_port=9000)
    result = validate_config(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_warm_path_envoyfilter_enables_only_gated_hosts_and_probes_every_managed_one(tmp_path: Path) -> None:
    from envoy.config.route.v3 import route_components_pb2

    document = istio.envoyfilter(hosts=["gated.test", "open.test"], ports=(80,), open_hosts=["open.test"])
    patches = document["spec"]["configPatches"][1:]
    probes = [p for p in patches if p["applyTo"] == "HTTP_ROUTE"]
    enabled = [p for p in patches if p["applyTo"] == "VIRTUAL_HOST"]
    assert [p["match"]["routeConfiguration"]["vhost"]["name"] for p in probes] == ["gated.test:80", "open.test:80"]
    assert [p["match"]["routeConfiguration"]["vhost"]["name"] for p in enabled] == ["gated.test:80"]
    for probe in probes:
        assert probe["patch"]["operation"] == "INSERT_FIRST"
        route = strict(route_components_pb2.Route(), probe["patch"]["value"])
        assert route.direct_response.status == 204
        assert route.match.headers[0].name == envoyconfig.PROBE_HEADER
    assert istio.open_hosts_of(document) == {"open.test"}
    assert istio.open_hosts_of(istio.envoyfilter(hosts=["a.test"])) == frozenset()  # no probes: warm path off
    # Envoy takes the probe route and the per-host switch as Istio would apply them.
    bootstrap = istio_gateway_bootstrap(document, ["gated.test", "open.test"], ext_proc_port=9000)
    result = validate_config(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_bootstrap_with_an_otlp_endpoint_adds_envoys_tracer_and_passes_envoy_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import envoy.config.trace.v3.opentelemetry_pb2  # noqa: F401  (the tracer's Any type)

    from extproc.app import cli

    argv = ["envoy-bootstrap", "--xds-dir", str(tmp_path / "xds"), "--otlp-endpoint", "otel-collector.test:4317"]
    assert cli.main(argv) == 0
    bootstrap = json.loads(capsys.readouterr().out)
    message = strict(bootstrap_pb2.Bootstrap(), bootstrap)
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    provider = hcm["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    assert provider["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"] == envoyconfig.LOCAL_OTLP_CLUSTER
    [collector] = [c for c in message.static_resources.clusters if c.name == envoyconfig.LOCAL_OTLP_CLUSTER]
    address = collector.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("otel-collector.test", 4317)
    assert "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" in collector.typed_extension_protocol_options
    result = validate_config(bootstrap, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Without the option: no tracer, no collector cluster.
    assert cli.main(["envoy-bootstrap", "--xds-dir", str(tmp_path / "xds")]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert "tracing" not in plain["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [c["name"] for c in plain["static_resources"]["clusters"]] == [envoyconfig.LOCAL_EXT_PROC_CLUSTER]


@pytest.mark.parametrize("endpoint", ["otel-collector", "http://otel-collector:4317", "collector:0", ":4317"])
def test_envoy_bootstrap_refuses_an_otlp_endpoint_that_is_not_host_port(
    tmp_path: Path, endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from extproc.app import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["envoy-bootstrap", "--xds-dir", str(tmp_path), "--otlp-endpoint", endpoint])
    assert exit_info.value.code == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def test_the_documented_envoy_tracing_snippet_is_what_zerohop_writes() -> None:
    text = (ROOT / "docs" / "observability.md").read_text()
    start = text.index("# in the listener's envoy.filters.network.http_connection_manager typed_config:")
    block = text[start : text.index("```", start)]
    hcm_part, cluster_part = block.split("# in static_resources.clusters:")
    tracing = yaml.safe_load(hcm_part)["tracing"]
    assert tracing.pop("random_sampling") == {"value": 100}
    assert tracing == envoyconfig.otel_tracing()
    assert yaml.safe_load(cluster_part) == [envoyconfig.otlp_cluster("otel-collector", 4317)]


def test_an_unchanged_route_configuration_is_not_written_again(tmp_path: Path) -> None:
    # Envoy keeps the version it has for unchanged resources: a rewrite's version could never be confirmed.
    files = XdsFiles(tmp_path)
    files.write_routes(envoyconfig.route_configuration(targets()))
    first = files.routes_version
    files.write_endpoints("other", [])
    files.write_routes(envoyconfig.route_configuration(targets()))
    assert files.routes_version == first
    assert json.loads((tmp_path / envoyconfig.RDS_FILE).read_text())["version_info"] == first
    files.write_routes(envoyconfig.route_configuration(targets(), open_hosts=frozenset({"a.example"})))
    assert files.routes_version != first
    assert json.loads((tmp_path / envoyconfig.RDS_FILE).read_text())["version_info"] == files.routes_version


def version(name: str, weight: str | None, host: str = "backend.example") -> Any:
    metadata: dict[str, Any] = {"name": name}
    if weight is not None:
        metadata["annotations"] = {envoyconfig.WEIGHT_ANNOTATION: weight}
    return parse(
        {
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": metadata,
            "spec": {"hosts": [host], "scaleTargetRef": {"name": name, "service": name, "port": 8080}},
        }
    )


def only_route(config: dict[str, Any], host: str = "backend.example") -> Any:
    routes = strict(route_pb2.RouteConfiguration(), config)
    [vhost] = [vh for vh in routes.virtual_hosts if vh.domains[0] == host]
    [route] = vhost.routes
    return route.route


def test_targets_sharing_a_match_with_weights_are_one_weighted_route() -> None:
    canary = [version("backend-v1", "80"), version("backend-v2", "20")]
    action = only_route(envoyconfig.route_configuration(canary))
    assert action.WhichOneof("cluster_specifier") == "weighted_clusters"
    assert [(c.name, c.weight.value) for c in action.weighted_clusters.clusters] == [
        ("outbound|8080||backend-v1.default.svc.cluster.local", 80),
        ("outbound|8080||backend-v2.default.svc.cluster.local", 20),
    ]
    # A version at weight 0 is still a split (it gets nothing; a real Envoy loading it:
    # tests/integration/test_canary.py).
    paused = only_route(envoyconfig.route_configuration([version("backend-v1", "100"), version("backend-v2", "0")]))
    assert [c.weight.value for c in paused.weighted_clusters.clusters] == [100, 0]


def test_a_shared_match_without_a_weight_on_each_goes_to_the_first_target_as_before() -> None:
    for weights in [(None, None), ("80", None), ("0", "0")]:
        shared = [version("backend-v1", weights[0]), version("backend-v2", weights[1])]
        action = only_route(envoyconfig.route_configuration(shared))
        assert action.cluster == "outbound|8080||backend-v1.default.svc.cluster.local", weights
    # A weight on a target that shares nothing changes nothing.
    alone = only_route(envoyconfig.route_configuration([version("backend-v1", "80")]))
    assert alone.cluster == "outbound|8080||backend-v1.default.svc.cluster.local"


def test_a_target_the_gateway_never_picks_in_a_host_is_not_reachable_through_it() -> None:
    reach = envoyconfig.reachable_hosts(
        [version("v1", "100"), version("v2", "0"), version("v3", "5", host="other.example")]
    )
    assert {key.name: hosts for key, hosts in reach.items()} == {
        "v1": ("backend.example",),
        "v2": (),  # weight 0: its host may open while it sits at zero
        "v3": ("other.example",),
    }
    split = envoyconfig.reachable_hosts([version("v1", "80"), version("v2", "20")])
    assert sorted(split.values()) == [("backend.example",), ("backend.example",)]
    unsplit = envoyconfig.reachable_hosts([version("v1", None), version("v2", None)])
    assert {key.name: hosts for key, hosts in unsplit.items()} == {"v1": ("backend.example",), "v2": ()}
