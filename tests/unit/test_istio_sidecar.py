"""The sidecar EnvoyFilter against Istio's rules for applying it (tests/istio_sidecar.py models them):
where zerohop's filter lands among Istio's HTTP filters, and which route configurations its virtual-host
patches reach."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.app import cli
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
from tests.unit.test_manifests import DOCS, apply_json_patch, fenced_yaml, objects

ROOT = Path(__file__).resolve().parents[2]
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


def test_the_committed_sidecar_example_is_what_the_command_prints(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["envoyfilter", "--sidecar", "--workload-selector", "app=frontend", "examples/httpscaledobject.yaml"]
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        assert cli.main(argv) == 0
    finally:
        os.chdir(cwd)
    out, _ = capsys.readouterr()
    assert (ROOT / "envoyfilter" / "sidecar.yaml").read_text() == out, (
        "envoyfilter/sidecar.yaml is stale: zerohop envoyfilter --sidecar --workload-selector app=frontend "
        "examples/httpscaledobject.yaml > envoyfilter/sidecar.yaml"
    )


def test_the_docs_overlay_lets_the_frontend_reach_ext_proc() -> None:
    """docs/istio.md's overlay for east-west, applied to the shipped `zerohop-ext-proc` policy."""
    [overlay] = [
        d
        for d in fenced_yaml(DOCS)
        if isinstance(d, dict)
        and d.get("kind") == "Kustomization"
        and any(p["target"].get("name") == "zerohop-ext-proc" for p in d.get("patches", []))
    ]
    [entry] = overlay["patches"]
    [policy] = [d for d in objects() if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "zerohop-ext-proc"]
    patched = apply_json_patch(policy, yaml.safe_load(entry["patch"]))
    [rule] = patched["spec"]["ingress"]
    assert rule["ports"] == [{"port": istio.EXT_PROC_PORT, "protocol": "TCP"}]
    assert rule["from"][-1] == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
        "podSelector": {"matchLabels": FRONTEND},
    }
    assert rule["from"][:-1] == policy["spec"]["ingress"][0]["from"]  # the gateway keeps its way in
