"""Minimal validation the real API server would do: names, type meta, a few kinds."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import errors
from .objects import meta, name_of
from .registry import ResourceType
from .selectors import LabelSelector, selector_to_string

JsonObj = dict[str, Any]
Cause = tuple[str, str, str]  # (field, reason, message)

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


def name_causes(rt: ResourceType, name: str) -> list[Cause]:
    if rt.name_rule == "label":
        if len(name) > 63 or not re.fullmatch(_LABEL, name):
            return [
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of '
                    "lower case alphanumeric characters or '-', and must start and end "
                    f"with an alphanumeric character (regex used for validation is '{_LABEL}')",
                )
            ]
        return []
    if len(name) > 253 or not re.fullmatch(_SUBDOMAIN, name):
        return [
            (
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                "lower case alphanumeric characters, '-' or '.', and must start and end "
                f"with an alphanumeric character (regex used for validation is '{_SUBDOMAIN}')",
            )
        ]
    return []


def check_type_meta(
    rt: ResourceType, obj: JsonObj, *, expect_kind: str | None = None, expect_api_version: str | None = None
) -> None:
    """Body apiVersion/kind must match the endpoint; built-ins may omit them."""
    kind = expect_kind or rt.kind
    api_version = expect_api_version or rt.api_version
    got_kind, got_version = obj.get("kind"), obj.get("apiVersion")
    if not got_kind or not got_version:
        if not rt.builtin and expect_kind is None:
            missing = "Kind" if not got_kind else "Version"
            raise errors.bad_request(f"Object '{missing}' is missing in '{_brief(obj)}'")
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        obj["kind"] = obj["kind"] or kind
        obj["apiVersion"] = obj["apiVersion"] or api_version
        return
    if got_version != api_version:
        raise errors.bad_request(
            f"the API version in the data ({got_version}) does not match the expected API version ({api_version})"
        )
    if got_kind != kind:
        raise errors.bad_request(f"the kind in the data ({got_kind}) does not match the expected kind ({kind})")


def _brief(obj: JsonObj) -> str:
    text = str(obj)
    return text if len(text) < 200 else text[:200] + "..."


def _workload(obj: JsonObj) -> list[Cause]:
    """Deployment and StatefulSet: replicas not negative, a selector that matches the pod template."""
    causes: list[Cause] = []
    spec = obj.get("spec") or {}
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(
            ("spec.replicas", "FieldValueInvalid", f"Invalid value: {replicas}: must be greater than or equal to 0")
        )
    selector = spec.get("selector")
    if not selector:
        causes.append(("spec.selector", "FieldValueRequired", "Required value"))
        return causes
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    if not LabelSelector.parse(selector_to_string(selector)).matches(template_labels):
        causes.append(
            (
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {template_labels!r}: `selector` does not match template `labels`",
            )
        )
    return causes


def _service(obj: JsonObj) -> list[Cause]:
    spec = obj.get("spec") or {}
    if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
        return []
    if not spec.get("ports"):
        return [("spec.ports", "FieldValueRequired", "Required value")]
    return []


def _endpointslice(obj: JsonObj) -> list[Cause]:
    if obj.get("addressType") not in ("IPv4", "IPv6", "FQDN"):
        return [
            ("addressType", "FieldValueNotSupported", 'Unsupported value: supported values: "FQDN", "IPv4", "IPv6"')
        ]
    return []


KIND_VALIDATORS: dict[tuple[str, str], Callable[[JsonObj], list[Cause]]] = {
    ("apps", "Deployment"): _workload,
    ("apps", "StatefulSet"): _workload,
    ("", "Service"): _service,
    ("discovery.k8s.io", "EndpointSlice"): _endpointslice,
}


def validate(rt: ResourceType, obj: JsonObj) -> None:
    causes = name_causes(rt, name_of(obj))
    if not isinstance(meta(obj).get("labels", {}), dict):
        causes.append(("metadata.labels", "FieldValueInvalid", "Invalid value: must be a map"))
    validator = KIND_VALIDATORS.get((rt.group, rt.kind))
    if validator is not None:
        causes += validator(obj)
    if causes:
        raise errors.invalid(rt, name_of(obj), causes)
