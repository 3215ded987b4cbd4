"""An Envoy bootstrap shaped like an Istio gateway with zerohop's EnvoyFilter applied, for tests.

Istio applies an EnvoyFilter's patches to the config it generates; no istiod runs here, so this applies
them by hand, exactly as their `match` says: the HTTP_FILTER value goes before the router, each
VIRTUAL_HOST MERGE value is merged into the virtual host named `HOST:PORT`, and the ext_proc cluster is the
outbound cluster name the filter points at. Each host's virtual host routes, as Istio's do, to an outbound
cluster (`outbound|80||<first label>.default.svc.cluster.local`); all of them lead to a second listener of
the same Envoy (`upstream_port`) that answers 200 with the host's name. What Envoy then does is real.
"""

from __future__ import annotations

from typing import Any

from extproc import envoyconfig


def istio_gateway_bootstrap(
    envoyfilter: dict[str, Any],
    hosts: list[str],
    *,
    ext_proc_port: int,
    listen_port: int = 0,
    admin_port: int = 0,
    upstream_port: int = 0,
    gateway_port: int = 80,
) -> dict[str, Any]:
    patches = envoyfilter["spec"]["configPatches"]
    [filter_patch] = [p for p in patches if p["applyTo"] == "HTTP_FILTER"]
    vhost_patches = {
        p["match"]["routeConfiguration"]["vhost"]["name"]: p["patch"]["value"]
        for p in patches
        if p["applyTo"] == "VIRTUAL_HOST" and p["match"]["routeConfiguration"]["portNumber"] == gateway_port
    }
    virtual_hosts, upstream_hosts, service_clusters = [], [], []
    for host in hosts:
        service = envoyconfig.istio_cluster_name(host.split(".")[0].lstrip("*") or "wild", "default", 80)
        vhost: dict[str, Any] = {
            "name": f"{host}:{gateway_port}",
            "domains": [host],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": service}}],
        }
        vhost.update(vhost_patches.get(vhost["name"], {}))
        virtual_hosts.append(vhost)
        upstream_hosts.append(
            {
                "name": host,
                "domains": [host],
                "routes": [
                    {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": host}}}
                ],
            }
        )
        service_clusters.append(_static_cluster(service, upstream_port))
    value = filter_patch["patch"]["value"]
    cluster_name = value["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    route_config = {"name": f"http.{gateway_port}", "virtual_hosts": virtual_hosts}
    hcm = envoyconfig.http_connection_manager(route_config, [value])
    upstream = envoyconfig.http_connection_manager({"virtual_hosts": upstream_hosts}, [], stat_prefix="upstream")
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                envoyconfig.listener("gateway", "127.0.0.1", listen_port, hcm),
                envoyconfig.listener("upstream", "127.0.0.1", upstream_port, upstream),
            ],
            "clusters": [
                envoyconfig.ext_proc_cluster("127.0.0.1", ext_proc_port, name=cluster_name),
                *service_clusters,
            ],
        },
    }


def _static_cluster(name: str, port: int) -> dict[str, Any]:
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [endpoint]}]},
    }
