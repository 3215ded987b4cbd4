"""A pretend kubelet + deployment controller: replicas that become ready after a delay.

For every apps/v1 Deployment it keeps `spec.replicas` replicas, each with an
address and a readiness flag (not ready at first, ready after the
deployment's delay), and writes `status.replicas/readyReplicas/...` to match.
No Pod objects are created; replicas are what EndpointSlices point at.
Driven by store events and readiness timers, never by polling.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .deferral import Coalescer
from .errors import ApiError
from .history import StoreEvent
from .objects import meta, stable_suffix
from .registry import GroupResource, ResourceType
from .store import Store

JsonObj = dict[str, Any]
DEPLOYMENTS = GroupResource("apps", "deployments")
# Annotation a test can put on a Deployment to set its readiness delay (seconds).
READY_DELAY_ANNOTATION = "kubeemu.test/ready-delay-seconds"

AddressHook = Callable[[str, str, int], str]  # (namespace, deployment, index) -> IP
DeploymentKey = tuple[str, str]  # (namespace, name)
ChangeListener = Callable[[DeploymentKey], None]


@dataclass
class Replica:
    """One running copy of a deployment's pod template."""

    index: int
    pod_name: str
    address: str
    ready: bool = False
    serial: int = 0


class FakeKubelet:
    def __init__(
        self, store: Store, *, ready_delay: float | None = 0.0, address_for: AddressHook | None = None
    ) -> None:
        """`ready_delay=None` leaves replicas unready until `set_ready` is called."""
        self.store = store
        self.ready_delay = ready_delay
        self.address_for = address_for
        self.listeners: list[ChangeListener] = []
        self._delays: dict[DeploymentKey, float | None] = {}
        self._replicas: dict[DeploymentKey, list[Replica]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._serials = itertools.count(1)
        self._addresses = itertools.count(1)
        self._dirty: set[DeploymentKey] = set()
        self._sync = Coalescer(self._sync_dirty)
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        if self._unsubscribe is None:
            self._unsubscribe = self.store.subscribe(self._on_event)
            for obj in self.store.items(DEPLOYMENTS):
                self._mark((meta(obj)["namespace"], meta(obj)["name"]))

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # -- test controls -----------------------------------------------------

    def replicas(self, namespace: str, deployment: str) -> list[Replica]:
        return list(self._replicas.get((namespace, deployment), []))

    def set_ready_delay(self, namespace: str, deployment: str, seconds: float | None) -> None:
        """Delay for replicas started from now on (None: never ready by themselves)."""
        self._delays[(namespace, deployment)] = seconds

    def set_ready(self, namespace: str, deployment: str, index: int, ready: bool) -> None:
        """Flip one replica's readiness by hand (e.g. to simulate a crash)."""
        for replica in self._replicas.get((namespace, deployment), []):
            if replica.index == index:
                timer = self._timers.pop(replica.serial, None)
                if timer is not None:
                    timer.cancel()
                replica.ready = ready
        self._mark((namespace, deployment))

    # -- reconciliation ----------------------------------------------------

    def _on_event(self, event: StoreEvent) -> None:
        if event.gr == DEPLOYMENTS:
            self._mark(event.key)

    def _mark(self, key: DeploymentKey) -> None:
        self._dirty.add(key)
        self._sync.poke()

    def _sync_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for key in sorted(dirty):
            self._sync_one(key)

    def _delay_for(self, key: DeploymentKey, obj: JsonObj) -> float | None:
        annotated = (meta(obj).get("annotations") or {}).get(READY_DELAY_ANNOTATION)
        if annotated is not None:
            return float(annotated)
        return self._delays.get(key, self.ready_delay)

    def _sync_one(self, key: DeploymentKey) -> None:
        rt = self.store.registry.storage_type(DEPLOYMENTS)
        obj = self.store.get(DEPLOYMENTS, *key)
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

    def _resize(self, key: DeploymentKey, current: list[Replica], desired: int, delay: float | None) -> bool:
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

    def _new_replica(self, key: DeploymentKey, index: int, delay: float | None) -> Replica:
        namespace, name = key
        if self.address_for is not None:
            address = self.address_for(namespace, name, index)
        else:
            n = next(self._addresses) - 1
            address = f"127.0.{n // 254}.{n % 254 + 1}"
        template_hash = stable_suffix(f"{namespace}/{name}", 10)
        replica = Replica(
            index=index,
            serial=next(self._serials),
            address=address,
            pod_name=f"{name}-{template_hash}-{stable_suffix(f'{namespace}/{name}/{index}', 5)}",
        )
        if delay is not None:
            loop = asyncio.get_running_loop()
            self._timers[replica.serial] = loop.call_later(delay, self._become_ready, key, replica)
        return replica

    def _become_ready(self, key: DeploymentKey, replica: Replica) -> None:
        self._timers.pop(replica.serial, None)
        replica.ready = True
        self._mark(key)
        self._notify(key)

    def _write_status(self, rt: ResourceType, obj: JsonObj, replicas: list[Replica]) -> None:
        ready = sum(1 for r in replicas if r.ready)
        total = len(replicas)
        status: JsonObj = dict(obj.get("status") or {})
        status["observedGeneration"] = meta(obj).get("generation", 1)
        for field, value in (
            ("replicas", total),
            ("updatedReplicas", total),
            ("readyReplicas", ready),
            ("availableReplicas", ready),
            ("unavailableReplicas", total - ready),
        ):
            if value:
                status[field] = value
            else:
                status.pop(field, None)  # the API omits zero counts
        if status == obj.get("status"):
            return
        obj["status"] = status
        try:
            self.store.update(rt, obj)
        except ApiError:
            self._mark((meta(obj)["namespace"], meta(obj)["name"]))

    def _notify(self, key: DeploymentKey) -> None:
        for listener in list(self.listeners):
            listener(key)
