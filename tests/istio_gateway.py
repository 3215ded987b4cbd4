"""Envoy bootstraps shaped like an Istio gateway with zerohop's EnvoyFilter applied, for tests.

Istio applies an EnvoyFilter's patches to the config it generates; no istiod runs here, so this applies
them by hand, exactly as their `match` says: the HTTP_FILTER value goes before the router, each
VIRTUAL_HOST MERGE value is merged into the virtual host named `HOST:PORT`, and the ext_proc cluster is the
outbound cluster name the filter points at. The connection manager is Istio's, not zerohop's: it keeps a
trailing dot in the host (Istio does not set `strip_trailing_host_dot`) unless another EnvoyFilter's
NETWORK_FILTER MERGE says otherwise. What Envoy then does is real.

Two shapes:
- `istio_gateway_bootstrap`: one gateway whose outbound clusters all lead to a second listener of the same
  Envoy (`upstream_port`) that answers 200 with the host's name;
- `istio_gateway_pod_bootstrap`: one gateway *pod* as Istio configures it, for reading its stats the way
  zerohop does: Istio's `stats_config` (its tags, its default inclusion list, plus the `proxyStatsMatcher`
  read from the shipped manifest), the stats listener on `POD_IP:15090` routed to the admin on localhost,
  and outbound EDS clusters whose endpoints the test pushes as istiod would (`push_endpoints`).
  `gateway_pod` runs one such pod.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy import config as envoyconfig
from extproc.envoy import istio
from extproc.providers.local.xds_files import XdsFiles
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
# The shipped manifest whose `proxy.istio.io/config` the test gateway pods run with (not extproc/envoy/istio.py's
# constant: a wrong manifest must fail the tests).
SHIPPED_GATEWAY_STATS = ROOT / "manifests" / "components" / "gateway-stats" / "ingressgateway-patch.yaml"

# Istio's bootstrap `stats_tags` (use_all_default_tags: false): Envoy's cluster tag becomes `cluster_name`,
# whose regex keeps `outbound|PORT|SUBSET|NAME.NAMESPACE.svc.cluster.local` whole.
ISTIO_STATS_TAGS: tuple[tuple[str, str], ...] = (
    ("cluster_name", r"^cluster\.((.+?(\..+?\.svc\.cluster\.local)?)\.)"),
    ("tcp_prefix", r"^tcp\.((.*?)\.)\w+?$"),
    ("response_code", r"_rq(_(\d{3}))$"),
    ("response_code_class", r"_rq(_(\dxx))$"),
    (
        "http_conn_manager_listener_prefix",
        r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)",
    ),
    ("http_conn_manager_prefix", r"^http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("listener_address", r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"),
    ("mongo_prefix", r"^mongo\.(.+?)\.(collection|cmd|cx_|op_|delays_|decoding_)(.*?)$"),
    ("cache", r"(cache\.(.+?)\.)"),
    ("component", r"(component\.(.+?)\.)"),
    ("tag", r"(tag\.(.+?);\.)"),
    ("wasm_filter", r"(wasm_filter\.(.+?)\.)"),
    ("authz_enforce_result", r"rbac(\.(allowed|denied))"),
    ("authz_dry_run_action", r"(\.istio_dry_run_(allow|deny)_)"),
    ("authz_dry_run_result", r"(\.shadow_(allowed|denied))"),
)
# What Istio always includes (pilot-agent's required patterns), around a proxy's own proxyStatsMatcher.
ISTIO_REQUIRED_PREFIXES = ("cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm")
ISTIO_REQUIRED_SUFFIXES = ("rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied")
ISTIO_REQUIRED_REGEXPS = (r"vhost\.*\.route\.*",)

STATS_CLUSTER = "prometheus_stats"
XDS_CLUSTER = "xds-grpc"
ISTIOD_XDS_PORT = 15010


@dataclass(frozen=True, slots=True)
class Split:
    """A weighted route as istiod renders it from a VirtualService whose `route` lists several weighted
    destinations (a Gateway API HTTPRoute with several `backendRefs` is rendered the same way): one
    `weighted_clusters` action, each destination's cluster with its weight, no `total_weight`, and a
    destination of weight 0 left out. A cluster is a Service's `outbound|PORT||...` or a DestinationRule
    subset's `outbound|PORT|SUBSET|...`."""

    weights: tuple[tuple[str, int], ...]  # (cluster, weight)


Destination = tuple[str, str, int] | Split
Routes = Mapping[str, Destination]
"""Gateway host -> the (Service name, namespace, port) it routes to, or a weighted `Split`, as a VirtualService
would."""


def destination_clusters(destination: Destination) -> list[str]:
    """The outbound clusters a route to `destination` may send a request to."""
    if isinstance(destination, Split):
        return [cluster for cluster, weight in destination.weights if weight > 0]
    return [envoyconfig.istio_cluster_name(*destination)]


def route_action(destination: Destination) -> dict[str, Any]:
    """The route action istiod writes for `destination`."""
    if isinstance(destination, Split):
        clusters = [{"name": c, "weight": w} for c, w in destination.weights if w > 0]
        return {"weighted_clusters": {"clusters": clusters}}
    return {"cluster": envoyconfig.istio_cluster_name(*destination)}


# --- zerohop's EnvoyFilter, applied as istiod would ----------------------------------------------------------


def _patches(envoyfilter: Mapping[str, Any], gateway_port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HTTP filter value and, by virtual host name, what the EnvoyFilter does to it on `gateway_port`:
    `{"merge": VALUE, "insert_first": [ROUTE, ...]}`."""
    patches = envoyfilter["spec"]["configPatches"]
    [filter_patch] = [p for p in patches if p["applyTo"] == "HTTP_FILTER"]
    vhost_patches: dict[str, Any] = {}
    for patch in patches:
        if patch["applyTo"] not in ("VIRTUAL_HOST", "HTTP_ROUTE"):
            continue
        assert patch["match"]["context"] == "GATEWAY", patch
        configuration = patch["match"]["routeConfiguration"]
        if configuration["portNumber"] != gateway_port:
            continue
        vhost = vhost_patches.setdefault(configuration["vhost"]["name"], {"merge": {}, "insert_first": []})
        operation = patch["patch"]["operation"]
        if patch["applyTo"] == "VIRTUAL_HOST":
            assert operation == "MERGE", patch
            vhost["merge"].update(patch["patch"]["value"])
        else:
            # Istio applies the INSERT_FIRSTs in order, each at the front: the last one ends up first.
            assert operation == "INSERT_FIRST", patch
            vhost["insert_first"].insert(0, patch["patch"]["value"])
    return filter_patch["patch"]["value"], vhost_patches


def _gateway_hcm(
    route_config: dict[str, Any],
    filter_value: dict[str, Any],
    stat_prefix: str,
    envoyfilters: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Istio's gateway connection manager, with each NETWORK_FILTER MERGE of `envoyfilters` merged in."""
    hcm = envoyconfig.http_connection_manager(
        route_config, [filter_value], stat_prefix=stat_prefix, strip_trailing_host_dot=False
    )
    for document in envoyfilters:
        for patch in document["spec"]["configPatches"]:
            assert patch["applyTo"] == "NETWORK_FILTER", patch
            assert patch["match"]["context"] == "GATEWAY", patch
            assert patch["match"]["listener"]["filterChain"]["filter"]["name"] == envoyconfig.HCM_FILTER, patch
            assert patch["patch"]["operation"] == "MERGE", patch
            value = patch["patch"]["value"]["typed_config"]
            assert value["@type"] == envoyconfig.HCM_TYPE, patch
            hcm["typed_config"].update(value)
    return hcm


def _ext_proc_cluster_name(filter_value: Mapping[str, Any]) -> str:
    name: str = filter_value["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    return name


def _virtual_host(
    host: str, gateway_port: int, cluster: str | dict[str, Any], vhost_patches: Mapping[str, Any]
) -> dict[str, Any]:
    """Istio's virtual host for `host` (named `HOST:PORT`), routing to `cluster` (a name, or a route action),
    with the EnvoyFilter merged."""
    action = {"cluster": cluster} if isinstance(cluster, str) else cluster
    patches = vhost_patches.get(f"{host}:{gateway_port}", {"merge": {}, "insert_first": []})
    vhost: dict[str, Any] = {
        "name": f"{host}:{gateway_port}",
        "domains": [host],
        "routes": [*patches["insert_first"], {"match": {"prefix": "/"}, "route": action}],
    }
    vhost.update(patches["merge"])
    return vhost


def istio_gateway_bootstrap(
    envoyfilter: dict[str, Any],
    hosts: list[str],
    *,
    ext_proc_port: int,
    listen_port: int = 0,
    admin_port: int = 0,
    upstream_port: int = 0,
    gateway_port: int = 80,
    hcm_envoyfilters: Iterable[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One gateway on 127.0.0.1; each host routes to `outbound|80||<first label>.default.svc.cluster.local`,
    a static cluster leading to this Envoy's own `upstream_port` listener, which answers 200 with the host.
    `hcm_envoyfilters`: further EnvoyFilters that MERGE into the gateway's connection manager."""
    filter_value, vhost_patches = _patches(envoyfilter, gateway_port)
    virtual_hosts, upstream_hosts, service_clusters = [], [], []
    for host in hosts:
        service = envoyconfig.istio_cluster_name(host.split(".")[0].lstrip("*") or "wild", "default", 80)
        virtual_hosts.append(_virtual_host(host, gateway_port, service, vhost_patches))
        upstream_hosts.append(
            {
                "name": host,
                "domains": [host],
                "routes": [
                    {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": host}}}
                ],
            }
        )
        service_clusters.append(_static_cluster(service, "127.0.0.1", upstream_port))
    route_config = {"name": f"http.{gateway_port}", "virtual_hosts": virtual_hosts}
    hcm = _gateway_hcm(route_config, filter_value, "gateway", hcm_envoyfilters)
    upstream = envoyconfig.http_connection_manager({"virtual_hosts": upstream_hosts}, [], stat_prefix="upstream")
    return {
        "admin": {"address": _address("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [
                envoyconfig.listener("gateway", "127.0.0.1", listen_port, hcm),
                envoyconfig.listener("upstream", "127.0.0.1", upstream_port, upstream),
            ],
            "clusters": [
                envoyconfig.ext_proc_cluster("127.0.0.1", ext_proc_port, name=_ext_proc_cluster_name(filter_value)),
                *service_clusters,
            ],
        },
    }


def _address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    endpoint = {"endpoint": {"address": _address(host, port)}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }


# --- Istio's stats configuration ------------------------------------------------------------------------------


def shipped_proxy_config(manifest: Path = SHIPPED_GATEWAY_STATS) -> str:
    """The `proxy.istio.io/config` value the shipped patch puts on the ingress gateway's pod template."""
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d is not None]
    [patch] = documents
    value: str = patch["spec"]["template"]["metadata"]["annotations"][istio.PROXY_CONFIG_ANNOTATION]
    return value


def istio_stats_matcher(proxy_config: str | None) -> dict[str, Any]:
    """The bootstrap `stats_matcher` Istio writes for a proxy whose ProxyConfig YAML is `proxy_config` (None:
    no proxyStatsMatcher), in Istio's order: `reporter=`, prefixes, suffixes and regexps (the proxy's own
    first, then Istio's required ones), then `component` and `istio`. Regexps become `safe_regex` patterns."""
    matcher = (yaml.safe_load(proxy_config) or {}).get("proxyStatsMatcher", {}) if proxy_config else {}
    prefixes = [*matcher.get("inclusionPrefixes", []), *ISTIO_REQUIRED_PREFIXES]
    suffixes = [*matcher.get("inclusionSuffixes", []), *ISTIO_REQUIRED_SUFFIXES]
    regexps = [*matcher.get("inclusionRegexps", []), *ISTIO_REQUIRED_REGEXPS]
    patterns = [
        {"prefix": "reporter="},
        *({"prefix": p} for p in prefixes),
        *({"suffix": s} for s in suffixes),
        *({"safe_regex": {"regex": r}} for r in regexps),
        {"prefix": "component"},
        {"prefix": "istio"},
    ]
    return {"inclusion_list": {"patterns": patterns}}


def istio_stats_config(proxy_config: str | None) -> dict[str, Any]:
    """Istio's bootstrap `stats_config`: its own tags only, and its inclusion list."""
    return {
        "use_all_default_tags": False,
        "stats_tags": [{"tag_name": name, "regex": regex} for name, regex in ISTIO_STATS_TAGS],
        "stats_matcher": istio_stats_matcher(proxy_config),
    }


def _stats_listener(pod_ip: str, stats_port: int) -> dict[str, Any]:
    """Istio's `:15090` listener: `/stats/prometheus` (query string and all) to the admin, nothing else."""
    route_config = {
        "virtual_hosts": [
            {
                "name": "backend",
                "domains": ["*"],
                "routes": [{"match": {"prefix": istio.GATEWAY_STATS_PATH}, "route": {"cluster": STATS_CLUSTER}}],
            }
        ]
    }
    hcm = envoyconfig.http_connection_manager(route_config, [], stat_prefix="stats")
    return envoyconfig.listener(f"{pod_ip}_{stats_port}", pod_ip, stats_port, hcm)


# --- one gateway pod --------------------------------------------------------------------------------------------


def gateway_clusters(routes: Routes) -> list[str]:
    """The outbound clusters a gateway with these routes has, one per Service port, sorted."""
    return sorted({cluster for destination in routes.values() for cluster in destination_clusters(destination)})


def push_endpoints(xds_dir: Path, cluster: str, endpoints: Iterable[tuple[str, int]]) -> None:
    """Play istiod: give one pod's gateway the ready endpoints of `cluster` (its EDS file, read on rename)."""
    XdsFiles(xds_dir).write_endpoints(cluster, endpoints)


def prepare_endpoints(xds_dir: Path, routes: Routes) -> None:
    """Every outbound cluster with no endpoints yet (targets at zero): the EDS files exist before Envoy starts."""
    for cluster in gateway_clusters(routes):
        push_endpoints(xds_dir, cluster, [])


def gateway_route_configuration(
    envoyfilter: Mapping[str, Any], routes: Routes, gateway_port: int = 80
) -> dict[str, Any]:
    """The route configuration `http.PORT` istiod gives a gateway pod for `routes` with `envoyfilter` applied."""
    _, vhost_patches = _patches(envoyfilter, gateway_port)
    virtual_hosts = [
        _virtual_host(host, gateway_port, route_action(destination), vhost_patches)
        for host, destination in sorted(routes.items())
    ]
    return {"name": f"http.{gateway_port}", "virtual_hosts": virtual_hosts}


def istio_gateway_pod_bootstrap(
    envoyfilter: Mapping[str, Any],
    routes: Routes,
    *,
    pod_ip: str,
    xds_dir: Path,
    ext_proc_port: int,
    admin_port: int,
    listen_port: int,
    stats_port: int = istio.GATEWAY_STATS_PORT,
    gateway_port: int = 80,
    stats_inclusion: bool = True,
    manifest: Path = SHIPPED_GATEWAY_STATS,
    dynamic_routes: XdsFiles | None = None,
) -> dict[str, Any]:
    """One Istio gateway pod at `pod_ip` (several can run side by side on 127.0.0.2, 127.0.0.3, ... sharing
    `stats_port`; each needs its own `admin_port` and `xds_dir`).

    - admin on 127.0.0.1:`admin_port` only, as in the pod (localhost:15000);
    - stats listener on `pod_ip:stats_port`, `/stats/prometheus` routed to the admin (cluster `prometheus_stats`);
    - gateway listener on `pod_ip:listen_port`: route config `http.PORT`, virtual hosts `HOST:PORT`, each host
      to its `outbound|PORT||SVC.NS.svc.cluster.local` EDS cluster read from `xds_dir` (see `push_endpoints`;
      call `prepare_endpoints` first), with zerohop's EnvoyFilter applied (ext_proc to 127.0.0.1:`ext_proc_port`);
    - a static `xds-grpc` cluster (never dialled), whose stats Istio always includes;
    - Istio's stats_config with the `proxy.istio.io/config` of `manifest`, or without it (`stats_inclusion=False`);
    - `dynamic_routes` (the writer of `xds_dir`'s route file): the route config comes by RDS, as istiod sends
      it, so a changed EnvoyFilter's VIRTUAL_HOST and HTTP_ROUTE patches reach the running pod (`push_routes`).
    """
    filter_value, _ = _patches(envoyfilter, gateway_port)
    route_config = gateway_route_configuration(envoyfilter, routes, gateway_port)
    if dynamic_routes is not None:
        dynamic_routes.write_routes(route_config)
        route_config = {
            "route_config_name": route_config["name"],
            "config_source": envoyconfig.file_source(xds_dir / envoyconfig.RDS_FILE),
        }
    hcm = _gateway_hcm(route_config, filter_value, f"outbound_0.0.0.0_{gateway_port}")
    return {
        # path_config_source (the EDS files) is refused unless the node has an id and a cluster.
        "node": {"id": f"router~{pod_ip}~istio-ingressgateway.istio-system", "cluster": "istio-ingressgateway"},
        "stats_config": istio_stats_config(shipped_proxy_config(manifest) if stats_inclusion else None),
        "admin": {"address": _address("127.0.0.1", admin_port)},
        "static_resources": {
            "listeners": [
                _stats_listener(pod_ip, stats_port),
                envoyconfig.listener(f"0.0.0.0_{gateway_port}", pod_ip, listen_port, hcm),
            ],
            "clusters": [
                _static_cluster(STATS_CLUSTER, "127.0.0.1", admin_port),
                _static_cluster(XDS_CLUSTER, "127.0.0.1", ISTIOD_XDS_PORT),
                envoyconfig.ext_proc_cluster("127.0.0.1", ext_proc_port, name=_ext_proc_cluster_name(filter_value)),
                *(envoyconfig.eds_cluster(cluster, xds_dir) for cluster in gateway_clusters(routes)),
            ],
        },
    }


@dataclass(frozen=True, slots=True)
class GatewayPod:
    """Where one running test gateway pod listens, and where istiod (the test) pushes its endpoints."""

    pod_ip: str
    stats_port: int
    listen_port: int
    admin_port: int
    xds_dir: Path
    routes: Routes = field(default_factory=dict)
    xds: XdsFiles | None = None  # with dynamic routes: the writer of its route file (one version sequence)
    envoy: EnvoyProcess | None = None  # the pod's Envoy (a test may restart it)

    def stats_url(self, stat_filter: str | None = None) -> str:
        """`http://POD_IP:STATS_PORT/stats/prometheus`, with `?filter=` (URL-encoded) when given."""
        query = "" if stat_filter is None else "?filter=" + quote(stat_filter, safe="")
        return f"http://{self.pod_ip}:{self.stats_port}{istio.GATEWAY_STATS_PATH}{query}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.pod_ip}:{self.listen_port}"

    def push(self, cluster: str, endpoints: Iterable[tuple[str, int]]) -> None:
        push_endpoints(self.xds_dir, cluster, endpoints)

    def push_routes(self, envoyfilter: Mapping[str, Any], gateway_port: int = 80) -> None:
        """Play istiod after an EnvoyFilter change: this pod's route configuration with `envoyfilter` applied
        (a pod started with `dynamic_routes`)."""
        assert self.xds is not None, "started without dynamic_routes"
        self.xds.write_routes(gateway_route_configuration(envoyfilter, self.routes, gateway_port))


@asynccontextmanager
async def gateway_pod(
    envoyfilter: Mapping[str, Any],
    routes: Routes,
    *,
    pod_ip: str,
    workdir: Path,
    ext_proc_port: int,
    stats_port: int,
    listen_port: int | None = None,
    stats_inclusion: bool = True,
    manifest: Path = SHIPPED_GATEWAY_STATS,
    dynamic_routes: bool = False,
) -> AsyncIterator[GatewayPod]:
    """Run one gateway pod (`istio_gateway_pod_bootstrap`) under `workdir`, every cluster at zero endpoints."""
    xds = XdsFiles(workdir / "xds") if dynamic_routes else None
    pod = GatewayPod(pod_ip, stats_port, listen_port or free_port(), free_port(), workdir / "xds", dict(routes), xds)
    prepare_endpoints(pod.xds_dir, routes)
    bootstrap = istio_gateway_pod_bootstrap(
        envoyfilter,
        routes,
        pod_ip=pod_ip,
        xds_dir=pod.xds_dir,
        ext_proc_port=ext_proc_port,
        admin_port=pod.admin_port,
        listen_port=pod.listen_port,
        stats_port=stats_port,
        stats_inclusion=stats_inclusion,
        manifest=manifest,
        dynamic_routes=xds,
    )
    process = EnvoyProcess(bootstrap, pod.admin_port, workdir=workdir / "envoy")
    async with process:
        yield dataclasses.replace(pod, envoy=process)
