"""The `/scale` subresource: an autoscaling/v1 Scale view of a scalable object."""

from __future__ import annotations

import copy
from typing import Any

from .encoding import SCALE_SPEC, SCALE_STATUS, write_fields
from .errors import ApiError
from .objects import get_path, meta, set_path
from .registry import ResourceType, ScalePaths
from .selectors import selector_to_string

JsonObj = dict[str, Any]


def _paths(rt: ResourceType) -> ScalePaths:
    assert rt.scale is not None, f"{rt.plural} has no scale subresource"
    return rt.scale


def to_scale(rt: ResourceType, obj: JsonObj) -> JsonObj:
    """The Scale of `obj`, encoded as the API server does: at 0 replicas `spec` is `{}`."""
    paths = _paths(rt)
    m = meta(obj)
    selector = get_path(obj, paths.selector)
    spec = {"replicas": get_path(obj, paths.spec_replicas) or 0}
    status = {
        "replicas": get_path(obj, paths.status_replicas) or 0,
        "selector": selector_to_string(selector) if isinstance(selector, dict) else str(selector or ""),
    }
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in m},
        "spec": write_fields({}, spec, SCALE_SPEC),
        "status": write_fields({}, status, SCALE_STATUS),
    }


def apply_scale(rt: ResourceType, obj: JsonObj, scale: JsonObj) -> JsonObj:
    """`obj` with its replicas taken from `scale` (whose resourceVersion is a precondition)."""
    replicas = (scale.get("spec") or {}).get("replicas", 0)  # absent: the int32 decodes as 0
    name = str(meta(obj).get("name"))
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        message = f"Invalid value: {replicas!r}: must be greater than or equal to 0"
        raise ApiError(
            422,
            "Invalid",
            f'Scale.autoscaling "{name}" is invalid: spec.replicas: {message}',
            {
                "name": name,
                "group": "autoscaling",
                "kind": "Scale",
                "causes": [{"reason": "FieldValueInvalid", "message": message, "field": "spec.replicas"}],
            },
        )
    new = copy.deepcopy(obj)
    set_path(new, _paths(rt).spec_replicas, replicas)
    meta(new)["resourceVersion"] = meta(scale).get("resourceVersion") or ""
    return new
