"""HTTPScaledObjects and Services in, targets out: what the route table serves, how the gateway names each
target's cluster, and the `Ready` condition each HTTPScaledObject should carry.

Pure functions of the caches, so a bad object only ever affects its own condition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from extproc.core.httpso import InvalidSpec, ScaledTarget, TargetKey, parse
from extproc.envoy.config import istio_cluster_name

JsonObj = dict[str, Any]

REASON_OK = "Reconciled"
REASON_INVALID = "InvalidSpec"
REASON_NO_SERVICE = "ServiceNotFound"
REASON_NO_PORT = "PortNotFound"


@dataclass(frozen=True, slots=True)
class Condition:
    """A metav1.Condition of type Ready, minus the timestamps."""

    ready: bool
    reason: str
    message: str


@dataclass(slots=True)
class TargetTable:
    targets: list[ScaledTarget] = field(default_factory=list)
    clusters: dict[str, TargetKey] = field(default_factory=dict)
    conditions: dict[TargetKey, Condition] = field(default_factory=dict)
    services: dict[TargetKey, tuple[str, str]] = field(default_factory=dict)
    ports: dict[TargetKey, int] = field(default_factory=dict)
    generations: dict[TargetKey, int] = field(default_factory=dict)


def service_port(service: Mapping[str, Any], name: str) -> int | None:
    for port in (service.get("spec") or {}).get("ports") or []:
        if port.get("name") == name:
            value = port.get("port")
            return int(value) if isinstance(value, int) else None
    return None


def build(httpsos: Iterable[Mapping[str, Any]], services: Mapping[tuple[str, str], Mapping[str, Any]]) -> TargetTable:
    """Parse every HTTPScaledObject; valid ones become targets, every one gets a condition."""
    table = TargetTable()
    for document in sorted(httpsos, key=_sort_key):
        metadata = document.get("metadata") or {}
        key = TargetKey(str(metadata.get("namespace") or "default"), str(metadata.get("name") or ""))
        table.generations[key] = int(metadata.get("generation") or 0)
        try:
            target = parse(document)
        except InvalidSpec as exc:
            table.conditions[key] = Condition(False, REASON_INVALID, str(exc))
            continue
        table.targets.append(target)
        ref = target.scale_target
        service_key = (key.namespace, ref.service)
        table.services[key] = service_key
        service = services.get(service_key)
        port = ref.port
        if service is None:
            table.conditions[key] = Condition(
                False, REASON_NO_SERVICE, f"Service {key.namespace}/{ref.service} not found; requests will be held"
            )
        elif port is None and ref.port_name is not None:
            port = service_port(service, ref.port_name)
            if port is None:
                table.conditions[key] = Condition(
                    False, REASON_NO_PORT, f"Service {key.namespace}/{ref.service} has no port named {ref.port_name!r}"
                )
        if port is not None:
            table.ports[key] = port
            cluster = istio_cluster_name(ref.service, key.namespace, port)
            # Two HTTPScaledObjects for one Service port: the first by name owns the cluster mapping; host
            # matching still tells them apart.
            table.clusters.setdefault(cluster, key)
        table.conditions.setdefault(
            key, Condition(True, REASON_OK, f"routing to {ref.service}:{port}; scaling {ref.kind}/{ref.name}")
        )
    return table


def _sort_key(document: Mapping[str, Any]) -> tuple[str, str]:
    metadata = document.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
