"""A pretend kubelet + Deployment and StatefulSet controllers: replicas that become ready after a delay.

For every apps/v1 Deployment and StatefulSet it keeps `spec.replicas` replicas,
each with an address and a readiness flag (not ready at first, ready after the
workload's delay), and writes `status.replicas/readyReplicas/...` to match,
encoded as the real controllers' status reads back (`encoding`: a Deployment's
zero counts are absent, a StatefulSet's `replicas` and `availableReplicas` are not).
Pod objects are made only on request (`pods.PodController`); replicas are what EndpointSlices point at.
StatefulSet replicas are named `<name>-<ordinal>` and all start at once, as
with `podManagementPolicy: Parallel`.
Driven by store events and readiness timers, never by polling.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .deferral import DirtyKeys
from .encoding import DEPLOYMENT_STATUS, STATEFULSET_STATUS, Tags, write_fields
from .errors import ApiError
from .history import StoreEvent
from .objects import meta, name_of, stable_suffix
from .registry import GroupResource, ResourceType
from .store import Store

JsonObj = dict[str, Any]
DEPLOYMENTS = GroupResource("apps", "deployments")
STATEFULSETS = GroupResource("apps", "statefulsets")
WORKLOADS = (DEPLOYMENTS, STATEFULSETS)
# Annotation a test can put on a workload to set its readiness delay (seconds).
READY_DELAY_ANNOTATION = "kubeemu.test/ready-delay-seconds"

AddressHook = Callable[[str, str, int], str]  # (namespace, workload name, index) -> IP
WorkloadKey = tuple[GroupResource, str, str]  # (resource, namespace, name)
ChangeListener = Callable[[WorkloadKey], None]


@dataclass
class Replica:
    """One running copy of a deployment's pod template."""

    index: int
    pod_name: str
    address: str
    ready: bool = False
    serial: int = 0


def workload_order(key: WorkloadKey) -> tuple[str, str, str]:
    """The order workloads are synced in, in one pass."""
    return str(key[0]), key[1], key[2]


def template_hash(namespace: str, name: str) -> str:
    """A Deployment's `pod-template-hash` here (the middle part of its pods' names)."""
    return stable_suffix(f"{namespace}/{name}", 10)


def _deployment_status(obj: JsonObj, total: int, ready: int) -> JsonObj:
    return {
        "observedGeneration": meta(obj).get("generation", 1),
        "replicas": total,
        "updatedReplicas": total,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": total - ready,
    }


def _statefulset_status(obj: JsonObj, total: int, ready: int) -> JsonObj:
    revision = f"{name_of(obj)}-{stable_suffix(name_of(obj), 10)}"
    return {
        "observedGeneration": meta(obj).get("generation", 1),
        "replicas": total,
        "readyReplicas": ready,
        "currentReplicas": total,
        "updatedReplicas": total,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
        "availableReplicas": ready,
    }


StatusWriter = Callable[[JsonObj, int, int], JsonObj]  # (workload, replicas, ready replicas) -> status fields
_STATUS: dict[GroupResource, tuple[StatusWriter, Tags]] = {
    DEPLOYMENTS: (_deployment_status, DEPLOYMENT_STATUS),
    STATEFULSETS: (_statefulset_status, STATEFULSET_STATUS),
}


class FakeKubelet:
    def __init__(
        self, store: Store, *, ready_delay: float | None = 0.0, address_for: AddressHook | None = None
    ) -> None:
        """`ready_delay=None` leaves replicas unready until `set_ready` is called."""
        self.store = store
        self.ready_delay = ready_delay
        self.address_for = address_for
        self.listeners: list[ChangeListener] = []
        self._delays: dict[WorkloadKey, float | None] = {}
        self._replicas: dict[WorkloadKey, list[Replica]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._serials = itertools.count(1)
        self._addresses = itertools.count(1)
        self._dirty = DirtyKeys(self._sync_one, workload_order)
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe(self._on_event)
            for gr in WORKLOADS:
                for obj in self.store.items(gr):
                    self._mark((gr, meta(obj)["namespace"], meta(obj)["name"]))

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # -- test controls -----------------------------------------------------

    def replicas(self, namespace: str, name: str, *, resource: GroupResource = DEPLOYMENTS) -> list[Replica]:
        return list(self._replicas.get((resource, namespace, name), []))

    def set_ready_delay(
        self, namespace: str, name: str, seconds: float | None, *, resource: GroupResource = DEPLOYMENTS
    ) -> None:
        """Delay for replicas started from now on (None: never ready by themselves)."""
        self._delays[(resource, namespace, name)] = seconds

    def set_ready(
        self, namespace: str, name: str, index: int, ready: bool, *, resource: GroupResource = DEPLOYMENTS
    ) -> None:
        """Flip one replica's readiness by hand (e.g. to simulate a crash)."""
        key = (resource, namespace, name)
        for replica in self._replicas.get(key, []):
            if replica.index == index:
                timer = self._timers.pop(replica.serial, None)
                if timer is not None:
                    timer.cancel()
                replica.ready = ready
        self._mark(key)

    # -- reconciliation ----------------------------------------------------

    def _on_event(self, event: StoreEvent) -> None:
        if event.gr in WORKLOADS:
            self._mark((event.gr, *event.key))

    def _mark(self, key: WorkloadKey) -> None:
        self._dirty.mark(key)

    def _delay_for(self, key: WorkloadKey, obj: JsonObj) -> float | None:
        annotated = (meta(obj).get("annotations") or {}).get(READY_DELAY_ANNOTATION)
        if annotated is not None:
            return float(annotated)
        return self._delays.get(key, self.ready_delay)

    def _sync_one(self, key: WorkloadKey) -> None:
        gr, namespace, name = key
        rt = self.store.registry.storage_type(gr)
        obj = self.store.get(gr, namespace, name)
        current = self._replicas.setdefault(key, [])
        if obj is None or rt is None:
            self._resize(key, current, 0, None)
            del self._replicas[key]
            self._notify(key)
            return
        desired = (obj.get("spec") or {}).get("replicas", 1)
        changed = self._resize(key, current, int(desired), self._delay_for(key, obj))
        self._write_status(rt, obj, current)
        if changed:
            self._notify(key)

    def _resize(self, key: WorkloadKey, current: list[Replica], desired: int, delay: float | None) -> bool:
        changed = False
        while len(current) > desired:
            gone = current.pop()
            timer = self._timers.pop(gone.serial, None)
            if timer is not None:
                timer.cancel()
            changed = True
        while len(current) < desired:
            current.append(self._new_replica(key, len(current), delay))
            changed = True
        return changed

    def _new_replica(self, key: WorkloadKey, index: int, delay: float | None) -> Replica:
        gr, namespace, name = key
        if self.address_for is not None:
            address = self.address_for(namespace, name, index)
        else:
            n = next(self._addresses) - 1
            address = f"127.0.{n // 254}.{n % 254 + 1}"
        if gr == STATEFULSETS:
            pod_name = f"{name}-{index}"
        else:
            pod_name = f"{name}-{template_hash(namespace, name)}-{stable_suffix(f'{namespace}/{name}/{index}', 5)}"
        replica = Replica(index=index, serial=next(self._serials), address=address, pod_name=pod_name)
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._timers[replica.serial] = loop.call_later(delay, self._become_ready, key, replica)
        return replica

    def _become_ready(self, key: WorkloadKey, replica: Replica) -> None:
        self._timers.pop(replica.serial, None)
        replica.ready = True
        self._mark(key)
        self._notify(key)

    def _write_status(self, rt: ResourceType, obj: JsonObj, replicas: list[Replica]) -> None:
        fields, tags = _STATUS[rt.group_resource]
        status = write_fields(
            dict(obj.get("status") or {}), fields(obj, len(replicas), sum(1 for r in replicas if r.ready)), tags
        )
        if status == obj.get("status"):
            return
        obj["status"] = status
        try:
            self.store.update(rt, obj)
        except ApiError:
            self._mark((rt.group_resource, meta(obj)["namespace"], meta(obj)["name"]))

    def _notify(self, key: WorkloadKey) -> None:
        for listener in list(self.listeners):
            listener(key)
