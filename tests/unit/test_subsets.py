"""DestinationRule subsets resolved to targets (extproc/providers/kubernetes/subsets.py)."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.core.httpso import TargetKey
from extproc.providers.kubernetes.subsets import (
    Subset,
    SubsetIndex,
    SubsetTarget,
    rule_service,
    rule_subsets,
    subset_endpoints,
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("backend", ("shop", "backend")),
        ("backend.other", ("other", "backend")),
        ("backend.other.svc.cluster.local", ("other", "backend")),
        ("Backend.Other.svc.cluster.local.", ("other", "backend")),
        ("*.example.com", None),
        ("api.example.com", None),
        ("", None),
        (None, None),
    ],
)
def test_a_rules_host_names_a_service_as_istio_reads_it(host: object, expected: tuple[str, str] | None) -> None:
    assert rule_service(host, "shop") == expected


def rule(name: str, host: str, subsets: list[Any], namespace: str = "shop") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"host": host, "subsets": subsets}}


def test_subsets_without_labels_or_malformed_are_left_out() -> None:
    document = rule(
        "backend",
        "backend",
        [
            {"name": "v1", "labels": {"version": "v1", "app": "backend"}},
            {"name": "all"},
            {"name": "bad", "labels": {"version": 2}},
            "nonsense",
        ],
    )
    [subset] = rule_subsets(document)
    assert subset == Subset(("shop", "backend"), "v1", (("app", "backend"), ("version", "v1")))
    assert subset.selector == "app=backend,version=v1"
    assert subset.cluster(8080) == "outbound|8080|v1|backend.shop.svc.cluster.local"


def target(name: str, port: int = 8080, workload: str | None = None) -> SubsetTarget:
    key = TargetKey("shop", name)
    return SubsetTarget(key, ("shop", "backend"), port, ("deployments", "shop", workload or name))


def test_each_subset_cluster_goes_to_the_target_whose_pod_template_carries_its_labels() -> None:
    index = SubsetIndex()
    subsets = [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]
    index.set_rule(("shop", "backend"), rule_subsets(rule("backend", "backend", subsets)))
    index.templates[("deployments", "shop", "backend-v1")] = {"app": "backend", "version": "v1"}
    index.templates[("deployments", "shop", "backend-v2")] = {"app": "backend", "version": "v2"}
    v1, v2 = target("backend-v1"), target("backend-v2")
    changed, touched = index.resolve([v1, v2])
    assert changed == {
        "outbound|8080|v1|backend.shop.svc.cluster.local": v1.key,
        "outbound|8080|v2|backend.shop.svc.cluster.local": v2.key,
    }
    assert touched == {v1.key, v2.key}
    assert index.selectors() == {("shop", "version=v1"), ("shop", "version=v2")}
    assert index.resolve([v1, v2]) == ({}, set())  # nothing changed, nothing reported

    # v2's template no longer carries the label: its cluster has no owner (requests fall back to host matching).
    index.templates[("deployments", "shop", "backend-v2")] = {"app": "backend", "version": "v3"}
    changed, touched = index.resolve([v1, v2])
    assert changed == {"outbound|8080|v2|backend.shop.svc.cluster.local": None}
    assert touched == {v2.key}
    assert index.of_target(v2.key) == ()


def test_when_several_targets_qualify_the_first_by_key_owns_the_subset() -> None:
    index = SubsetIndex()
    index.set_rule(("shop", "a"), rule_subsets(rule("a", "backend", [{"name": "v1", "labels": {"version": "v1"}}])))
    # A second rule for the same host: Istio merges them, the first rule by name wins a subset name.
    index.set_rule(("shop", "b"), rule_subsets(rule("b", "backend", [{"name": "v1", "labels": {"track": "x"}}])))
    assert [s.labels for s in index.subsets(("shop", "backend"))] == [(("version", "v1"),)]
    for name in ("b", "a"):
        index.templates[("deployments", "shop", name)] = {"version": "v1"}
    changed, _ = index.resolve([target("b"), target("a")])
    assert changed == {"outbound|8080|v1|backend.shop.svc.cluster.local": TargetKey("shop", "a")}


def test_a_subsets_endpoints_are_those_of_its_pods_only() -> None:
    slices = [
        {
            "endpoints": [
                {
                    "addresses": ["10.0.0.1"],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": "v1-a"},
                },
                {
                    "addresses": ["10.0.0.2"],
                    "conditions": {"ready": False},
                    "targetRef": {"kind": "Pod", "name": "v1-b"},
                },
                {"addresses": ["10.0.0.3"], "targetRef": {"kind": "Pod", "name": "v2-a"}},
                {"addresses": ["10.0.0.4"]},
            ]
        }
    ]
    assert subset_endpoints(slices, {"v1-a", "v1-b"}) == ({"10.0.0.1"}, 2)
    assert subset_endpoints(slices, {"v2-a"}) == ({"10.0.0.3"}, 1)
    assert subset_endpoints(slices, set()) == (set(), 0)
