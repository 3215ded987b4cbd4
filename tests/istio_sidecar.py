"""Envoy bootstraps shaped like an Istio sidecar's outbound side, with EnvoyFilters applied as istiod would.

What Istio gives a client pod's sidecar for HTTP Services on one port (here 8080), kept by name and shape:
- `virtualOutbound` (0.0.0.0:15001): every connection the pod opens lands here (iptables), and
  `use_original_dst` hands it to the listener of its original destination. No iptables runs in a test: the
  client sends a PROXY protocol header naming that destination instead, and the `proxy_protocol` listener
  filter restores it where Istio's `original_dst` reads it from the kernel; the hand-off is Envoy's own.
  Connections to nowhere known end in `BlackHoleCluster` (REGISTRY_ONLY; ALLOW_ANY would pass them through).
- `0.0.0.0_8080` (`bind_to_port: false`): its connection manager's route configuration `8080` has one
  virtual host per Service port, named `NAME.NS.svc.cluster.local:8080`, whose domains are the names a pod
  in the same namespace may use (`NAME`, `NAME.NS`, `NAME.NS.svc`, the FQDN and the ClusterIP; no port: the
  route configuration ignores ports in host matching), routing to `outbound|8080||NAME.NS.svc.cluster.local`
  with Istio's default retry policy, then the catch-all `allow_any`.
- HTTP filters in Istio's order, as far as upstream Envoy has them: `envoy.filters.http.fault`,
  `envoy.filters.http.cors`, then the router (Istio's own `istio.metadata_exchange`, `istio.alpn` and
  `istio.stats` sit among them in Istio's proxy build; none of them can end a request).

EnvoyFilters are applied as istiod applies them to a sidecar (pilot's listener and route-configuration patch
code): only those whose `workloadSelector` matches the pod's labels; `SIDECAR_OUTBOUND` patches only; an
HTTP_FILTER patch relative to the named sub-filter; a VIRTUAL_HOST or HTTP_ROUTE patch where its
`routeConfiguration` matches (a sidecar route configuration's port is its name read as a number) and its
vhost name equals the virtual host's.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy import config as envoyconfig
from extproc.envoy import istio
from tests.helpers import free_port

SIDECAR_OUTBOUND = "SIDECAR_OUTBOUND"
FAULT_FILTER = "envoy.filters.http.fault"
CORS_FILTER = "envoy.filters.http.cors"
VIRTUAL_OUTBOUND = "virtualOutbound"
BLACK_HOLE = "BlackHoleCluster"
# Istio's default retry policy on outbound routes (pilot's route/retry DefaultPolicy).
ISTIO_RETRY_POLICY: dict[str, Any] = {
    "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
    "num_retries": 2,
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
    "host_selection_retry_max_attempts": "5",
    "retriable_status_codes": [503],
}


@dataclass(frozen=True, slots=True)
class MeshService:
    """One Service port in the client's view: where its cluster's endpoints come from is the test's business."""

    name: str
    namespace: str
    port: int
    cluster_ip: str

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.{istio.CLUSTER_DOMAIN}"

    @property
    def cluster(self) -> str:
        return envoyconfig.istio_cluster_name(self.name, self.namespace, self.port)

    @property
    def virtual_host(self) -> str:
        return istio.service_virtual_host(self.name, self.namespace, self.port)


# --- EnvoyFilters, applied as istiod would ----------------------------------------------------------------------


def selects(envoyfilter: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Does the EnvoyFilter's workloadSelector pick a pod with `labels`? (None: every workload.)"""
    wanted = ((envoyfilter.get("spec") or {}).get("workloadSelector") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


def _patches(
    envoyfilters: Iterable[Mapping[str, Any]], labels: Mapping[str, str], apply_to: str, context: str = SIDECAR_OUTBOUND
) -> list[Any]:
    found = []
    for document in envoyfilters:
        if not selects(document, labels):
            continue
        for patch in document["spec"]["configPatches"]:
            if patch["applyTo"] == apply_to and patch["match"].get("context") in (context, "ANY", None):
                found.append(patch)
    return found


def istio_outbound_filters() -> list[dict[str, Any]]:
    """Istio's sidecar-outbound HTTP filters that upstream Envoy has, in Istio's order (router last)."""
    return [
        {
            "name": FAULT_FILTER,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"},
        },
        {
            "name": CORS_FILTER,
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"},
        },
        {"name": envoyconfig.ROUTER_FILTER, "typed_config": {"@type": envoyconfig.ROUTER_TYPE}},
    ]


def http_filters(
    envoyfilters: Iterable[Mapping[str, Any]],
    labels: Mapping[str, str],
    base: Sequence[Mapping[str, Any]],
    context: str = SIDECAR_OUTBOUND,
) -> list[dict[str, Any]]:
    """`base` with every selected HTTP_FILTER patch for `context` applied, each relative to the sub-filter it
    names (Istio's gateways have the same filters in the same order)."""
    filters = [dict(f) for f in base]
    for patch in _patches(envoyfilters, labels, "HTTP_FILTER", context):
        sub = patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]
        assert patch["match"]["listener"]["filterChain"]["filter"]["name"] == envoyconfig.HCM_FILTER, patch
        names = [f["name"] for f in filters]
        value = copy.deepcopy(patch["patch"]["value"])
        operation = patch["patch"]["operation"]
        if sub not in names:
            continue  # Istio applies nothing when the anchor is missing
        index = names.index(sub)
        if operation == "INSERT_BEFORE":
            filters.insert(index, value)
        elif operation == "INSERT_AFTER":
            filters.insert(index + 1, value)
        else:
            raise AssertionError(f"not modelled: {operation}")
    return filters


def _route_configuration_matches(match: Mapping[str, Any], route_config: Mapping[str, Any]) -> bool:
    rc = match.get("routeConfiguration")
    if rc is None:
        return True
    name = str(route_config["name"])
    port = int(name) if name.isdigit() else 0
    if rc.get("portNumber") and rc["portNumber"] != port:
        return False
    return not (rc.get("name") and rc["name"] != name)


def _vhost_matches(match: Mapping[str, Any], vhost: Mapping[str, Any]) -> bool:
    wanted = ((match.get("routeConfiguration") or {}).get("vhost") or {}).get("name")
    return not wanted or wanted == vhost["name"]


def _merge(into: dict[str, Any], value: Mapping[str, Any]) -> None:
    """Proto merge as far as the patches here need it: maps and messages merged key by key, the rest set."""
    for key, item in value.items():
        if isinstance(item, Mapping) and isinstance(into.get(key), dict) and "@type" not in item:
            _merge(into[key], item)
        else:
            into[key] = copy.deepcopy(item)


def apply_route_patches(
    envoyfilters: Iterable[Mapping[str, Any]], labels: Mapping[str, str], route_config: Mapping[str, Any]
) -> dict[str, Any]:
    """A sidecar's outbound route configuration with the selected VIRTUAL_HOST MERGEs and HTTP_ROUTE
    INSERT_FIRSTs applied."""
    envoyfilters = list(envoyfilters)
    out = copy.deepcopy(dict(route_config))
    for vhost in out["virtual_hosts"]:
        for patch in _patches(envoyfilters, labels, "VIRTUAL_HOST"):
            if _route_configuration_matches(patch["match"], out) and _vhost_matches(patch["match"], vhost):
                assert patch["patch"]["operation"] == "MERGE", patch
                _merge(vhost, patch["patch"]["value"])
        for patch in _patches(envoyfilters, labels, "HTTP_ROUTE"):
            if _route_configuration_matches(patch["match"], out) and _vhost_matches(patch["match"], vhost):
                assert patch["patch"]["operation"] == "INSERT_FIRST", patch
                vhost["routes"].insert(0, copy.deepcopy(patch["patch"]["value"]))
    return out


# --- the sidecar ----------------------------------------------------------------------------------------------


def service_virtual_host(service: MeshService, client_namespace: str) -> dict[str, Any]:
    """Istio's virtual host for `service` in the route configuration of a client in `client_namespace`."""
    if service.namespace == client_namespace:
        aliases = [service.name, f"{service.name}.{service.namespace}.svc", f"{service.name}.{service.namespace}"]
    else:
        aliases = [f"{service.name}.{service.namespace}", f"{service.name}.{service.namespace}.svc"]
    return {
        "name": service.virtual_host,
        "domains": [service.fqdn, *aliases, service.cluster_ip],
        "routes": [
            {
                "name": "default",
                "match": {"prefix": "/"},
                "route": {
                    "cluster": service.cluster,
                    "timeout": "0s",
                    "retry_policy": copy.deepcopy(ISTIO_RETRY_POLICY),
                    "max_grpc_timeout": "0s",
                },
                "decorator": {"operation": f"{service.fqdn}:{service.port}/*"},
            }
        ],
        "include_request_attempt_count": True,
    }


def outbound_route_configuration(
    services: Sequence[MeshService], port: int, client_namespace: str = "default"
) -> dict[str, Any]:
    """Route configuration `PORT` as istiod builds it for a sidecar (before EnvoyFilters)."""
    vhosts = [service_virtual_host(s, client_namespace) for s in services if s.port == port]
    allow_any = {
        "name": "allow_any",
        "domains": ["*"],
        "routes": [{"name": "allow_any", "match": {"prefix": "/"}, "route": {"cluster": BLACK_HOLE, "timeout": "0s"}}],
        "include_request_attempt_count": True,
    }
    return {
        "name": str(port),
        "virtual_hosts": [*sorted(vhosts, key=lambda v: v["name"]), allow_any],
        "validate_clusters": False,
        "ignore_port_in_host_matching": True,
    }


def static_cluster(name: str, endpoints: Iterable[tuple[str, int]], *, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                        for host, port in endpoints
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = envoyconfig.http2_protocol_options()
    return cluster


def sidecar_bootstrap(
    envoyfilters: Iterable[Mapping[str, Any]],
    services: Sequence[MeshService],
    *,
    labels: Mapping[str, str],
    outbound_port: int,
    admin_port: int,
    ext_proc_port: int,
    clusters: Sequence[dict[str, Any]],
    namespace: str = "default",
    route_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A client pod's sidecar (labels `labels`, in `namespace`) for HTTP Services on one port.

    `outbound_port`: where `virtualOutbound` listens on 127.0.0.1 (15001 in the pod). `clusters`: the
    services' outbound clusters (static or EDS), supplied by the test; zerohop's outbound cluster leads to
    127.0.0.1:`ext_proc_port`. `route_config`: one to use instead of `outbound_route_configuration` (a test
    adding Istio route features, e.g. a mirror or a fault); EnvoyFilters are applied to it either way."""
    envoyfilters = list(envoyfilters)
    [port] = {s.port for s in services}
    base = route_config if route_config is not None else outbound_route_configuration(services, port, namespace)
    routes = apply_route_patches(envoyfilters, labels, base)
    filters = http_filters(envoyfilters, labels, istio_outbound_filters())
    hcm = {
        "name": envoyconfig.HCM_FILTER,
        "typed_config": {
            "@type": envoyconfig.HCM_TYPE,
            "stat_prefix": f"outbound_0.0.0.0_{port}",
            "route_config": routes,
            "http_filters": filters,
            "use_remote_address": False,
            "normalize_path": True,
            "upgrade_configs": [{"upgrade_type": "websocket"}],
        },
    }
    ext_proc_clusters = {
        f["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
        for f in filters
        if f["name"] == envoyconfig.EXT_PROC_FILTER
    }
    per_port = {
        "name": f"0.0.0.0_{port}",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "bind_to_port": False,
        "traffic_direction": "OUTBOUND",
        "filter_chains": [{"filters": [hcm]}],
    }
    black_hole = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": BLACK_HOLE,
        "cluster": BLACK_HOLE,
    }}  # fmt: skip
    virtual_outbound = {
        "name": VIRTUAL_OUTBOUND,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": outbound_port}},
        "use_original_dst": True,
        "traffic_direction": "OUTBOUND",
        "listener_filters": [
            {
                "name": "envoy.filters.listener.proxy_protocol",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"
                },
            }
        ],
        "filter_chains": [{"filters": [black_hole]}],
    }
    return {
        # Istio's node id for a sidecar: sidecar~POD_IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local
        "node": {"id": f"sidecar~127.0.0.1~client-0.{namespace}~{namespace}.svc.cluster.local", "cluster": "client"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [virtual_outbound, per_port],
            "clusters": [
                *clusters,
                *(static_cluster(name, [("127.0.0.1", ext_proc_port)], http2=True) for name in ext_proc_clusters),
                static_cluster(BLACK_HOLE, []),
            ],
        },
    }


@dataclass(frozen=True, slots=True)
class Sidecar:
    outbound_port: int
    admin_port: int
    envoy: EnvoyProcess

    async def call(
        self, service: MeshService, host: str | None = None, path: str = "/"
    ) -> tuple[int, dict[str, str], bytes]:
        """What the client app does: an HTTP/1.1 request to `service`'s ClusterIP and port, which iptables
        would send to `virtualOutbound`; here a PROXY header names that original destination."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.outbound_port)
        try:
            proxy = f"PROXY TCP4 10.244.0.5 {service.cluster_ip} 40000 {service.port}\r\n"
            lines = [f"GET {path} HTTP/1.1", f"Host: {host or f'{service.name}:{service.port}'}", "Connection: close"]
            writer.write((proxy + "\r\n".join(lines) + "\r\n\r\n").encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        found = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            found[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), found, body

    async def stat(self, name: str) -> int:
        """One counter or gauge from the admin API (0 when Envoy has not created it)."""
        url = f"{self.envoy.admin_url}/stats"
        async with aiohttp.ClientSession() as session, session.get(url, params={"filter": re.escape(name)}) as reply:
            text = await reply.text()
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


@asynccontextmanager
async def sidecar(
    envoyfilters: Iterable[Mapping[str, Any]],
    services: Sequence[MeshService],
    *,
    labels: Mapping[str, str],
    ext_proc_port: int,
    clusters: Sequence[dict[str, Any]],
    workdir: Path,
    route_config: Mapping[str, Any] | None = None,
) -> AsyncIterator[Sidecar]:
    """Run one client pod's sidecar (`sidecar_bootstrap`)."""
    outbound_port, admin_port = free_port(), free_port()
    bootstrap = sidecar_bootstrap(
        envoyfilters,
        services,
        labels=labels,
        outbound_port=outbound_port,
        admin_port=admin_port,
        ext_proc_port=ext_proc_port,
        clusters=clusters,
        route_config=route_config,
    )
    process = EnvoyProcess(bootstrap, admin_port, workdir=workdir)
    async with process:
        yield Sidecar(outbound_port, admin_port, process)
