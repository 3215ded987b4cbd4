"""A pretend EndpointSlice controller fed by the fake kubelet's replicas.

For each Service and each Deployment or StatefulSet it selects (service
`spec.selector` matches the pod template labels) it keeps one EndpointSlice
`<service>-<stable suffix>`, labelled `kubernetes.io/service-name`, owned by
the Service, with the Service's ports and one endpoint per replica. With no
replicas the slice is the controller's placeholder, which reads back
`"ports": null, "endpoints": null` (see `encoding`). Slices it manages for
pairs that no longer exist are deleted. A Service selecting nothing gets no
slice (a real controller would keep an empty placeholder).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .deferral import DirtyKeys
from .encoding import ENDPOINT_SLICE, write_fields
from .errors import ApiError
from .history import StoreEvent
from .kubelet import DEPLOYMENTS, WORKLOADS, FakeKubelet, Replica, WorkloadKey
from .objects import meta, stable_suffix
from .owned import sync_owned
from .registry import GroupResource
from .selectors import map_selects
from .store import Store

JsonObj = dict[str, Any]
SERVICES = GroupResource("", "services")
ENDPOINTSLICES = GroupResource("discovery.k8s.io", "endpointslices")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
NODE_NAME = "kubeemu-node"


def _ports(service: JsonObj, workload: JsonObj) -> list[JsonObj]:
    containers = (((workload.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    named = {
        p["name"]: p["containerPort"]
        for c in containers
        for p in c.get("ports") or []
        if "name" in p and "containerPort" in p
    }
    ports = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        target = sp.get("targetPort", sp.get("port"))
        number = target if isinstance(target, int) else named.get(str(target), sp.get("port"))
        port: JsonObj = {"name": sp.get("name", ""), "port": number, "protocol": sp.get("protocol", "TCP")}
        if "appProtocol" in sp:
            port["appProtocol"] = sp["appProtocol"]
        ports.append(port)
    return ports


def _endpoint(namespace: str, replica: Replica) -> JsonObj:
    return {
        "addresses": [replica.address],
        "conditions": {"ready": replica.ready, "serving": replica.ready, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": namespace, "name": replica.pod_name},
        "nodeName": NODE_NAME,
    }


class EndpointsController:
    def __init__(self, store: Store, kubelet: FakeKubelet) -> None:
        self.store = store
        self.kubelet = kubelet
        self._dirty = DirtyKeys(self._sync_namespace, str)
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        if self._unsubscribe is not None:
            return
        self._unsubscribe = self.store.subscribe(self._on_event)
        self.kubelet.listeners.append(self._on_replicas)
        for obj in self.store.items(SERVICES):
            self._mark(meta(obj)["namespace"])

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._on_replicas in self.kubelet.listeners:
            self.kubelet.listeners.remove(self._on_replicas)

    def _on_event(self, event: StoreEvent) -> None:
        if event.gr in (SERVICES, *WORKLOADS) or (
            event.gr == ENDPOINTSLICES and (meta(event.obj).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        ):
            self._mark(event.key[0])

    def _on_replicas(self, key: WorkloadKey) -> None:
        self._mark(key[1])

    def _mark(self, namespace: str) -> None:
        self._dirty.mark(namespace)

    def desired(self, namespace: str) -> dict[str, JsonObj]:
        slices: dict[str, JsonObj] = {}
        workloads = [(gr, w) for gr in WORKLOADS for w in self.store.items(gr, namespace)]
        for service in self.store.items(SERVICES, namespace):
            selector = (service.get("spec") or {}).get("selector")
            svc_name = meta(service)["name"]
            for gr, workload in workloads:
                labels = ((workload.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels")
                if not map_selects(selector, labels):
                    continue
                workload_name = meta(workload)["name"]
                # Deployments keep their slice names; a same-named StatefulSet must not share one.
                seed = (
                    f"{svc_name}/{workload_name}" if gr == DEPLOYMENTS else f"{svc_name}/{gr.resource}/{workload_name}"
                )
                name = f"{svc_name}-{stable_suffix(seed, 5)}"
                replicas = self.kubelet.replicas(namespace, workload_name, resource=gr)
                slice_: JsonObj = {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": {SERVICE_NAME_LABEL: svc_name, MANAGED_BY_LABEL: MANAGED_BY},
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Service",
                                "name": svc_name,
                                "uid": meta(service)["uid"],
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "addressType": "IPv4",
                }
                # The real controller takes ports from the pods, so with none the placeholder has no ports either.
                ports = _ports(service, workload) if replicas else []
                endpoints = [_endpoint(namespace, r) for r in replicas]
                slices[name] = write_fields(slice_, {"ports": ports, "endpoints": endpoints}, ENDPOINT_SLICE)
        return slices

    def _sync_namespace(self, namespace: str) -> None:
        rt = self.store.registry.storage_type(ENDPOINTSLICES)
        if rt is None:
            return
        wanted = self.desired(namespace)
        existing = {
            meta(o)["name"]: o
            for o in self.store.items(ENDPOINTSLICES, namespace)
            if (meta(o).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        }
        try:
            sync_owned(self.store, rt, namespace, existing, wanted, ("addressType", "ports", "endpoints"))
        except ApiError:
            self._mark(namespace)
