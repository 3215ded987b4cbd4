"""The object store: one global resourceVersion, change events, finalizer mechanics.

This plays etcd plus the generic registry's bookkeeping: it assigns uid,
creationTimestamp, resourceVersion and (for kinds that keep one) generation,
skips no-op updates (no new resourceVersion, no event, as etcd3's
GuaranteedUpdate does), and turns a delete of an object with finalizers into
setting `deletionTimestamp`. API
rules (validation, status masking, preconditions from request bodies) live in
`apiserver`; this layer only enforces the resourceVersion precondition.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from typing import Any

from . import errors
from .history import EventType, History, StoreEvent
from .objects import meta, new_uid, now_rfc3339
from .registry import GroupResource, Registry, ResourceType

JsonObj = dict[str, Any]
Listener = Callable[[StoreEvent], None]
ObjKey = tuple[str, str]

NAMESPACES = GroupResource("", "namespaces")
log = logging.getLogger(__name__)


def finalizers(gr: GroupResource, obj: JsonObj) -> list[str]:
    """Pending finalizers, including a Namespace's `spec.finalizers`."""
    found = list(meta(obj).get("finalizers") or [])
    if gr == NAMESPACES:
        found += list((obj.get("spec") or {}).get("finalizers") or [])
    return found


def _generation_content(rt: ResourceType, obj: JsonObj) -> JsonObj:
    ignored = {"metadata", "apiVersion", "kind"} | ({"status"} if rt.status else set())
    return {k: v for k, v in obj.items() if k not in ignored}


# Views `view` keeps (one per resource a paged list is reading at once).
_KEPT_VIEWS = 16


class Store:
    def __init__(self, registry: Registry, *, history_limit: int = 100_000) -> None:
        self.registry = registry
        self.history = History(history_limit)
        self._rv = 0
        self._objects: dict[GroupResource, dict[ObjKey, JsonObj]] = {}
        self._uids: dict[str, tuple[GroupResource, ObjKey]] = {}
        self._listeners: list[Listener] = []
        self._views: dict[tuple[GroupResource, str | None, int], list[tuple[ObjKey, JsonObj]]] = {}

    @property
    def resource_version(self) -> int:
        return self._rv

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # -- reads -------------------------------------------------------------

    def get(self, gr: GroupResource, namespace: str, name: str) -> JsonObj | None:
        obj = self._objects.get(gr, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def get_by_uid(self, uid: str) -> tuple[GroupResource, JsonObj] | None:
        where = self._uids.get(uid)
        if where is None:
            return None
        gr, key = where
        return gr, copy.deepcopy(self._objects[gr][key])

    def items(self, gr: GroupResource, namespace: str | None = None) -> list[JsonObj]:
        """Current objects sorted by (namespace, name), like etcd key order."""
        return [copy.deepcopy(obj) for _, obj in self.view(gr, namespace)]

    def snapshot(self, gr: GroupResource, namespace: str | None, rv: int) -> list[JsonObj]:
        """Objects exactly as of `rv`, rebuilt by undoing later events (410 if compacted)."""
        return [copy.deepcopy(obj) for _, obj in self.view(gr, namespace, rv)]

    def view(
        self, gr: GroupResource, namespace: str | None = None, rv: int | None = None
    ) -> list[tuple[ObjKey, JsonObj]]:
        """(key, object) in key order, now or exactly as of `rv`; the stored objects themselves, not copies:
        read them, copy what is served (a list page copies only its own items), never change the list.

        The last few views are kept by (resource, namespace, version): a paged list asks for the same view
        once a page, and building it (replaying the history since `rv`, sorting every key) cost the 20 pages
        of a 10,000-object list seconds. A kept view stays right: a commit stores a new object and moves the
        version; a compacted version still gets its 410."""
        at = self._rv if rv is None else rv
        if rv is not None and rv != self._rv:
            self.history.check(rv)
        kept = self._views.get((gr, namespace, at))
        if kept is not None:
            return kept
        view = self._build_view(gr, namespace, rv)
        self._views[(gr, namespace, at)] = view
        if len(self._views) > _KEPT_VIEWS:
            del self._views[next(iter(self._views))]
        return view

    def _build_view(self, gr: GroupResource, namespace: str | None, rv: int | None) -> list[tuple[ObjKey, JsonObj]]:
        state = self._objects.get(gr, {})
        if rv is not None:
            later = self.history.since(rv)
            state = dict(state)
            for event in reversed(later):
                if event.gr != gr:
                    continue
                if event.type == "ADDED":
                    state.pop(event.key, None)
                elif event.prev is not None:
                    state[event.key] = event.prev
        return [(k, state[k]) for k in sorted(state) if namespace is None or k[0] == namespace]

    def all_objects(self) -> Iterable[tuple[GroupResource, JsonObj]]:
        for gr, objs in list(self._objects.items()):
            for obj in list(objs.values()):
                yield gr, copy.deepcopy(obj)

    # -- writes ------------------------------------------------------------

    def create(self, rt: ResourceType, obj: JsonObj, *, dry_run: bool = False) -> JsonObj:
        gr = rt.group_resource
        new = self._normalized(rt, obj)
        m = meta(new)
        key = (m.get("namespace", ""), m["name"])
        if key in self._objects.get(gr, {}):
            raise errors.already_exists(rt, key[1])
        m["uid"] = new_uid()
        m["creationTimestamp"] = now_rfc3339()
        if rt.tracks_generation:
            m["generation"] = 1
        else:
            m.pop("generation", None)
        m.pop("deletionTimestamp", None)
        m["resourceVersion"] = str(self._rv + 1)
        if dry_run:
            return new
        self._commit("ADDED", gr, key, new, None)
        return copy.deepcopy(new)

    def update(self, rt: ResourceType, obj: JsonObj, *, dry_run: bool = False) -> JsonObj:
        """Replace an object; a set `metadata.resourceVersion` must be current (409)."""
        gr = rt.group_resource
        new = self._normalized(rt, obj)
        m = meta(new)
        key = (m.get("namespace", ""), m["name"])
        old = self._objects.get(gr, {}).get(key)
        if old is None:
            raise errors.not_found(rt, key[1])
        old_meta = old["metadata"]
        wanted_rv = m.get("resourceVersion")
        if wanted_rv and wanted_rv != old_meta["resourceVersion"]:
            raise errors.conflict(rt, key[1])
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if field in old_meta:
                m[field] = old_meta[field]
            else:
                m.pop(field, None)
        if rt.tracks_generation:
            m["generation"] = old_meta.get("generation", 1)
            if _generation_content(rt, new) != _generation_content(rt, old):
                m["generation"] += 1
        else:
            m.pop("generation", None)
        m["resourceVersion"] = old_meta["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)
        m["resourceVersion"] = str(self._rv + 1)
        if dry_run:
            return new
        self._commit("MODIFIED", gr, key, new, old)
        if "deletionTimestamp" in m and not finalizers(gr, new):
            self._remove(gr, key)
        return copy.deepcopy(new)

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        add_finalizers: tuple[str, ...] = (),
        dry_run: bool = False,
    ) -> tuple[JsonObj, bool]:
        """Delete now, or mark for deletion if finalizers remain. Returns (object, gone)."""
        gr = rt.group_resource
        key = (namespace, name)
        old = self._objects.get(gr, {}).get(key)
        if old is None:
            raise errors.not_found(rt, name)
        pending = copy.deepcopy(old)
        m = pending["metadata"]
        if add_finalizers and "deletionTimestamp" not in m:
            current = list(m.get("finalizers") or [])
            m["finalizers"] = current + [f for f in add_finalizers if f not in current]
        if finalizers(gr, pending):
            if "deletionTimestamp" in m and pending == old:
                return copy.deepcopy(old), False
            m.setdefault("deletionTimestamp", now_rfc3339())
            m.setdefault("deletionGracePeriodSeconds", 0)
            if gr == NAMESPACES:
                pending.setdefault("status", {})["phase"] = "Terminating"
            m["resourceVersion"] = str(self._rv + 1)
            if not dry_run:
                self._commit("MODIFIED", gr, key, pending, old)
            return copy.deepcopy(pending), False
        if dry_run:
            return copy.deepcopy(old), True
        return self._remove(gr, key), True

    def compact(self) -> None:
        self.history.compact(self._rv)

    # -- internals ---------------------------------------------------------

    def _normalized(self, rt: ResourceType, obj: JsonObj) -> JsonObj:
        """A copy stamped with the storage version's apiVersion/kind."""
        storage = self.registry.storage_type(rt.group_resource) or rt
        new: JsonObj = {"apiVersion": storage.api_version, "kind": storage.kind}
        new.update(copy.deepcopy({k: v for k, v in obj.items() if k not in new}))
        return new

    def _remove(self, gr: GroupResource, key: ObjKey) -> JsonObj:
        old = self._objects[gr][key]
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._rv + 1)
        self._commit("DELETED", gr, key, gone, old)
        return copy.deepcopy(gone)

    def _commit(
        self,
        kind: EventType,
        gr: GroupResource,
        key: ObjKey,
        obj: JsonObj,
        prev: JsonObj | None,
    ) -> None:
        self._rv += 1
        objs = self._objects.setdefault(gr, {})
        uid = obj["metadata"]["uid"]
        if kind == "DELETED":
            del objs[key]
            self._uids.pop(uid, None)
        else:
            objs[key] = obj
            self._uids[uid] = (gr, key)
        event = StoreEvent(kind, gr, self._rv, copy.deepcopy(obj), copy.deepcopy(prev) if prev is not None else None)
        self.history.append(event)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("store listener failed on %s %s", kind, key)
