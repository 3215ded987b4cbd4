"""The one place zerohop's Envoy configuration is written: the ext_proc filter, the gRPC cluster Envoy uses to
reach zerohop, and (for plain Envoy) clusters, routes and a bootstrap built from the HTTPScaledObjects.

`envoyfilter/` (Istio), `zerohop envoy-bootstrap`, the demo, the integration tests and bench/ all derive
their configuration from these functions, so what is tested is what ships. Everything is plain dicts in
Envoy's proto3 JSON form; tests parse each into its exact proto type with unknown fields rejected.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extproc.core.httpso import ScaledTarget, TargetKey

EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
EXT_PROC_PER_ROUTE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
HCM_FILTER = "envoy.filters.network.http_connection_manager"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_FILTER = "envoy.filters.http.router"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_PROTOCOL_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

OTEL_TRACER = "envoy.tracers.opentelemetry"
OTEL_TRACER_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"

LOCAL_EXT_PROC_CLUSTER = "zerohop_ext_proc"
LOCAL_OTLP_CLUSTER = "zerohop_otlp"
# The attributes zerohop's filter asks for arrive in ProcessingRequest.attributes under the filter's name.
ATTRIBUTES_KEY = EXT_PROC_FILTER
# Asked for with request headers: the upstream cluster the gateway chose (the route table's first rule).
CLUSTER_ATTRIBUTE = "xds.cluster_name"
# Asked for by the sidecar filter only (east-west, istio.sidecar_envoyfilter): its presence says the request
# came through a client's sidecar, not a gateway, so the warm path does not take it for one of the gateways'.
MESH_ATTRIBUTE = "xds.listener_direction"
# Sent with response headers zerohop asked for: tells the gateway's own "no healthy upstream" from the app's 503.
CODE_DETAILS_ATTRIBUTE = "response.code_details"
# A held request whose hold ran out goes to its target's fallback (coldStartTimeoutFailoverRef): zerohop sets
# this dynamic metadata (namespace, key) to the fallback's cluster name and clears the route cache, and a route
# matching it, first in the virtual host, sends the request there. Clients cannot set dynamic metadata, so no
# client can force the fallback; the request header only tells the fallback app (and logs) why it got it.
FAILOVER_METADATA_NAMESPACE = "zerohop"
FAILOVER_METADATA_KEY = "failover"
FAILOVER_HEADER = "x-zerohop-failover"

# The warm path's probe (Istio): a request carrying PROBE_HEADER to a managed virtual host is answered by the
# gateway's own probe route (GATE_HEADER: GATE_OPEN) when ext_proc is off there, and by zerohop (GATE_GATED) when it
# is on, since ext_proc sees the request before the router does. Neither answer reaches the app.
PROBE_HEADER = "x-zerohop-probe"
GATE_HEADER = "x-zerohop-gate"
GATE_OPEN = "open"
GATE_GATED = "gated"
PROBE_ROUTE_NAME = "zerohop-probe"
# Warm answers take well under a millisecond; past this Envoy stops waiting (and fails open, see below).
MESSAGE_TIMEOUT = 1.0
# Every held request is one open stream to zerohop; zerohop's own caps must be the limit, not Envoy's 1024.
EXT_PROC_MAX_STREAMS = 100_000
# zerohop's --hold-timeout unless told otherwise; every generated config assumes it.
DEFAULT_HOLD_TIMEOUT = 60.0
# A held request asks Envoy to wait its hold budget plus processor.TIMEOUT_MARGIN; the filter's ceiling for that
# ask (max_message_timeout) leaves this much more, so zerohop's own 504 always answers before Envoy gives up.
MAX_MESSAGE_TIMEOUT_MARGIN = 5.0


def max_message_timeout_for(hold_timeout: float) -> float:
    """The ext_proc filter's `max_message_timeout` for a zerohop holding requests up to `hold_timeout`."""
    return hold_timeout + MAX_MESSAGE_TIMEOUT_MARGIN


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


def processing_mode() -> dict[str, str]:
    """Headers only, one round trip; zerohop asks per request (mode_override) for the response headers."""
    return {
        "request_header_mode": "SEND",
        "response_header_mode": "SKIP",
        "request_body_mode": "NONE",
        "response_body_mode": "NONE",
        "request_trailer_mode": "SKIP",
        "response_trailer_mode": "SKIP",
    }


def ext_proc_config(
    cluster_name: str,
    *,
    max_message_timeout: float,
    failure_mode_allow: bool = True,
    message_timeout: float = MESSAGE_TIMEOUT,
    mesh: bool = False,
) -> dict[str, Any]:
    """The `ExternalProcessor` filter config (typed_config) for a gateway in front of zerohop.

    `failure_mode_allow: true`: if zerohop is unreachable or slow, warm traffic still flows (a cold target
    then answers 503 from Envoy instead of being held) — availability over scale-from-zero.
    `max_message_timeout` must cover the longest hold (zerohop extends each held request's wait once):
    `max_message_timeout_for(hold_timeout)`. `mesh`: for a client's sidecar, not a gateway (MESH_ATTRIBUTE).
    """
    return {
        "@type": EXT_PROC_TYPE,
        "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}},
        "failure_mode_allow": failure_mode_allow,
        "processing_mode": processing_mode(),
        "allow_mode_override": True,
        "message_timeout": _seconds(message_timeout),
        "max_message_timeout": _seconds(max_message_timeout),
        "request_attributes": [CLUSTER_ATTRIBUTE, MESH_ATTRIBUTE] if mesh else [CLUSTER_ATTRIBUTE],
        "response_attributes": [CODE_DETAILS_ATTRIBUTE],
        "metadata_options": {"receiving_namespaces": {"untyped": [FAILOVER_METADATA_NAMESPACE]}},
        "stat_prefix": "zerohop",
    }


def ext_proc_http_filter(cluster_name: str, *, max_message_timeout: float, **options: Any) -> dict[str, Any]:
    """The HCM `http_filters` entry; goes right before the router."""
    return {
        "name": EXT_PROC_FILTER,
        "typed_config": ext_proc_config(cluster_name, max_message_timeout=max_message_timeout, **options),
    }


def http2_protocol_options() -> dict[str, Any]:
    """HTTP/2 to zerohop with PING keepalive, so a dead zerohop is noticed within seconds, not at TCP timeout."""
    return {
        HTTP_PROTOCOL_OPTIONS: {
            "@type": HTTP_PROTOCOL_OPTIONS_TYPE,
            "explicit_http_config": {
                "http2_protocol_options": {"connection_keepalive": {"interval": "10s", "timeout": "5s"}}
            },
        }
    }


def circuit_breakers() -> dict[str, Any]:
    limit = EXT_PROC_MAX_STREAMS
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": 1024,
                "max_pending_requests": limit,
                "max_requests": limit,
            }
        ]
    }


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def ext_proc_cluster(host: str, port: int, name: str = LOCAL_EXT_PROC_CLUSTER) -> dict[str, Any]:
    """A cluster for zerohop's ext_proc port on plain Envoy (Istio uses its own outbound cluster)."""
    return {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": http2_protocol_options(),
        "circuit_breakers": circuit_breakers(),
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 30, "keepalive_interval": 5}},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}],
        },
    }


def otlp_cluster(host: str, port: int, name: str = LOCAL_OTLP_CLUSTER) -> dict[str, Any]:
    """A cluster for an OpenTelemetry collector's OTLP/gRPC port (HTTP/2, plaintext), for Envoy's tracer."""
    return {
        "name": name,
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": http2_protocol_options(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}],
        },
    }


def otel_tracing(cluster_name: str = LOCAL_OTLP_CLUSTER, service_name: str = "gateway") -> dict[str, Any]:
    """The connection manager's `tracing`: Envoy's OpenTelemetry tracer, exporting OTLP/gRPC through
    `cluster_name`. Envoy then traces each request (100% unless the client's traceparent says otherwise)
    and sends `traceparent` to zerohop in the ext_proc stream's metadata, so held requests' spans join."""
    return {
        "provider": {
            "name": OTEL_TRACER,
            "typed_config": {
                "@type": OTEL_TRACER_TYPE,
                "grpc_service": {"envoy_grpc": {"cluster_name": cluster_name}},
                "service_name": service_name,
            },
        }
    }


# --- Plain Envoy in front of HTTPScaledObjects (local provider, demo, tests) ---------------------------------


def istio_cluster_name(service: str, namespace: str, port: int | str) -> str:
    """Istio's name for the outbound cluster of a Service port; zerohop uses it on plain Envoy too."""
    return f"outbound|{port}||{service}.{namespace}.svc.cluster.local"


def target_cluster_name(target: ScaledTarget) -> str:
    ref = target.scale_target
    return istio_cluster_name(ref.service, target.key.namespace, ref.port if ref.port else ref.port_name or "")


def eds_file_name(cluster_name: str) -> str:
    """A file name for a cluster's EDS file (cluster names contain `|`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", cluster_name).strip("_") + ".json"


def file_source(path: Path) -> dict[str, Any]:
    """An xDS config source reading `path`, reloaded when a new file is renamed into its directory."""
    return {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(path), "watched_directory": {"path": str(path.parent)}},
    }


def eds_cluster(cluster_name: str, xds_dir: Path) -> dict[str, Any]:
    """A cluster whose endpoints Envoy reads from the EDS file zerohop rewrites as replicas change."""
    return {
        "name": cluster_name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {
            "service_name": cluster_name,
            "eds_config": file_source(xds_dir / eds_file_name(cluster_name)),
        },
    }


# A canary on plain Envoy: targets whose routes match the same requests (host, path prefix, headers) and each
# carry this annotation share those routes by weight, one route with `weighted_clusters`. Envoy picks the
# cluster; zerohop reads the one it picked (`xds.cluster_name`), so each target is woken, counted and scaled by
# its own share. An annotation, not a spec field: the add-on's schema has no weight, and on Kubernetes the
# HTTPRoute or VirtualService does the split (the annotation is ignored there).
WEIGHT_ANNOTATION = "zerohop.dev/weight"
MAX_WEIGHT = 1_000_000


def route_weight(target: ScaledTarget) -> int | None:
    """The target's `zerohop.dev/weight` (None without one). Raises ValueError unless it is an integer
    0..MAX_WEIGHT."""
    value = target.annotations.get(WEIGHT_ANNOTATION)
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or int(text) > MAX_WEIGHT:
        raise ValueError(
            f"metadata.annotations[{WEIGHT_ANNOTATION}]: expected an integer 0..{MAX_WEIGHT}, got {value!r}"
        )
    return int(text)


def _weight_or_none(target: ScaledTarget) -> int | None:
    try:
        return route_weight(target)
    except ValueError:
        return None  # the config loader reports it; rendering never fails on it


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One Envoy route of a plain-Envoy gateway: what it matches and which cluster it sends to; `weight` is the
    target's share of a match it shares with other targets (`zerohop.dev/weight`, None: not set)."""

    host: str
    prefix: str
    headers: tuple[tuple[str, str | None], ...]
    cluster: str
    timeout: float | None = None
    weight: int | None = None
    target: TargetKey | None = None

    @property
    def match_key(self) -> tuple[str, str, tuple[tuple[str, str | None], ...]]:
        return self.host, self.prefix, self.headers


def target_routes(targets: Iterable[ScaledTarget]) -> list[RouteSpec]:
    routes = []
    for target in targets:
        cluster = target_cluster_name(target)
        weight = _weight_or_none(target)
        for rule in target.routing_rules:
            headers = tuple((h.name, h.value) for h in rule.headers)
            for host in rule.hosts or ("*",):
                for prefix in rule.path_prefixes or ("/",):
                    routes.append(
                        RouteSpec(host, prefix, headers, cluster, target.response_header_timeout, weight, target.key)
                    )
    return routes


def split_routes(specs: Iterable[RouteSpec]) -> list[list[RouteSpec]]:
    """`specs` grouped by what they match, in first-seen order: a group of several is a shared match. Its
    routes are split by weight when every one carries a weight and they sum above 0 (`is_split`); otherwise
    the first takes every request, as Envoy's first matching route always did."""
    groups: dict[tuple[str, str, tuple[tuple[str, str | None], ...]], list[RouteSpec]] = {}
    for spec in specs:
        group = groups.setdefault(spec.match_key, [])
        if all(other.cluster != spec.cluster for other in group):
            group.append(spec)
    return list(groups.values())


def is_split(group: list[RouteSpec]) -> bool:
    """Whether a group of routes sharing one match is split by weight (see `split_routes`)."""
    weights = [spec.weight for spec in group]
    return len(group) > 1 and None not in weights and sum(w or 0 for w in weights) > 0


def _route(group: list[RouteSpec]) -> dict[str, Any]:
    spec = group[0]
    # Whole path segments, as zerohop's own matcher (`/api` is not `/apix`); Envoy rejects a
    # path_separated_prefix ending in `/`, and `/` is every path anyway.
    match: dict[str, Any] = {"path_separated_prefix": spec.prefix} if spec.prefix != "/" else {"prefix": "/"}
    if spec.headers:
        match["headers"] = [
            {"name": name, "string_match": {"exact": value}}
            if value is not None
            else {"name": name, "present_match": True}
            for name, value in spec.headers
        ]
    action: dict[str, Any] = {"retry_policy": {"retry_on": "connect-failure,refused-stream", "num_retries": 2}}
    if is_split(group):
        # Envoy picks one cluster per request by weight (the weights' sum is the total); a 0 gets no requests.
        action["weighted_clusters"] = {
            "clusters": [{"name": s.cluster, "weight": s.weight} for s in sorted(group, key=lambda s: s.cluster)]
        }
        timeouts = [s.timeout for s in group if s.timeout is not None]
        timeout = max(timeouts) if timeouts else None
    else:
        action["cluster"] = spec.cluster
        timeout = spec.timeout
    if timeout is not None:
        action["timeout"] = _seconds(timeout)
    return {"match": match, "route": action}


def failover_cluster_name(target: ScaledTarget, port: int | None = None) -> str | None:
    """The cluster of the target's fallback Service (None without one), named as its own cluster is: the
    fallback's `port` (or portName, unless a resolved `port` is given) in the target's namespace."""
    ref = target.failover
    if ref is None:
        return None
    return istio_cluster_name(ref.service, target.key.namespace, port or ref.port or ref.port_name or "")


def failover_route(target: str, cluster: str, timeout: float | None = None) -> dict[str, Any]:
    """The route, first in each virtual host of `target` (`namespace/name`), that sends a request zerohop let
    go to the fallback (dynamic metadata FAILOVER_METADATA_*, which only zerohop sets) to `cluster`."""
    matcher = {
        "filter": FAILOVER_METADATA_NAMESPACE,
        "path": [{"key": FAILOVER_METADATA_KEY}],
        "value": {"string_match": {"exact": target}},
    }
    action: dict[str, Any] = {"cluster": cluster}
    if timeout is not None:
        action["timeout"] = _seconds(timeout)
    return {"match": {"prefix": "/", "dynamic_metadata": [matcher]}, "route": action}


def with_failover_routes(hosts: list[dict[str, Any]], targets: Iterable[ScaledTarget]) -> list[dict[str, Any]]:
    """`hosts` (from `virtual_hosts`) with each target's failover route first in each of its virtual hosts."""
    first: dict[str, list[dict[str, Any]]] = {}
    for target in sorted(targets, key=lambda t: t.key):
        cluster = failover_cluster_name(target)
        if cluster is not None:
            for host in dict.fromkeys(h for rule in target.routing_rules for h in rule.hosts or ("*",)):
                route = failover_route(str(target.key), cluster, target.response_header_timeout)
                first.setdefault(host, []).append(route)
    if not first:
        return hosts
    return [
        {**vhost, "routes": first[vhost["domains"][0]] + vhost["routes"]} if vhost["domains"][0] in first else vhost
        for vhost in hosts
    ]


def probe_route() -> dict[str, Any]:
    """The route put first in each managed virtual host: a probe (PROBE_HEADER present) is answered 204 by the
    gateway itself, saying the ext_proc gate is off (GATE_OPEN), unless ext_proc answers it first."""
    return {
        "name": PROBE_ROUTE_NAME,
        "match": {"prefix": "/", "headers": [{"name": PROBE_HEADER, "present_match": True}]},
        "direct_response": {"status": 204},
        "response_headers_to_add": [
            {"header": {"key": GATE_HEADER, "value": GATE_OPEN}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
    }


def target_hosts(target: ScaledTarget) -> tuple[str, ...]:
    """The hosts (one virtual host each) a target is reachable through on a plain-Envoy gateway."""
    return target.hosts or ("*",)


def reachable_hosts(targets: Iterable[ScaledTarget]) -> dict[TargetKey, tuple[str, ...]]:
    """Per target, the virtual hosts through which the gateway may send it a request: `target_hosts`, less
    the hosts where each of its routes is one Envoy never picks it for (weight 0 in a split, or a shared
    match it does not come first in). A canary at weight 0 then does not keep its host gated (the warm path
    opens a virtual host only once every target reachable through it is warm)."""
    targets = list(targets)
    served: dict[TargetKey, set[str]] = {}
    listed: dict[TargetKey, set[str]] = {}
    for group in split_routes(target_routes(targets)):
        split = is_split(group)
        for index, spec in enumerate(group):
            if spec.target is None:
                continue
            listed.setdefault(spec.target, set()).add(spec.host)
            if (spec.weight or 0) > 0 if split else index == 0:
                served.setdefault(spec.target, set()).add(spec.host)
    return {
        t.key: tuple(h for h in target_hosts(t) if h in served.get(t.key, ()) or h not in listed.get(t.key, ()))
        for t in targets
    }


ROUTE_FILTER_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
# On a virtual host whose targets are all warm (the warm path is open): Envoy does not create the ext_proc filter
# for its requests at all. The generic route `FilterConfig{disabled}` is read when Envoy builds a request's filter
# chain; the filter's own `ExtProcPerRoute{disabled}` is read only by a filter already created for the request, so
# every open request would still pay for the filter's construction (the bench measured that as most of setup G's
# gap to a plain gateway). Gated hosts carry nothing and get the HCM's filter, enabled, as every bootstrap has it.
EXT_PROC_SKIPPED = {EXT_PROC_FILTER: {"@type": ROUTE_FILTER_CONFIG_TYPE, "disabled": True}}


def virtual_hosts(
    routes: Iterable[RouteSpec],
    fallback: Mapping[str, Any] | None = None,
    open_hosts: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Virtual hosts for `routes` (one per host, longest prefix first; routes of several targets matching the
    same requests are one route, split by their weights: `split_routes`) plus a default `*` host.

    The default host answers 404 like the add-on's interceptor does for unknown hosts, unless `fallback`
    gives it a route action (e.g. `{"cluster": "legacy"}`) or a catch-all target already uses `*`.
    Hosts in `open_hosts` skip the ext_proc filter (route `FilterConfig{disabled: true}`: never created there).
    """
    by_host: dict[str, list[list[RouteSpec]]] = {}
    for group in split_routes(routes):
        by_host.setdefault(group[0].host, []).append(group)
    hosts = []
    for host, groups in sorted(by_host.items()):
        groups.sort(key=lambda g: (-len(g[0].prefix), -len(g[0].headers)))
        vhost: dict[str, Any] = {
            "name": "zerohop_" + re.sub(r"[^A-Za-z0-9]+", "_", host).strip("_") if host != "*" else "zerohop_any",
            "domains": [host],
            "routes": [_route(group) for group in groups],
        }
        if host in open_hosts:
            vhost["typed_per_filter_config"] = EXT_PROC_SKIPPED
        hosts.append(vhost)
    if "*" not in by_host:
        default_route: dict[str, Any] = {"match": {"prefix": "/"}}
        if fallback is not None:
            default_route["route"] = dict(fallback)
        else:
            default_route["direct_response"] = {
                "status": 404,
                "body": {"inline_string": "no route for this host\n"},
            }
        hosts.append({"name": "default", "domains": ["*"], "routes": [default_route]})
    return hosts


ROUTE_CONFIG_NAME = "zerohop_routes"
CDS_FILE = "cds.json"
RDS_FILE = "rds.json"


def route_configuration(
    targets: Iterable[ScaledTarget],
    fallback: Mapping[str, Any] | None = None,
    open_hosts: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The gateway's RouteConfiguration for plain Envoy: each target's hosts and paths to its cluster; the
    hosts in `open_hosts` without ext_proc (the warm path)."""
    targets = list(targets)
    hosts = with_failover_routes(virtual_hosts(target_routes(targets), fallback, open_hosts), targets)
    return {"name": ROUTE_CONFIG_NAME, "virtual_hosts": hosts}


def target_clusters(targets: Iterable[ScaledTarget], xds_dir: Path) -> list[dict[str, Any]]:
    clusters: dict[str, dict[str, Any]] = {}
    for target in targets:
        name = target_cluster_name(target)
        clusters.setdefault(name, eds_cluster(name, xds_dir))
    return [clusters[name] for name in sorted(clusters)]


def http_connection_manager(
    routes: dict[str, Any],
    http_filters: list[dict[str, Any]],
    stat_prefix: str = "gateway",
    *,
    strip_trailing_host_dot: bool = True,
) -> dict[str, Any]:
    """An HCM with `http_filters` before the router. `routes` is a RouteConfiguration, or an `rds` block.

    Hosts are matched without port or trailing dot (`a.example.com.:8080` is `a.example.com`), as zerohop's
    own matching compares them; `strip_trailing_host_dot=False` only to model a gateway that keeps the dot.
    """
    route_key = "rds" if "config_source" in routes else "route_config"
    return {
        "name": HCM_FILTER,
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "strip_any_host_port": True,
            "strip_trailing_host_dot": strip_trailing_host_dot,
            route_key: routes,
            "http_filters": [*http_filters, {"name": ROUTER_FILTER, "typed_config": {"@type": ROUTER_TYPE}}],
        },
    }


def listener(name: str, host: str, port: int, hcm: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "address": _socket_address(host, port), "filter_chains": [{"filters": [hcm]}]}


@dataclass(frozen=True, slots=True)
class GatewayPorts:
    """Where a plain-Envoy gateway listens and where it finds zerohop."""

    listen_host: str
    listen_port: int
    admin_port: int
    ext_proc_host: str
    ext_proc_port: int


def local_bootstrap(
    ports: GatewayPorts, xds_dir: Path, *, max_message_timeout: float, otlp: tuple[str, int] | None = None
) -> dict[str, Any]:
    """A complete plain-Envoy gateway for the local provider: one listener with the ext_proc filter before
    the router; routes (RDS), target clusters (CDS) and their endpoints (EDS) all read from the files the
    local provider keeps up to date in `xds_dir`, so config reloads and scaling reach Envoy without restart.
    With `otlp` (a collector's OTLP/gRPC host and port): Envoy's OpenTelemetry tracer and its cluster."""
    rds = {"route_config_name": ROUTE_CONFIG_NAME, "config_source": file_source(xds_dir / RDS_FILE)}
    filters = [ext_proc_http_filter(LOCAL_EXT_PROC_CLUSTER, max_message_timeout=max_message_timeout)]
    hcm = http_connection_manager(rds, filters)
    clusters = [ext_proc_cluster(ports.ext_proc_host, ports.ext_proc_port)]
    if otlp is not None:
        hcm["typed_config"]["tracing"] = otel_tracing()
        clusters.append(otlp_cluster(*otlp))
    return {
        # path_config_source is refused unless the node has an id and a cluster.
        "node": {"id": "zerohop-gateway", "cluster": "zerohop-gateway"},
        "admin": {"address": _socket_address("127.0.0.1", ports.admin_port)},
        "dynamic_resources": {"cds_config": file_source(xds_dir / CDS_FILE)},
        "static_resources": {
            "listeners": [listener("gateway", ports.listen_host, ports.listen_port, hcm)],
            "clusters": clusters,
        },
    }
