"""Garbage collection: ownerReferences, propagation finalizers, namespace teardown.

Mirrors what kube-controller-manager does, synchronously after each relevant
commit (on the next loop iteration): dependents whose owners are all gone are
deleted (Background); `orphan` strips ownerReferences from dependents before
the owner goes; `foregroundDeletion` deletes dependents first; a deleted
Namespace has its content removed before it disappears.

A write of an object whose owners all exist is checked alone; only deletions (and a dependent whose owner
is missing) make the collector scan the whole store, so writing N owned objects costs N, not N squared.
"""

from __future__ import annotations

import logging
from typing import Any

from .deferral import Coalescer
from .errors import ApiError
from .history import StoreEvent
from .objects import meta
from .registry import GroupResource
from .store import NAMESPACES, Store

JsonObj = dict[str, Any]
log = logging.getLogger(__name__)


class GarbageCollector:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pass = Coalescer(self.collect)
        self._unsubscribe = store.subscribe(self._on_event)
        self._scan = False
        self._written: set[tuple[GroupResource, str, str]] = set()
        self.scans = 0

    def close(self) -> None:
        self._unsubscribe()

    def _on_event(self, event: StoreEvent) -> None:
        m = event.obj["metadata"]
        if event.type == "DELETED" or "deletionTimestamp" in m:
            self._scan = True
            self._pass.poke()
        elif m.get("ownerReferences"):
            self._written.add((event.gr, *event.key))
            self._pass.poke()

    def collect(self) -> None:
        """Run passes until nothing changes (none when every object written since has its owners)."""
        scan, self._scan = self._scan, False
        written, self._written = self._written, set()
        if not scan and all(self._has_owners(*where) for where in written):
            return
        self.scans += 1
        while self._one_pass():
            pass

    def _has_owners(self, gr: GroupResource, namespace: str, name: str) -> bool:
        obj = self.store.get(gr, namespace, name)
        if obj is None:
            return True  # deleted since: its DELETED event asked for a scan
        refs = meta(obj).get("ownerReferences") or []
        return all(self.store.get_by_uid(r.get("uid", "")) is not None for r in refs)

    def _one_pass(self) -> bool:
        changed = False
        objects = list(self.store.all_objects())
        for gr, obj in objects:
            m = meta(obj)
            if "deletionTimestamp" not in m:
                continue
            fins = m.get("finalizers") or []
            if "orphan" in fins:
                changed |= self._orphan(gr, obj, objects)
            elif "foregroundDeletion" in fins:
                changed |= self._foreground(gr, obj, objects)
            if gr == NAMESPACES:
                changed |= self._empty_namespace(obj, objects)
        for gr, obj in objects:
            refs = meta(obj).get("ownerReferences") or []
            if (
                refs
                and "deletionTimestamp" not in meta(obj)
                and all(self.store.get_by_uid(r.get("uid", "")) is None for r in refs)
            ):
                changed |= self._delete(gr, obj)
        return changed

    def _dependents(
        self, owner: JsonObj, objects: list[tuple[GroupResource, JsonObj]]
    ) -> list[tuple[GroupResource, JsonObj]]:
        uid = meta(owner)["uid"]
        return [(gr, o) for gr, o in objects if any(r.get("uid") == uid for r in meta(o).get("ownerReferences") or [])]

    def _orphan(self, gr: GroupResource, owner: JsonObj, objects: list[tuple[GroupResource, JsonObj]]) -> bool:
        uid = meta(owner)["uid"]
        for dgr, dep in self._dependents(owner, objects):
            meta(dep)["ownerReferences"] = [r for r in meta(dep)["ownerReferences"] if r.get("uid") != uid]
            if not meta(dep)["ownerReferences"]:
                del meta(dep)["ownerReferences"]
            self._update(dgr, dep)
        return self._drop_finalizer(gr, owner, "orphan")

    def _foreground(self, gr: GroupResource, owner: JsonObj, objects: list[tuple[GroupResource, JsonObj]]) -> bool:
        dependents = self._dependents(owner, objects)
        if not dependents:
            return self._drop_finalizer(gr, owner, "foregroundDeletion")
        changed = False
        for dgr, dep in dependents:
            if "deletionTimestamp" not in meta(dep):
                changed |= self._delete(dgr, dep)
        return changed

    def _empty_namespace(self, ns: JsonObj, objects: list[tuple[GroupResource, JsonObj]]) -> bool:
        name = meta(ns)["name"]
        content = [(gr, o) for gr, o in objects if meta(o).get("namespace") == name]
        if content:
            changed = False
            for gr, obj in content:
                if "deletionTimestamp" not in meta(obj):
                    changed |= self._delete(gr, obj)
            return changed
        if meta(ns).get("finalizers"):
            return False
        ns.setdefault("spec", {})["finalizers"] = []
        return self._update(NAMESPACES, ns)

    def _drop_finalizer(self, gr: GroupResource, obj: JsonObj, finalizer: str) -> bool:
        meta(obj)["finalizers"] = [f for f in meta(obj)["finalizers"] if f != finalizer]
        return self._update(gr, obj)

    def _update(self, gr: GroupResource, obj: JsonObj) -> bool:
        rt = self.store.registry.storage_type(gr)
        if rt is None:
            return False
        try:
            self.store.update(rt, obj)
        except ApiError as exc:
            log.debug("gc update of %s skipped: %s", meta(obj).get("name"), exc)
            return False
        return True

    def _delete(self, gr: GroupResource, obj: JsonObj) -> bool:
        rt = self.store.registry.storage_type(gr)
        if rt is None:
            return False
        try:
            self.store.delete(rt, meta(obj).get("namespace", ""), meta(obj)["name"])
        except ApiError as exc:
            log.debug("gc delete of %s skipped: %s", meta(obj).get("name"), exc)
            return False
        return True
