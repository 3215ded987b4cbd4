"""Pod objects for the fake kubelet's replicas, as the ReplicaSet and StatefulSet controllers and the kubelet
leave them (optional: `KubeEmulator.enable_kubelet(pods=True)`).

One Pod per replica, named as the replica (the name its EndpointSlice endpoint's `targetRef` carries), with
the workload's pod template labels (plus `pod-template-hash` for a Deployment's; a StatefulSet owns its own,
a Deployment's has no owner here, for want of ReplicaSets), the template's spec, and a status the kubelet
writes: `Running`, `podIP`, and the `Ready` condition following the replica. A replica that goes is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .deferral import DirtyKeys
from .errors import ApiError
from .history import StoreEvent
from .kubelet import DEPLOYMENTS, WORKLOADS, FakeKubelet, Replica, WorkloadKey, template_hash, workload_order
from .objects import meta
from .owned import sync_owned
from .registry import GroupResource
from .store import Store

JsonObj = dict[str, Any]
PODS = GroupResource("", "pods")
TEMPLATE_HASH_LABEL = "pod-template-hash"
# Pods this controller made carry this annotation, so it never touches a Pod a test created itself.
OWNED_ANNOTATION = "kubeemu.test/replica-of"


def _pod(gr: GroupResource, workload: JsonObj, replica: Replica) -> JsonObj:
    namespace, name = meta(workload)["namespace"], meta(workload)["name"]
    template = (workload.get("spec") or {}).get("template") or {}
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    metadata: JsonObj = {
        "name": replica.pod_name,
        "namespace": namespace,
        "labels": labels,
        "annotations": {OWNED_ANNOTATION: f"{gr.resource}/{name}"},
    }
    if gr == DEPLOYMENTS:
        # Its owner would be the ReplicaSet `<deployment>-<hash>`, which the emulator does not keep (and its
        # garbage collector deletes a dependent whose owner does not exist): no ownerReference.
        labels[TEMPLATE_HASH_LABEL] = template_hash(namespace, name)
    else:
        owner = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": meta(workload).get("uid", "")}
        metadata["ownerReferences"] = [{**owner, "controller": True, "blockOwnerDeletion": True}]
    ready = "True" if replica.ready else "False"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": dict(template.get("spec") or {}),
        "status": {
            "phase": "Running",
            "podIP": replica.address,
            "podIPs": [{"ip": replica.address}],
            "conditions": [
                {"type": "Ready", "status": ready, "lastProbeTime": None},
                {"type": "ContainersReady", "status": ready, "lastProbeTime": None},
            ],
        },
    }


class PodController:
    """Keeps one Pod per fake-kubelet replica, namespace by namespace, driven by replica changes."""

    def __init__(self, store: Store, kubelet: FakeKubelet) -> None:
        self.store = store
        self.kubelet = kubelet
        self._dirty = DirtyKeys(self._sync_one, workload_order)
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        if self._unsubscribe is not None:
            return
        self._unsubscribe = self.store.subscribe(self._on_event)
        self.kubelet.listeners.append(self._mark)
        for gr in WORKLOADS:
            for obj in self.store.items(gr):
                self._mark((gr, meta(obj)["namespace"], meta(obj)["name"]))

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._mark in self.kubelet.listeners:
            self.kubelet.listeners.remove(self._mark)

    def _on_event(self, event: StoreEvent) -> None:
        if event.gr in WORKLOADS:
            self._mark((event.gr, *event.key))

    def _mark(self, key: WorkloadKey) -> None:
        self._dirty.mark(key)

    def _sync_one(self, key: WorkloadKey) -> None:
        gr, namespace, name = key
        rt = self.store.registry.storage_type(PODS)
        if rt is None:
            return
        workload = self.store.get(gr, namespace, name)
        wanted: dict[str, JsonObj] = {}
        if workload is not None:
            for replica in self.kubelet.replicas(namespace, name, resource=gr):
                pod = _pod(gr, workload, replica)
                wanted[pod["metadata"]["name"]] = pod
        owned = f"{gr.resource}/{name}"
        existing = {
            meta(o)["name"]: o
            for o in self.store.items(PODS, namespace)
            if (meta(o).get("annotations") or {}).get(OWNED_ANNOTATION) == owned
        }
        try:
            sync_owned(self.store, rt, namespace, existing, wanted, ("spec", "status"))
        except ApiError:
            self._mark(key)
