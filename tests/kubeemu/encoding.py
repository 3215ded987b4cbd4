"""Zero values written the way the real API server writes them.

The API server decodes every object into its Go struct and encodes it back with `encoding/json`, so a
field tagged `omitempty` is absent whenever it holds its zero value (0, "", false, an empty list or map),
while a field without the tag is always present, zero or not. A pointer field (`*int32`) is left out only
when nil, so an explicit 0 stays. A list without `omitempty` that is empty comes back from etcd's protobuf
as a nil slice, which `encoding/json` writes as `null`.

Every field the emulator synthesises (status its controllers write, the `/scale` view, EndpointSlices)
goes through `write_fields` with the tag table of its Go struct below, so clients meet the same absent
fields they would meet on a real cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

JsonObj = dict[str, Any]


class Tag(Enum):
    """How one Go struct field is encoded."""

    OMITEMPTY = "omitempty"  # `json:"x,omitempty"` on a value field: absent at its zero value
    ALWAYS = "always"  # no `omitempty`, or a non-nil pointer: present even at zero
    NULL_IF_EMPTY = "null-if-empty"  # a list without `omitempty`: `null` when empty


Tags = Mapping[str, Tag]

# k8s.io/api/autoscaling/v1 ScaleSpec: Replicas int32 `json:"replicas,omitempty"`.
SCALE_SPEC: Tags = {"replicas": Tag.OMITEMPTY}
# ScaleStatus: Replicas int32 `json:"replicas"`; Selector string `json:"selector,omitempty"`.
SCALE_STATUS: Tags = {"replicas": Tag.ALWAYS, "selector": Tag.OMITEMPTY}

# k8s.io/api/apps/v1 DeploymentStatus: ObservedGeneration int64 and every replica count int32, all `omitempty`.
DEPLOYMENT_STATUS: Tags = {
    "observedGeneration": Tag.OMITEMPTY,
    "replicas": Tag.OMITEMPTY,
    "updatedReplicas": Tag.OMITEMPTY,
    "readyReplicas": Tag.OMITEMPTY,
    "availableReplicas": Tag.OMITEMPTY,
    "unavailableReplicas": Tag.OMITEMPTY,
}

# apps/v1 StatefulSetStatus: Replicas and AvailableReplicas int32 have no `omitempty` (always written);
# ReadyReplicas, CurrentReplicas, UpdatedReplicas, the revisions and ObservedGeneration do;
# CollisionCount is *int32, set to 0 by the controller, so it stays.
STATEFULSET_STATUS: Tags = {
    "observedGeneration": Tag.OMITEMPTY,
    "replicas": Tag.ALWAYS,
    "readyReplicas": Tag.OMITEMPTY,
    "currentReplicas": Tag.OMITEMPTY,
    "updatedReplicas": Tag.OMITEMPTY,
    "currentRevision": Tag.OMITEMPTY,
    "updateRevision": Tag.OMITEMPTY,
    "collisionCount": Tag.ALWAYS,
    "availableReplicas": Tag.ALWAYS,
}

# k8s.io/api/discovery/v1 EndpointSlice: Endpoints []Endpoint `json:"endpoints"`, Ports []EndpointPort
# `json:"ports"`: a slice with no pods behind it reads back `"endpoints": null, "ports": null`.
ENDPOINT_SLICE: Tags = {"endpoints": Tag.NULL_IF_EMPTY, "ports": Tag.NULL_IF_EMPTY}


def is_zero(value: Any) -> bool:
    """Go's zero value for the JSON types: 0, "", false, null, an empty list or map."""
    return value is None or value == 0 or value in ("", [], {})


def write_fields(target: JsonObj, values: Mapping[str, Any], tags: Tags) -> JsonObj:
    """Write each of `values` into `target` as the API server would encode it under `tags`; returns `target`."""
    for field, value in values.items():
        tag = tags[field]
        if tag is Tag.OMITEMPTY and is_zero(value):
            target.pop(field, None)
        elif tag is Tag.NULL_IF_EMPTY and not value:
            target[field] = None
        else:
            target[field] = value
    return target
