"""Scale a workload up from zero through its `/scale` subresource, and never touch a count that is not zero.

A read-then-write with the Scale's resourceVersion as the precondition, as client-go's UpdateScale does:
whoever changed the count in between (KEDA, an HPA, another zerohop replica) makes the write fail with
409 Conflict, and the count is read again. A guard written as a JSON patch `test` of `/spec/replicas`
cannot work: autoscaling/v1 `ScaleSpec.replicas` is `int32 json:"replicas,omitempty"`, so at zero the
API server sends `spec: {}` and the `test` fails on the missing path.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

from extproc.providers.kubernetes.api import JsonObj, KubeApi, KubeError, Resource

log = logging.getLogger(__name__)

ATTEMPTS = 5


class ScaleResult(enum.Enum):
    """What `scale_from_zero` did."""

    SCALED = "scaled"  # the count was 0 and is now the wanted one
    NOT_AT_ZERO = "not at zero"  # someone else had already scaled it: left alone
    FAILED = "failed"  # gone, refused, or still conflicting after every attempt (logged at WARNING)


def spec_replicas(scale: JsonObj) -> int:
    """The Scale's wanted count; absent means 0, since the API server leaves the zero value out."""
    spec: Any = scale.get("spec") or {}
    return int(spec.get("replicas") or 0)


async def scale_from_zero(
    api: KubeApi, resource: Resource, namespace: str, name: str, replicas: int, *, attempts: int = ATTEMPTS
) -> ScaleResult:
    """Set `resource` `namespace/name` to `replicas` if, and only if, it is at 0 replicas now."""
    what = f"{resource.kind} {namespace}/{name}"
    for _attempt in range(attempts):
        try:
            scale = await api.get(resource, namespace, name, subresource="scale")
        except KubeError as exc:
            return _failed(what, "reading its scale", exc)
        if scale is None:
            log.warning("%s: not found, nothing to scale from zero", what)
            return ScaleResult.FAILED
        current = spec_replicas(scale)
        if current != 0:
            log.debug("%s: at %d replicas already, left alone", what, current)
            return ScaleResult.NOT_AT_ZERO
        # The Scale as read, so its metadata.resourceVersion makes the write conditional on nothing changing.
        wanted = {**scale, "spec": {**(scale.get("spec") or {}), "replicas": replicas}}
        try:
            await api.replace(resource, namespace, name, wanted, subresource="scale")
        except KubeError as exc:
            if exc.code == 409:
                log.debug("%s: changed while scaling from zero, reading it again", what)
                continue
            if exc.code == 404:
                log.warning("%s: gone while scaling from zero: %s", what, exc.message)
                return ScaleResult.FAILED
            return _failed(what, "writing its scale", exc)
        return ScaleResult.SCALED
    log.warning("%s: still changing after %d attempts to scale it from zero; giving up", what, attempts)
    return ScaleResult.FAILED


def _failed(what: str, doing: str, exc: KubeError) -> ScaleResult:
    log.warning("%s: scaling from zero failed %s: %d %s: %s", what, doing, exc.code, exc.reason, exc.message)
    return ScaleResult.FAILED
