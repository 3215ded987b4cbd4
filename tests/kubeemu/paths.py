"""Resolving a request path to a discovery document or a resource target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import errors
from .registry import Registry, ResourceType

DocKind = Literal["version", "health", "api", "apis", "group", "resources"]


@dataclass(frozen=True)
class DocTarget:
    """A discovery (or health/version) document."""

    kind: DocKind
    group: str = ""
    version: str = ""


@dataclass(frozen=True)
class ResourceTarget:
    """`namespace` is None for a cluster-wide collection of a namespaced resource."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def resolve(registry: Registry, path: str) -> DocTarget | ResourceTarget:
    parts = [p for p in path.split("/") if p]
    if parts == ["version"]:
        return DocTarget("version")
    if len(parts) == 1 and parts[0] in ("healthz", "readyz", "livez"):
        return DocTarget("health")
    if parts == ["api"]:
        return DocTarget("api")
    if parts == ["apis"]:
        return DocTarget("apis")
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 2 and parts[0] == "apis":
        if len(parts) == 2:
            if parts[1] not in registry.groups():
                raise errors.path_not_found()
            return DocTarget("group", parts[1])
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise errors.path_not_found()
    if version not in registry.versions(group):
        raise errors.path_not_found()
    if not rest:
        return DocTarget("resources", group, version)
    return _resource(registry, group, version, rest)


def _resource(registry: Registry, group: str, version: str, rest: list[str]) -> ResourceTarget:
    if rest[0] == "namespaces" and len(rest) >= 3:
        rt = registry.lookup(group, version, rest[2])
        if rt is not None and rt.namespaced:
            if len(rest) > 5:
                raise errors.path_not_found()
            return _target(rt, rest[1], rest[3:])
    rt = registry.lookup(group, version, rest[0])
    if rt is None or len(rest) > 3 or (rt.namespaced and len(rest) > 1):
        raise errors.path_not_found()
    return _target(rt, None if rt.namespaced else "", rest[1:])


def _target(rt: ResourceType, namespace: str | None, rest: list[str]) -> ResourceTarget:
    name = rest[0] if rest else None
    sub = rest[1] if len(rest) > 1 else None
    if sub is not None and sub not in rt.subresources:
        raise errors.path_not_found()
    return ResourceTarget(rt, namespace, name, sub)
