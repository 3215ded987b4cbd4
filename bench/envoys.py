"""Envoy bootstraps of the benchmark: the app (a `direct_response` upstream), plain proxies (gateway,
interceptor) and the gateway with zerohop's ext_proc filter, all built from `extproc.envoy.config`."""

from __future__ import annotations

import json
from typing import Any

from extproc.envoy.config import (
    DEFAULT_HOLD_TIMEOUT,
    LOCAL_EXT_PROC_CLUSTER,
    ext_proc_cluster,
    ext_proc_http_filter,
    http_connection_manager,
    listener,
    max_message_timeout_for,
)

APP_BODY = "hello from the bench app\n"
# Every gateway routes to a cluster of this name: zerohop maps it to its target through the
# `xds.cluster_name` attribute (it is `target_cluster_name()` of setup B's target), and giving the other
# setups the same name keeps Envoy's work per request identical.
UPSTREAM_CLUSTER = "outbound|8080||app.default.svc.cluster.local"


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def _admin(admin_port: int) -> dict[str, Any]:
    return {"address": _address(admin_port)}


def static_cluster(name: str, port: int) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}],
        },
    }


def app_bootstrap(port: int, admin_port: int | None) -> dict[str, Any]:
    """The upstream of every setup: answers 200 with a small constant body, no upstream of its own."""
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": APP_BODY}}}
    routes = {"name": "app", "virtual_hosts": [{"name": "app", "domains": ["*"], "routes": [route]}]}
    hcm = http_connection_manager(routes, [], stat_prefix="app")
    bootstrap: dict[str, Any] = {"static_resources": {"listeners": [listener("app", "127.0.0.1", port, hcm)]}}
    if admin_port is not None:
        bootstrap["admin"] = _admin(admin_port)
    return bootstrap


def app_replica_command(envoy: str, log_path: str) -> tuple[str, ...]:
    """The app as a LocalWorkload command: an Envoy with `app_bootstrap` on the replica's `{port}` (inline,
    so the provider's `{port}` substitution reaches it), no admin API."""
    sentinel = 1  # replaced by the provider's `{port}` placeholder in the JSON text
    text = json.dumps(app_bootstrap(sentinel, None)).replace('"port_value": 1}', '"port_value": {port}}')
    assert "{port}" in text
    return (envoy, "--config-yaml", text, "--concurrency", "1", "--disable-hot-restart", "--log-path", log_path)


def proxy_bootstrap(
    name: str,
    port: int,
    admin_port: int,
    upstream_port: int,
    *,
    ext_proc_port: int | None = None,
    max_message_timeout: float = max_message_timeout_for(DEFAULT_HOLD_TIMEOUT),
) -> dict[str, Any]:
    """listener -> route -> one static upstream cluster; with `ext_proc_port`, zerohop's ext_proc filter
    (exactly as `ext_proc_http_filter` builds it) before the router and its gRPC cluster."""
    route = {"match": {"prefix": "/"}, "route": {"cluster": UPSTREAM_CLUSTER}}
    routes = {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": [route]}]}
    filters = []
    clusters = [static_cluster(UPSTREAM_CLUSTER, upstream_port)]
    if ext_proc_port is not None:
        filters.append(ext_proc_http_filter(LOCAL_EXT_PROC_CLUSTER, max_message_timeout=max_message_timeout))
        clusters.append(ext_proc_cluster("127.0.0.1", ext_proc_port))
    hcm = http_connection_manager(routes, filters, stat_prefix=name)
    return {
        "admin": _admin(admin_port),
        "static_resources": {"listeners": [listener(name, "127.0.0.1", port, hcm)], "clusters": clusters},
    }
