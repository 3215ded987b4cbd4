"""The gateway's pods, as the API server lists them: which are Ready, and at which IP their stats are served.

zerohop reads each Ready gateway pod's Envoy stats to know when the gateway can route a target
(`extproc.envoy.gatewaystats`); this module turns Pod objects into that list. A pod counts while its `Ready`
condition is True, it has an IP, and it is not being deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from extproc.envoy.gatewaystats import GatewayPod
from extproc.providers.kubernetes.api import Resource

PODS = Resource("", "v1", "pods", "Pod")


def is_ready(pod: Mapping[str, Any]) -> bool:
    metadata = pod.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions if isinstance(c, dict))


def ready_gateway_pods(pods: Iterable[Mapping[str, Any]]) -> list[GatewayPod]:
    """The Ready pods among `pods`, sorted by name."""
    ready = [
        GatewayPod(str((pod.get("metadata") or {}).get("name") or ""), str((pod.get("status") or {}).get("podIP")))
        for pod in pods
        if is_ready(pod)
    ]
    return sorted(ready, key=lambda pod: pod.name)
