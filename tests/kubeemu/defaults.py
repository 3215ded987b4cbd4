"""Defaulting the real API server applies on write, for the kinds where it matters."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from .objects import meta, name_of
from .registry import ResourceType

JsonObj = dict[str, Any]

_cluster_ips = itertools.count(1)


def _namespace(obj: JsonObj) -> None:
    meta(obj).setdefault("labels", {})["kubernetes.io/metadata.name"] = name_of(obj)
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def _deployment(obj: JsonObj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)  # *int32 `json:"replicas,omitempty"`: an explicit 0 is kept
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    spec.setdefault(
        "strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    )


def _statefulset(obj: JsonObj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)  # *int32, as in DeploymentSpec
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})


def _service(obj: JsonObj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName":
        if "clusterIP" not in spec:
            n = next(_cluster_ips)
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")
            if "port" in port:
                port.setdefault("targetPort", port["port"])
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


KIND_DEFAULTERS: dict[tuple[str, str], Callable[[JsonObj], None]] = {
    ("", "Namespace"): _namespace,
    ("apps", "Deployment"): _deployment,
    ("apps", "StatefulSet"): _statefulset,
    ("", "Service"): _service,
}


def apply_defaults(rt: ResourceType, obj: JsonObj) -> None:
    defaulter = KIND_DEFAULTERS.get((rt.group, rt.kind))
    if defaulter is not None:
        defaulter(obj)
