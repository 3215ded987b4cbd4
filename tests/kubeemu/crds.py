"""CustomResourceDefinitions: seed CRD objects for registered custom resources, and
serve/unserve resources when CRDs are created or deleted through the API."""

from __future__ import annotations

import contextlib
from typing import Any

from .deferral import call_soon
from .errors import ApiError
from .history import StoreEvent
from .objects import meta
from .registry import GroupResource, Registry, ResourceType, ScalePaths
from .store import Store

JsonObj = dict[str, Any]
CRDS = GroupResource("apiextensions.k8s.io", "customresourcedefinitions")
_ESTABLISHED = [
    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found"},
    {
        "type": "Established",
        "status": "True",
        "reason": "InitialNamesAccepted",
        "message": "the initial names have been accepted",
    },
]


def crd_for(types: list[ResourceType]) -> JsonObj:
    """A CRD object describing the versions of one custom group/resource."""
    first = types[0]
    names: JsonObj = {
        "plural": first.plural,
        "singular": first.singular_name,
        "kind": first.kind,
        "listKind": first.list_kind,
    }
    if first.short_names:
        names["shortNames"] = list(first.short_names)
    versions = []
    for n, rt in enumerate(types):
        subresources: JsonObj = {}
        if rt.status:
            subresources["status"] = {}
        if rt.scale is not None:
            subresources["scale"] = {
                "specReplicasPath": f".{rt.scale.spec_replicas}",
                "statusReplicasPath": f".{rt.scale.status_replicas}",
                "labelSelectorPath": f".{rt.scale.selector}",
            }
        version: JsonObj = {
            "name": rt.version,
            "served": True,
            "storage": n == 0,
            "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
        }
        if subresources:
            version["subresources"] = subresources
        versions.append(version)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{first.plural}.{first.group}"},
        "spec": {
            "group": first.group,
            "names": names,
            "versions": versions,
            "scope": "Namespaced" if first.namespaced else "Cluster",
        },
        "status": {"conditions": _ESTABLISHED, "acceptedNames": names, "storedVersions": [first.version]},
    }


def types_from_crd(crd: JsonObj) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    types = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subs = version.get("subresources") or {}
        scale = subs.get("scale")
        types.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                builtin=False,
                status="status" in subs,
                scale=ScalePaths(
                    spec_replicas=scale.get("specReplicasPath", ".spec.replicas").lstrip("."),
                    status_replicas=scale.get("statusReplicasPath", ".status.replicas").lstrip("."),
                    selector=scale.get("labelSelectorPath", ".status.selector").lstrip("."),
                )
                if isinstance(scale, dict)
                else None,
                short_names=tuple(names.get("shortNames") or ()),
                singular=names.get("singular", ""),
            )
        )
    # The storage version must come first: it is the one registered first.
    storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    types.sort(key=lambda rt: rt.version not in storage)
    return types


class CrdController:
    """Keeps the registry in step with the CRD objects in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._unsubscribe = store.subscribe(self._on_event)

    @property
    def registry(self) -> Registry:
        return self.store.registry

    def close(self) -> None:
        self._unsubscribe()

    def seed(self) -> None:
        """Create CRD objects for the custom resources registered up front."""
        crd_type = self.registry.storage_type(CRDS)
        if crd_type is None:
            return
        grouped: dict[GroupResource, list[ResourceType]] = {}
        for rt in self.registry:
            if not rt.builtin:
                grouped.setdefault(rt.group_resource, []).append(rt)
        for types in grouped.values():
            crd = crd_for(types)
            if self.store.get(CRDS, "", crd["metadata"]["name"]) is None:
                self.store.create(crd_type, crd)

    def _on_event(self, event: StoreEvent) -> None:
        if event.gr != CRDS:
            return
        if event.type == "DELETED":
            spec = event.obj.get("spec") or {}
            gr = GroupResource(spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
            call_soon(lambda: self._unserve(gr))
            return
        for rt in types_from_crd(event.obj):
            self.registry.register(rt)
        if not any(c.get("type") == "Established" for c in (event.obj.get("status") or {}).get("conditions") or []):
            name = meta(event.obj)["name"]
            call_soon(lambda: self._establish(name))

    def _establish(self, name: str) -> None:
        crd = self.store.get(CRDS, "", name)
        crd_type = self.registry.storage_type(CRDS)
        if crd is None or crd_type is None:
            return
        spec = crd.get("spec") or {}
        storage = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
        crd["status"] = {
            "conditions": _ESTABLISHED,
            "acceptedNames": spec.get("names") or {},
            "storedVersions": storage,
        }
        try:
            self.store.update(crd_type, crd)
        except ApiError:
            call_soon(lambda: self._establish(name))

    def _unserve(self, gr: GroupResource) -> None:
        rt = self.registry.storage_type(gr)
        if rt is None:
            return
        for obj in self.store.items(gr):
            with contextlib.suppress(ApiError):
                self.store.delete(rt, meta(obj).get("namespace", ""), meta(obj)["name"])
        self.registry.unregister(gr.group, gr.resource)
