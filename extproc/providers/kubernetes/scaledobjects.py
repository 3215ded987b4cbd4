"""The KEDA ScaledObject zerohop keeps for each HTTPScaledObject, and the status it writes back.

The ScaledObject is what the add-on's operator creates: same name and namespace, an ownerReference to the
HTTPScaledObject (garbage-collected with it, unless the orphan annotation says otherwise), labels and
annotations copied, min/max replicas, cooldown and initial cooldown, and one `external-push` trigger that
points KEDA at zerohop's scaler Service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extproc.core import iroute
from extproc.core.httpso import API_VERSION as HTTPSO_API_VERSION
from extproc.core.httpso import IGNORED_FIELDS, ORPHAN_SCALEDOBJECT_ANNOTATION, ScaledTarget
from extproc.core.httpso import KIND as HTTPSO_KIND
from extproc.providers.kubernetes.targets import Condition

JsonObj = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "zerohop"
POLLING_INTERVAL = 15
# Annotations that describe the HTTPScaledObject's own history, not something to copy onto the ScaledObject.
_SKIPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", ORPHAN_SCALEDOBJECT_ANNOTATION)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1", "yes")


def desired(target: ScaledTarget, uid: str, scaler_address: str) -> JsonObj:
    ref = target.scale_target
    annotations = {k: v for k, v in target.annotations.items() if k not in _SKIPPED_ANNOTATIONS}
    metadata: JsonObj = {
        "name": target.key.name,
        "namespace": target.key.namespace,
        "labels": {**target.labels, MANAGED_BY: MANAGER},
        "annotations": annotations,
    }
    if not _truthy(target.annotations.get(ORPHAN_SCALEDOBJECT_ANNOTATION)):
        metadata["ownerReferences"] = [
            {
                "apiVersion": HTTPSO_API_VERSION,
                "kind": HTTPSO_KIND,
                "name": target.key.name,
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name},
            "pollingInterval": POLLING_INTERVAL,
            "minReplicaCount": target.min_replicas,
            "maxReplicaCount": target.max_replicas,
            "cooldownPeriod": target.scaledown_period,
            "initialCooldownPeriod": target.initial_cooldown_period,
            "advanced": {"restoreToOriginalReplicaCount": True},
            "triggers": [
                {
                    "type": "external-push",
                    "metadata": {"scalerAddress": scaler_address, "httpScaledObject": target.key.name},
                }
            ],
        },
    }


def route_hash_patch(scaled_object: Mapping[str, Any], hashes: Mapping[str, str]) -> JsonObj | None:
    """The merge patch setting `scalingMetricHash` in a user's ScaledObject triggers that name a route (`hashes`:
    route name -> `iroute.scaling_metric_hash`), or None when each already says it. A merge patch replaces the
    whole trigger list, so it carries the resourceVersion it was computed from: a concurrent edit gets a 409."""
    triggers = (scaled_object.get("spec") or {}).get("triggers")
    if not isinstance(triggers, list):
        return None
    changed = False
    wanted: list[Any] = []
    for trigger in triggers:
        metadata = trigger.get("metadata") if isinstance(trigger, Mapping) else None
        route = metadata.get(iroute.TRIGGER_KEY) if isinstance(metadata, Mapping) else None
        digest = hashes.get(route) if isinstance(route, str) else None
        if (
            digest is not None
            and isinstance(metadata, Mapping)
            and metadata.get(iroute.SCALING_METRIC_HASH_KEY) != digest
        ):
            trigger = {**trigger, "metadata": {**metadata, iroute.SCALING_METRIC_HASH_KEY: digest}}
            changed = True
        wanted.append(trigger)
    if not changed:
        return None
    version = (scaled_object.get("metadata") or {}).get("resourceVersion")
    return {"metadata": {"resourceVersion": version}, "spec": {"triggers": wanted}}


def owned_by(scaled_object: Mapping[str, Any], uid: str) -> bool:
    metadata = scaled_object.get("metadata") or {}
    if (metadata.get("labels") or {}).get(MANAGED_BY) == MANAGER:
        return True
    return any(ref.get("uid") == uid for ref in metadata.get("ownerReferences") or [])


def _contains(have: Any, want: Any) -> bool:
    """Whether `have` says everything `want` says; maps may hold more keys (fields zerohop does not set,
    which a merge patch would leave in place anyway), anything else must be equal."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and _contains(have[k], v) for k, v in want.items())
    return bool(have == want)


def drift(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> JsonObj | None:
    """The merge patch that brings `current` to `wanted`, or None when nothing zerohop manages differs.

    Fields zerohop does not set (added by a mutating webhook, defaulting or a person) are not drift: a merge
    patch would not remove them, so counting them would write the same patch on every pass."""
    patch: JsonObj = {}
    if not _contains(current.get("spec"), wanted["spec"]):
        patch["spec"] = wanted["spec"]
    current_meta = current.get("metadata") or {}
    wanted_meta = wanted["metadata"]
    metadata: JsonObj = {}
    for field in ("labels", "annotations"):
        have = current_meta.get(field) or {}
        if any(have.get(k) != v for k, v in wanted_meta[field].items()):
            metadata[field] = wanted_meta[field]
    if "ownerReferences" in wanted_meta and current_meta.get("ownerReferences") != wanted_meta["ownerReferences"]:
        metadata["ownerReferences"] = wanted_meta["ownerReferences"]
    if metadata:
        patch["metadata"] = metadata
    return patch or None


GATEWAY_VISIBLE = "GatewayVisible"
IGNORED = "IgnoredFields"


def ignored_condition(target: ScaledTarget | None) -> Condition | None:
    """The `IgnoredFields` condition: add-on fields zerohop accepts but does not act on, and fields no
    HTTPScaledObject has (kept by a schema that does not prune them); None when there are none."""
    if target is None or not (target.ignored or target.unknown):
        return None
    parts = [f"spec.{name} is not acted on: {IGNORED_FIELDS[name]}" for name in target.ignored]
    parts += [f"{problem} (ignored)" for problem in target.unknown]
    reason = "NotActedOn" if target.ignored else "UnknownFields"
    return Condition(True, reason, "; ".join(parts))


def _condition(kind: str, condition: Condition, generation: int, old: Mapping[str, Any] | None, now: str) -> JsonObj:
    wanted_status = "True" if condition.ready else "False"
    return {
        "type": kind,
        "status": wanted_status,
        "reason": condition.reason,
        "message": condition.message,
        "observedGeneration": generation,
        "lastTransitionTime": old.get("lastTransitionTime", now) if old and old.get("status") == wanted_status else now,
    }


def _same(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    return old is not None and all(old.get(k) == new[k] for k in ("status", "reason", "message", "observedGeneration"))


def status_patch(
    current: Mapping[str, Any],
    condition: Condition,
    generation: int,
    target: ScaledTarget | None,
    now: str,
    gateway: Condition | None = None,
    *,
    workload: bool = True,
) -> JsonObj | None:
    """The `status` merge patch for an HTTPScaledObject (an InterceptorRoute without `workload`: its status has
    conditions only), or None when it already says this.

    Conditions: `Ready` (the object is valid and served), with `gateway`, `GatewayVisible` (whether
    zerohop can see that the gateway has loaded an endpoint before it releases held requests), and while
    the object has fields zerohop does not act on, `IgnoredFields` (removed once they are gone)."""
    status = current.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    wanted = {"Ready": condition} | ({GATEWAY_VISIBLE: gateway} if gateway is not None else {})
    ignored = ignored_condition(target)
    if ignored is not None:
        wanted[IGNORED] = ignored
    old = {c.get("type"): c for c in conditions if c.get("type") in wanted}
    written = {kind: _condition(kind, cond, generation, old.get(kind), now) for kind, cond in wanted.items()}
    stale = ignored is None and any(c.get("type") == IGNORED for c in conditions)
    others = [c for c in conditions if c.get("type") not in wanted and c.get("type") != IGNORED]
    new_status: JsonObj = {"conditions": [*others, *written.values()]}
    if target is not None and workload:
        ref = target.scale_target
        new_status["targetWorkload"] = f"{ref.api_version}/{ref.kind}/{ref.name}"
        new_status["targetService"] = f"{ref.service}:{ref.port if ref.port is not None else ref.port_name}"
    unchanged = (
        not stale
        and all(_same(old.get(kind), value) for kind, value in written.items())
        and all(status.get(k) == v for k, v in new_status.items() if k != "conditions")
    )
    return None if unchanged else {"status": new_status}
