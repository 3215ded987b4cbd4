"""Istio integration: the EnvoyFilters that insert zerohop's ext_proc filter into gateways and sidecars.

Two shapes, both built on `config.ext_proc_http_filter` (what the demo, tests and bench run):
- unscoped: the filter runs for every request through the gateway;
- scoped to hosts: the filter is inserted disabled, and only the virtual hosts HTTPScaledObjects name
  (`HOST:PORT`, Istio's virtual host names) enable it with an `ExtProcPerRoute`, so requests to every
  other host never reach zerohop.
Either shape may carry failover routes (`failover_patches`): for each HTTPScaledObject with a
`coldStartTimeoutFailoverRef`, a route inserted first in each of its virtual hosts that sends the requests
zerohop lets go to the fallback (config.failover_route) to the fallback Service's outbound cluster.
`sidecar_envoyfilter` is the east-west variant: the same filter in the outbound listeners of selected client
workloads' sidecars (`SIDECAR_OUTBOUND`), enabled on the managed Services' virtual hosts.
`envoyfilter/*.yaml` is this module's output, kept in sync by a test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import yaml

from extproc.core.httpso import ScaledTarget
from extproc.envoy.config import (
    DEFAULT_HOLD_TIMEOUT,
    EXT_PROC_FILTER,
    EXT_PROC_PER_ROUTE_TYPE,
    HCM_FILTER,
    PROBE_ROUTE_NAME,
    ROUTER_FILTER,
    ext_proc_http_filter,
    failover_cluster_name,
    failover_route,
    istio_cluster_name,
    max_message_timeout_for,
    probe_route,
)
from extproc.envoy.stats import PROMETHEUS_PATH

# What the manifests install, and so the defaults of `zerohop serve` and `zerohop envoyfilter`.
EXT_PROC_PORT = 9000  # the port of zerohop's Service the gateway's ext_proc cluster points at
SERVICE_NAME = "zerohop"
ZEROHOP_NAMESPACE = "zerohop-system"
GATEWAY_NAMESPACE = "istio-system"  # Istio's root namespace: an EnvoyFilter there reaches gateways everywhere
INGRESS_GATEWAY_SELECTOR = {"istio": "ingressgateway"}
GATEWAY_PORTS = (80, 443)
GATEWAY_API_LABEL = "gateway.networking.k8s.io/gateway-name"
ENVOYFILTER_NAME = "zerohop-ext-proc"
# Applied after patches with the default priority 0 (Istio's own and most users'), so the router is in place.
PRIORITY = 10
LABELS = {"app.kubernetes.io/name": "zerohop", "app.kubernetes.io/component": "gateway-filter"}
SIDECAR_CONTEXT = "SIDECAR_OUTBOUND"  # the EnvoyFilter context of a sidecar's outbound listeners (east-west)


def parse_selector(text: str) -> dict[str, str]:
    """`key=value,key2=value2` into a label map (the --gateway-selector format)."""
    labels = {}
    for part in text.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not key:
            raise ValueError(f"expected KEY=VALUE[,KEY=VALUE], got {text!r}")
        labels[key.strip()] = value.strip()
    return labels


def format_selector(labels: Mapping[str, str]) -> str:
    """A label map as `key=value,key2=value2` (the --gateway-selector format)."""
    return ",".join(f"{key}={value}" for key, value in labels.items())


def _filter_patch(
    service_name: str, namespace: str, hold_timeout: float, disabled: bool, context: str = "GATEWAY"
) -> dict[str, Any]:
    # Right before the router: Istio puts its fault filter (and cors, stats) before the router, so zerohop
    # runs after the fault filter, and a request that filter aborts never reaches zerohop (docs/istio.md).
    value = ext_proc_http_filter(
        istio_cluster_name(service_name, namespace, EXT_PROC_PORT),
        max_message_timeout=max_message_timeout_for(hold_timeout),
        mesh=context == SIDECAR_CONTEXT,
    )
    if disabled:
        value = {"name": value["name"], "disabled": True, "typed_config": value["typed_config"]}
    return {
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": context,
            "listener": {"filterChain": {"filter": {"name": HCM_FILTER, "subFilter": {"name": ROUTER_FILTER}}}},
        },
        "patch": {"operation": "INSERT_BEFORE", "value": value},
    }


def enable_on_virtual_host() -> dict[str, Any]:
    """The virtual-host MERGE value that turns the (disabled) filter on for that host."""
    return {"typed_per_filter_config": {EXT_PROC_FILTER: {"@type": EXT_PROC_PER_ROUTE_TYPE, "overrides": {}}}}


def _virtual_host_patch(host: str, port: int) -> dict[str, Any]:
    return {
        "applyTo": "VIRTUAL_HOST",
        "match": {
            "context": "GATEWAY",
            "routeConfiguration": {"portNumber": port, "vhost": {"name": f"{host}:{port}"}},
        },
        "patch": {"operation": "MERGE", "value": enable_on_virtual_host()},
    }


class FailoverRoute(NamedTuple):
    """A target's fallback as the gateway routes to it: on `host`'s virtual hosts, `target`'s released
    requests (`namespace/name`, the dynamic metadata zerohop sets) go to `cluster`."""

    host: str
    target: str
    cluster: str


# Resolves a Service's named port to its number: (namespace, service, port name) -> port, or None.
PortResolver = Callable[[str, str, str], int | None]


def _failover_port(target: ScaledTarget, resolve: PortResolver | None) -> int | None:
    """The port of `target`'s fallback Service: given, or its `portName` resolved (None: no fallback, or a name
    nothing resolves)."""
    ref = target.failover
    if ref is None:
        return None
    if ref.port is None and ref.port_name is not None and resolve is not None:
        return resolve(target.key.namespace, ref.service, ref.port_name)
    return ref.port


def failover_routes(targets: Iterable[ScaledTarget], resolve: PortResolver | None = None) -> list[FailoverRoute]:
    """The failover routes of `targets`: one per named host of each target with a fallback whose port is
    known (a `portName` needs `resolve`; a catch-all target has no virtual host of its own to put it in)."""
    routes: list[FailoverRoute] = []
    for target in targets:
        port = _failover_port(target, resolve)
        if port is None:
            continue
        cluster = failover_cluster_name(target, port)
        assert cluster is not None
        routes.extend(FailoverRoute(host, str(target.key), cluster) for host in target.hosts if host != "*")
    return sorted(set(routes))


def failover_patches(routes: Iterable[FailoverRoute], ports: Sequence[int] = GATEWAY_PORTS) -> list[dict[str, Any]]:
    """HTTP_ROUTE patches inserting each failover route first in its host's virtual hosts (`HOST:PORT`), with
    no timeout (Istio's default for the routes of a VirtualService)."""
    patches = []
    for route in sorted(set(routes)):
        value = {
            "name": f"zerohop-failover-{route.target.replace('/', '-')}",
            **failover_route(route.target, route.cluster, 0),
        }
        for port in ports:
            patches.append(
                {
                    "applyTo": "HTTP_ROUTE",
                    "match": {
                        "context": "GATEWAY",
                        "routeConfiguration": {"portNumber": port, "vhost": {"name": f"{route.host}:{port}"}},
                    },
                    "patch": {"operation": "INSERT_FIRST", "value": value},
                }
            )
    return patches


def _probe_route_patch(host: str, port: int) -> dict[str, Any]:
    return {
        "applyTo": "HTTP_ROUTE",
        "match": {
            "context": "GATEWAY",
            "routeConfiguration": {"portNumber": port, "vhost": {"name": f"{host}:{port}"}},
        },
        "patch": {"operation": "INSERT_FIRST", "value": probe_route()},
    }


def envoyfilter(
    namespace: str = ZEROHOP_NAMESPACE,
    *,
    service_name: str = SERVICE_NAME,
    hold_timeout: float = DEFAULT_HOLD_TIMEOUT,
    gateway_namespace: str = GATEWAY_NAMESPACE,
    selector: Mapping[str, str] | None = None,
    hosts: Iterable[str] | None = None,
    ports: Sequence[int] = GATEWAY_PORTS,
    name: str = ENVOYFILTER_NAME,
    open_hosts: Iterable[str] | None = None,
    failovers: Iterable[FailoverRoute] = (),
) -> dict[str, Any]:
    """The EnvoyFilter for gateways matching `selector`; with `hosts`, scoped to those hosts' virtual hosts;
    with `failovers`, the routes to the targets' fallback Services.

    With `open_hosts` (the warm path, `--warm-path open`): ext_proc stays off on those of `hosts`, and each of
    `hosts` gets the probe route first (`config.probe_route`), which tells which state a gateway pod runs.
    The filter reaches zerohop through Istio's outbound cluster of Service `service_name` in `namespace`.
    """
    patches = [_filter_patch(service_name, namespace, hold_timeout, disabled=hosts is not None)]
    skipped = frozenset(open_hosts or ())
    for host in sorted(set(hosts or ())):
        if open_hosts is not None:
            patches.extend(_probe_route_patch(host, port) for port in ports)
        if host not in skipped:
            patches.extend(_virtual_host_patch(host, port) for port in ports)
    patches += failover_patches(failovers, ports)
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": name, "namespace": gateway_namespace, "labels": dict(LABELS)},
        "spec": {
            "workloadSelector": {"labels": dict(selector or INGRESS_GATEWAY_SELECTOR)},
            "priority": PRIORITY,
            "configPatches": patches,
        },
    }


def open_hosts_of(document: Mapping[str, Any]) -> frozenset[str]:
    """The hosts an EnvoyFilter written by `envoyfilter(open_hosts=...)` leaves open: those with a probe route
    and no virtual-host patch enabling ext_proc."""
    probed, enabled = set(), set()
    for patch in (document.get("spec") or {}).get("configPatches") or []:
        vhost = (((patch.get("match") or {}).get("routeConfiguration") or {}).get("vhost") or {}).get("name")
        if not isinstance(vhost, str):
            continue
        host = vhost.rpartition(":")[0]
        value = (patch.get("patch") or {}).get("value") or {}
        if patch.get("applyTo") == "HTTP_ROUTE" and value.get("name") == PROBE_ROUTE_NAME:
            probed.add(host)
        elif patch.get("applyTo") == "VIRTUAL_HOST":
            enabled.add(host)
    return frozenset(probed - enabled)


# --- East-west: the filter in client workloads' sidecars ------------------------------------------------------
#
# A sidecar's outbound HTTP route configurations are per port (named "8080"; "HOST:8080" for a port whose
# protocol Istio sniffs), with one virtual host per Service port named `NAME.NS.svc.cluster.local:PORT`,
# whatever name the client used (`backend`, `backend.NS`, ... are its domains). The route's cluster is
# `outbound|PORT||NAME.NS.svc.cluster.local`, as in a gateway, so zerohop maps the request to its target the same
# way. The virtual-host patch names no port number: Istio reads a sidecar route configuration's port from its
# name, which a sniffed port's "HOST:PORT" route configuration does not give, and the name alone is unique.

SIDECAR_ENVOYFILTER_NAME = "zerohop-ext-proc-sidecar"
SIDECAR_LABELS = {"app.kubernetes.io/name": "zerohop", "app.kubernetes.io/component": "sidecar-filter"}
CLUSTER_DOMAIN = "svc.cluster.local"


def sidecar_envoyfilter_name(selector: Mapping[str, str]) -> str:
    """`zerohop-ext-proc-sidecar-VALUES` (e.g. `...-frontend` for app=frontend): one EnvoyFilter per selector,
    so filters rendered for different client workloads do not replace each other."""
    suffix = re.sub(r"[^a-z0-9-]+", "-", "-".join(selector.values()).lower()).strip("-")
    return f"{SIDECAR_ENVOYFILTER_NAME}-{suffix}"[:253].rstrip("-") if suffix else SIDECAR_ENVOYFILTER_NAME


def service_virtual_host(service: str, namespace: str, port: int) -> str:
    """The name of a Service port's virtual host in a sidecar's outbound route configuration."""
    return f"{service}.{namespace}.{CLUSTER_DOMAIN}:{port}"


def sidecar_virtual_hosts(
    targets: Iterable[ScaledTarget], resolve: PortResolver | None = None
) -> tuple[list[str], list[ScaledTarget]]:
    """The sidecar virtual hosts of `targets`' Services, and the targets left out: a port given by name
    that `resolve` (the Service) cannot turn into a number."""
    names, unresolved = set(), []
    for target in targets:
        ref = target.scale_target
        port = ref.port
        if port is None and ref.port_name is not None and resolve is not None:
            port = resolve(target.key.namespace, ref.service, ref.port_name)
        if port is None or not ref.service:
            unresolved.append(target)
            continue
        names.add(service_virtual_host(ref.service, target.key.namespace, port))
    return sorted(names), unresolved


def sidecar_failover_routes(
    targets: Iterable[ScaledTarget], resolve: PortResolver | None = None
) -> list[FailoverRoute]:
    """`failover_routes` for sidecars: each route goes into the virtual host of its target's Service port (a
    target without hosts has one too)."""
    routes: set[FailoverRoute] = set()
    for target in targets:
        port = _failover_port(target, resolve)
        cluster = failover_cluster_name(target, port) if port is not None else None
        if cluster is None:
            continue
        vhosts, _ = sidecar_virtual_hosts([target], resolve)
        routes.update(FailoverRoute(vhost, str(target.key), cluster) for vhost in vhosts)
    return sorted(routes)


def sidecar_envoyfilter(
    selector: Mapping[str, str],
    namespace: str = ZEROHOP_NAMESPACE,
    *,
    service_name: str = SERVICE_NAME,
    hold_timeout: float = DEFAULT_HOLD_TIMEOUT,
    workload_namespace: str = GATEWAY_NAMESPACE,
    virtual_hosts: Iterable[str] | None = None,
    failovers: Iterable[FailoverRoute] = (),
    name: str | None = None,
) -> dict[str, Any]:
    """The EnvoyFilter for the sidecars of workloads matching `selector` in `workload_namespace` (Istio's root
    namespace: in every namespace): zerohop's filter in their outbound listeners, before the router; with
    `virtual_hosts` (`sidecar_virtual_hosts`), disabled except on those virtual hosts; with `failovers`
    (`sidecar_failover_routes`), each target's failover route first in its virtual host. Named after the
    selector (`sidecar_envoyfilter_name`) unless `name` is given."""
    patches = [_filter_patch(service_name, namespace, hold_timeout, virtual_hosts is not None, SIDECAR_CONTEXT)]
    for vhost in sorted(set(virtual_hosts or ())):
        patches.append(
            {
                "applyTo": "VIRTUAL_HOST",
                "match": {"context": SIDECAR_CONTEXT, "routeConfiguration": {"vhost": {"name": vhost}}},
                "patch": {"operation": "MERGE", "value": enable_on_virtual_host()},
            }
        )
    for route in sorted(set(failovers)):
        value = {
            "name": f"zerohop-failover-{route.target.replace('/', '-')}",
            **failover_route(route.target, route.cluster, 0),
        }
        patches.append(
            {
                "applyTo": "HTTP_ROUTE",
                "match": {"context": SIDECAR_CONTEXT, "routeConfiguration": {"vhost": {"name": route.host}}},
                "patch": {"operation": "INSERT_FIRST", "value": value},
            }
        )
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": name or sidecar_envoyfilter_name(selector),
            "namespace": workload_namespace,
            "labels": dict(SIDECAR_LABELS),
        },
        "spec": {
            "workloadSelector": {"labels": dict(selector)},
            "priority": PRIORITY,
            "configPatches": patches,
        },
    }


def render(document: Mapping[str, Any], comment: str) -> str:
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    return header + yaml.safe_dump(dict(document), sort_keys=False, width=120)


def render_envoyfilters(namespace: str = ZEROHOP_NAMESPACE, hold_timeout: float = DEFAULT_HOLD_TIMEOUT) -> str:
    """envoyfilter/ingressgateway.yaml: unscoped, for the Istio ingress gateway."""
    comment = (
        "Generated by `zerohop envoyfilter`; edit extproc/envoy/istio.py and extproc/envoy/config.py instead.\n"
        f"zerohop runs in namespace {namespace}; hold timeout {hold_timeout:g}s."
    )
    return render(envoyfilter(namespace, hold_timeout=hold_timeout), comment)


def render_gateway_api(
    gateway_name: str = "gateway", namespace: str = ZEROHOP_NAMESPACE, hold_timeout: float = DEFAULT_HOLD_TIMEOUT
) -> str:
    """envoyfilter/gateway-api.yaml: unscoped, for an Istio-managed Gateway API gateway named `gateway_name`."""
    comment = (
        "Generated by `zerohop envoyfilter --gateway-name gateway`; edit extproc/envoy/istio.py instead.\n"
        "For a Gateway API gateway deployed by Istio: its pods carry gateway.networking.k8s.io/gateway-name.\n"
        "Replace `gateway` with your Gateway's name (or render with --gateway-name NAME); in istio-system (the\n"
        "root namespace) the EnvoyFilter applies to matching gateways in every namespace."
    )
    selector = {GATEWAY_API_LABEL: gateway_name}
    document = envoyfilter(
        namespace, hold_timeout=hold_timeout, selector=selector, name=f"{ENVOYFILTER_NAME}-{gateway_name}"
    )
    return render(document, comment)


# --- Letting zerohop see the gateway: the stats inclusion ---------------------------------------------------
#
# zerohop learns whether each gateway pod can route to a target from that pod's own Envoy stats, served on
# `POD_IP:15090/stats/prometheus` (a listener in Istio's bootstrap routed to the admin on localhost). Istio
# keeps only a minimal stats set (its bootstrap's `stats_matcher` inclusion list); a proxy's
# `proxyStatsMatcher` adds to it, and Istio turns each `inclusionRegexps` entry into a `safe_regex` pattern.
# Envoy matches such a pattern against the whole stat name before tag extraction (RE2 full match: no anchors
# needed, and a pattern matching only part of a name includes nothing), e.g.
# `cluster.outbound|8080||app.default.svc.cluster.local.membership_healthy`; `cluster.outbound|8080|v1|...`
# is a subset cluster. These are the only stats zerohop adds: four per outbound cluster.
# manifests/components/gateway-stats/ and manifests/gateway-stats/ carry them, kept equal by a test.

PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"
GATEWAY_STATS_PORT = 15090
GATEWAY_STATS_PATH = PROMETHEUS_PATH
GATEWAY_STATS_INCLUSION_REGEXPS: tuple[str, ...] = (
    # can this pod route to the cluster? (ready endpoints it has loaded)
    r"cluster\.outbound\|[0-9]+\|[^|]*\|[^|]+\.membership_healthy",
    # requests sent to the cluster (a counter: its rate is the request rate through this pod)
    r"cluster\.outbound\|[0-9]+\|[^|]*\|[^|]+\.upstream_rq_total",
    # requests in flight to the cluster (a gauge)
    r"cluster\.outbound\|[0-9]+\|[^|]*\|[^|]+\.upstream_rq_active",
    # requests the pod answered 503 itself for want of a healthy endpoint (a counter; the warm path reports it)
    r"cluster\.outbound\|[0-9]+\|[^|]*\|[^|]+\.upstream_cx_none_healthy",
)


def proxy_stats_matcher() -> dict[str, list[str]]:
    """ProxyConfig's `proxyStatsMatcher` with zerohop's inclusion (mesh-wide: meshConfig.defaultConfig)."""
    return {"inclusionRegexps": list(GATEWAY_STATS_INCLUSION_REGEXPS)}


def proxy_config_annotation() -> str:
    """The value of a gateway pod's `proxy.istio.io/config` annotation (ProxyConfig YAML) with the inclusion."""
    return yaml.safe_dump({"proxyStatsMatcher": proxy_stats_matcher()}, sort_keys=False, width=1000)
