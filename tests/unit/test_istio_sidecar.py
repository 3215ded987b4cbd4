"""The sidecar EnvoyFilter against Istio's rules for applying it (tests/istio_sidecar.py models them):
where zerohop's filter lands among Istio's HTTP filters, and which route configurations its virtual-host
patches reach."""

from __future__ import annotations

from typing import Any

from extproc.core.httpso import parse
from extproc.envoy import istio
from extproc.envoy.config import EXT_PROC_FILTER, ROUTER_FILTER
from tests.istio_sidecar import (
    FAULT_FILTER,
    MeshService,
    apply_route_patches,
    http_filters,
    istio_outbound_filters,
    outbound_route_configuration,
)
from tests.kube.harness import httpso

FRONTEND = {"app": "frontend"}
BACKEND = MeshService("backend", "shop", 8080, "10.96.0.10")
OTHER = MeshService("other", "shop", 8080, "10.96.0.11")


def scoped() -> dict[str, Any]:
    virtual_hosts, _ = istio.sidecar_virtual_hosts([parse(httpso("backend", "shop"))])
    return istio.sidecar_envoyfilter(FRONTEND, virtual_hosts=virtual_hosts)


def enabled_vhosts(route_config: dict[str, Any]) -> list[str]:
    return [v["name"] for v in route_config["virtual_hosts"] if EXT_PROC_FILTER in v.get("typed_per_filter_config", {})]


def test_the_filter_goes_after_istios_fault_filter_right_before_the_router() -> None:
    cases = [(scoped(), FRONTEND, "SIDECAR_OUTBOUND"), (istio.envoyfilter(), {"istio": "ingressgateway"}, "GATEWAY")]
    for document, labels, context in cases:
        names = [f["name"] for f in http_filters([document], labels, istio_outbound_filters(), context)]
        assert EXT_PROC_FILTER in names
        assert names.index(FAULT_FILTER) < names.index(EXT_PROC_FILTER) == names.index(ROUTER_FILTER) - 1


def test_only_the_managed_services_virtual_host_is_enabled() -> None:
    routes = apply_route_patches([scoped()], FRONTEND, outbound_route_configuration([BACKEND, OTHER], 8080, "shop"))
    assert enabled_vhosts(routes) == ["backend.shop.svc.cluster.local:8080"]


def test_a_sniffed_ports_route_configuration_is_reached_too() -> None:
    """A port whose protocol Istio sniffs has a route configuration named `HOST:PORT` per Service; Istio reads
    no port number from that name, so a patch pinned to `portNumber: 8080` would miss it. zerohop's names none."""
    sniffed = outbound_route_configuration([BACKEND], 8080, "shop") | {"name": "backend.shop.svc.cluster.local:8080"}
    assert enabled_vhosts(apply_route_patches([scoped()], FRONTEND, sniffed)) == [BACKEND.virtual_host]
    pinned = scoped()
    for patch in pinned["spec"]["configPatches"][1:]:
        patch["match"]["routeConfiguration"]["portNumber"] = 8080
    assert enabled_vhosts(apply_route_patches([pinned], FRONTEND, sniffed)) == []


def test_other_workloads_are_not_selected() -> None:
    routes = apply_route_patches([scoped()], {"app": "checkout"}, outbound_route_configuration([BACKEND], 8080, "shop"))
    assert enabled_vhosts(routes) == []
    names = [f["name"] for f in http_filters([scoped()], {"app": "checkout"}, istio_outbound_filters())]
    assert EXT_PROC_FILTER not in names


def test_a_client_in_another_namespace_reaches_the_same_virtual_host() -> None:
    [vhost, _] = outbound_route_configuration([BACKEND], 8080, "web")["virtual_hosts"]
    assert vhost["name"] == BACKEND.virtual_host
    assert "backend" not in vhost["domains"]
    assert "backend.shop" in vhost["domains"]
