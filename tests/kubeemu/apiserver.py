"""The API server's write/read rules on top of the store, independent of HTTP.

Covers: type meta and name checks, generateName, namespace existence,
status-subresource masking, resourceVersion preconditions, patch types,
the scale subresource, delete options (preconditions, propagationPolicy via
the `orphan` / `foregroundDeletion` finalizers the garbage collector honours).
`privileged=True` is the test-side "god mode": status is writable through the
main resource and custom resources may be updated without a resourceVersion.
"""

from __future__ import annotations

import builtins
import copy
import json
from dataclasses import dataclass
from typing import Any

from . import errors
from .defaults import apply_defaults
from .jsonpatch import PatchError, PatchFormatError, apply_json_patch
from .listing import ListQuery, Selection, list_item, list_objects
from .mergepatch import apply_merge_patch, apply_strategic_merge_patch
from .objects import meta, name_suffix, present
from .registry import Registry, ResourceType
from .scale import apply_scale, to_scale
from .store import NAMESPACES, Store
from .validation import check_type_meta, validate

JsonObj = dict[str, Any]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

_POLICY_FINALIZERS = {"Orphan": ("orphan",), "Foreground": ("foregroundDeletion",), "Background": ()}


@dataclass(frozen=True)
class DeleteOptions:
    propagation_policy: str | None = None
    orphan_dependents: bool | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    dry_run: bool = False

    @classmethod
    def from_body(cls, body: Any, *, propagation_policy: str | None = None, dry_run: bool = False) -> DeleteOptions:
        body = body if isinstance(body, dict) else {}
        pre = body.get("preconditions") or {}
        return cls(
            propagation_policy=body.get("propagationPolicy") or propagation_policy,
            orphan_dependents=body.get("orphanDependents"),
            precondition_uid=pre.get("uid"),
            precondition_rv=pre.get("resourceVersion"),
            dry_run=dry_run or bool(body.get("dryRun")),
        )


class ApiServer:
    def __init__(self, store: Store, *, auto_create_namespaces: bool = True) -> None:
        self.store = store
        self.auto_create_namespaces = auto_create_namespaces

    @property
    def registry(self) -> Registry:
        return self.store.registry

    # -- reads -------------------------------------------------------------

    def _existing(self, rt: ResourceType, namespace: str, name: str) -> JsonObj:
        obj = self.store.get(rt.group_resource, namespace if rt.namespaced else "", name)
        if obj is None:
            raise errors.not_found(rt, name)
        return obj

    def get(self, rt: ResourceType, namespace: str, name: str, subresource: str | None = None) -> JsonObj:
        obj = self._existing(rt, namespace, name)
        if subresource == "scale":
            return to_scale(rt, obj)
        return present(rt, obj)

    def list(self, rt: ResourceType, namespace: str | None, query: ListQuery, *, to_encode: bool = False) -> JsonObj:
        """One list (page); `to_encode`: see `list_objects`."""
        return list_objects(self.store, rt, namespace if rt.namespaced else None, query, to_encode=to_encode)

    # -- create ------------------------------------------------------------

    def create(
        self, rt: ResourceType, namespace: str, body: Any, *, dry_run: bool = False, privileged: bool = False
    ) -> JsonObj:
        obj = self._body_object(body)
        check_type_meta(rt, obj)
        m = meta(obj)
        self._place(rt, obj, namespace)
        if m.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        if rt.status and not privileged:
            if rt.builtin:
                obj["status"] = {}
            else:
                obj.pop("status", None)
        if rt.namespaced:
            self._require_namespace(rt, namespace, dry_run=dry_run)
        generate = not m.get("name") and m.get("generateName")
        for _attempt in range(8):
            if generate:
                m["name"] = f"{m['generateName']}{name_suffix()}"
            if not m.get("name"):
                raise errors.invalid(
                    rt,
                    "",
                    [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")],
                )
            apply_defaults(rt, obj)
            validate(rt, obj)
            try:
                return present(rt, self.store.create(rt, obj, dry_run=dry_run))
            except errors.ApiError as exc:
                if not (generate and exc.reason == "AlreadyExists"):
                    raise
        raise errors.already_exists(rt, m["name"])

    # -- update ------------------------------------------------------------

    def replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        privileged: bool = False,
    ) -> JsonObj:
        if subresource == "scale":
            return self._replace_scale(rt, namespace, name, body, dry_run=dry_run)
        obj = self._body_object(body)
        check_type_meta(rt, obj)
        existing = self._existing(rt, namespace, name)
        if not meta(obj).get("resourceVersion") and not rt.builtin and not privileged:
            raise errors.invalid(
                rt,
                name,
                [
                    (
                        "metadata.resourceVersion",
                        "FieldValueInvalid",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        return self._update(
            rt, namespace, name, obj, existing, subresource=subresource, dry_run=dry_run, privileged=privileged
        )

    def _update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        obj: JsonObj,
        existing: JsonObj,
        *,
        subresource: str | None,
        dry_run: bool,
        privileged: bool,
    ) -> JsonObj:
        m = meta(obj)
        if m.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({m.get('name')}) does not match the name on the URL ({name})"
            )
        m["name"] = name
        self._place(rt, obj, namespace)
        if subresource == "status":
            status = obj.get("status")
            obj = copy.deepcopy(existing) | {"apiVersion": obj["apiVersion"], "kind": obj["kind"]}
            meta(obj)["resourceVersion"] = m.get("resourceVersion") or ""
            if status is None:
                obj.pop("status", None)
            else:
                obj["status"] = status
        elif rt.status and not privileged:
            if "status" in existing:
                obj["status"] = existing["status"]
            else:
                obj.pop("status", None)
        apply_defaults(rt, obj)
        validate(rt, obj)
        return present(rt, self.store.update(rt, obj, dry_run=dry_run))

    def _replace_scale(self, rt: ResourceType, namespace: str, name: str, body: Any, *, dry_run: bool) -> JsonObj:
        scale = self._body_object(body)
        check_type_meta(rt, scale, expect_kind="Scale", expect_api_version="autoscaling/v1")
        if meta(scale).get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta(scale).get('name')}) does not match the name on the URL ({name})"
            )
        existing = self._existing(rt, namespace, name)
        updated = self.store.update(rt, apply_scale(rt, existing, scale), dry_run=dry_run)
        return to_scale(rt, updated)

    # -- patch -------------------------------------------------------------

    def accepted_patch_types(self, rt: ResourceType, subresource: str | None) -> builtins.list[str]:
        types = [JSON_PATCH, MERGE_PATCH]
        if rt.builtin or subresource == "scale":
            types.append(STRATEGIC_PATCH)
        return types

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        raw: bytes,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        privileged: bool = False,
    ) -> JsonObj:
        ctype = content_type.split(";")[0].strip().lower()
        accepted = self.accepted_patch_types(rt, subresource)
        if ctype not in accepted:
            raise errors.unsupported_media_type(accepted)
        try:
            patch_doc = json.loads(raw or b"null")
        except ValueError as exc:
            raise errors.bad_request(f"error decoding patch: {exc}") from None
        existing = self._existing(rt, namespace, name)
        current = to_scale(rt, existing) if subresource == "scale" else present(rt, existing)
        try:
            if ctype == JSON_PATCH:
                patched = apply_json_patch(current, patch_doc)
            elif ctype == MERGE_PATCH:
                if not isinstance(patch_doc, dict):
                    raise PatchFormatError("a merge patch must be a JSON object")
                patched = apply_merge_patch(current, patch_doc)
            else:
                patched = apply_strategic_merge_patch(current, patch_doc)
        except PatchFormatError as exc:
            raise errors.bad_request(str(exc)) from None
        except PatchError as exc:
            raise errors.ApiError(422, "Invalid", str(exc)) from None
        if not isinstance(patched, dict):
            raise errors.ApiError(422, "Invalid", "the patch result is not an object")
        if subresource == "scale":
            return self._replace_scale(rt, namespace, name, patched, dry_run=dry_run)
        check_type_meta(rt, patched)
        return self._update(
            rt, namespace, name, patched, existing, subresource=subresource, dry_run=dry_run, privileged=privileged
        )

    # -- delete ------------------------------------------------------------

    def delete(self, rt: ResourceType, namespace: str, name: str, options: DeleteOptions) -> JsonObj:
        existing = self._existing(rt, namespace, name)
        m = meta(existing)
        if options.precondition_uid and options.precondition_uid != m["uid"]:
            raise errors.conflict(
                rt,
                name,
                f"Precondition failed: UID in precondition: {options.precondition_uid}, UID in object meta: {m['uid']}",
            )
        if options.precondition_rv and options.precondition_rv != m["resourceVersion"]:
            raise errors.conflict(
                rt,
                name,
                "Precondition failed: ResourceVersion in "
                f"precondition: {options.precondition_rv}, ResourceVersion "
                f"in object meta: {m['resourceVersion']}",
            )
        policy = options.propagation_policy
        if policy is None and options.orphan_dependents is not None:
            policy = "Orphan" if options.orphan_dependents else "Background"
        policy = policy or "Background"
        if policy not in _POLICY_FINALIZERS:
            raise errors.bad_request(
                f'propagationPolicy: Unsupported value: "{policy}": '
                'supported values: "Foreground", "Background", "Orphan"'
            )
        obj, _gone = self.store.delete(
            rt, m.get("namespace", ""), name, add_finalizers=_POLICY_FINALIZERS[policy], dry_run=options.dry_run
        )
        return present(rt, obj)

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, query: ListQuery, options: DeleteOptions
    ) -> JsonObj:
        selection = Selection(rt, query.label_selector, query.field_selector)
        doomed = [
            o for o in self.store.items(rt.group_resource, namespace if rt.namespaced else None) if selection.matches(o)
        ]
        deleted = [self.delete(rt, meta(o).get("namespace", ""), meta(o)["name"], options) for o in doomed]
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": [list_item(rt, o) for o in deleted],
        }

    # -- helpers -----------------------------------------------------------

    @staticmethod
    def _body_object(body: Any) -> JsonObj:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        return copy.deepcopy(body)

    @staticmethod
    def _place(rt: ResourceType, obj: JsonObj, namespace: str) -> None:
        m = meta(obj)
        if rt.namespaced:
            if m.get("namespace") and m["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            m["namespace"] = namespace
        else:
            m.pop("namespace", None)

    def _require_namespace(self, rt: ResourceType, namespace: str, *, dry_run: bool) -> None:
        ns = self.store.get(NAMESPACES, "", namespace)
        if ns is None:
            if not self.auto_create_namespaces:
                raise errors.namespace_not_found(namespace)
            ns_type = self.registry.storage_type(NAMESPACES)
            if ns_type is not None and not dry_run:
                self.create(ns_type, "", {"metadata": {"name": namespace}})
        elif "deletionTimestamp" in ns["metadata"]:
            raise errors.forbidden(
                f"{rt.plural} is forbidden: unable to create new content "
                f"in namespace {namespace} because it is being terminated",
                rt,
            )
