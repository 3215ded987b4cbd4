"""The table of API resources the emulator serves, and lookups over it.

Adding a resource is one `ResourceType(...)` line in `DEFAULT_RESOURCES`.
Several versions of one group/plural share storage (as they do in etcd); the
first registered version is the storage version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

NameRule = Literal["subdomain", "label"]

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
SUBRESOURCE_VERBS: tuple[str, ...] = ("get", "patch", "update")


@dataclass(frozen=True)
class ScalePaths:
    """Where a `/scale` subresource reads and writes its numbers (dotted paths)."""

    spec_replicas: str = "spec.replicas"
    status_replicas: str = "status.replicas"
    selector: str = "spec.selector"


@dataclass(frozen=True)
class GroupResource:
    """Storage identity of a resource, independent of version."""

    group: str
    resource: str

    def __str__(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource


@dataclass(frozen=True)
class ResourceType:
    """One served group/version/resource."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    builtin: bool = True
    # Built-ins whose strategy maintains metadata.generation; custom resources always do.
    generation: bool = False
    status: bool = False
    scale: ScalePaths | None = None
    short_names: tuple[str, ...] = ()
    name_rule: NameRule = "subdomain"
    # Field selector keys accepted besides metadata.name / metadata.namespace.
    extra_fields: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    singular: str = field(default="")

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> GroupResource:
        return GroupResource(self.group, self.plural)

    @property
    def tracks_generation(self) -> bool:
        return self.generation or not self.builtin

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def subresources(self) -> tuple[str, ...]:
        subs: list[str] = []
        if self.status:
            subs.append("status")
        if self.scale is not None:
            subs.append("scale")
        return tuple(subs)

    @property
    def qualified_kind(self) -> str:
        """`Kind.group` as used in Invalid messages, e.g. `Deployment.apps`."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


_NS_VERBS = tuple(v for v in ALL_VERBS if v != "deletecollection")
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "reason",
    "type",
    "source",
)
_POD_FIELDS = ("spec.nodeName", "status.phase", "status.podIP")
_CRD = "CustomResourceDefinition"

# One line per served resource (kept unformatted so it stays a readable table).
# fmt: off
DEFAULT_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, status=True, short_names=("ns",),
                 name_rule="label", verbs=_NS_VERBS, extra_fields=("status.phase",)),
    ResourceType("", "v1", "services", "Service", status=True, short_names=("svc",), name_rule="label",
                 extra_fields=("spec.clusterIP", "spec.type")),
    ResourceType("", "v1", "pods", "Pod", status=True, short_names=("po",), extra_fields=_POD_FIELDS),
    ResourceType("", "v1", "configmaps", "ConfigMap", short_names=("cm",)),
    ResourceType("", "v1", "events", "Event", short_names=("ev",), extra_fields=_EVENT_FIELDS),
    ResourceType("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", generation=True,
                 extra_fields=("addressType",)),
    ResourceType("apps", "v1", "deployments", "Deployment", status=True, scale=ScalePaths(), generation=True,
                 short_names=("deploy",)),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", status=True, scale=ScalePaths(), generation=True,
                 short_names=("sts",)),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("apiextensions.k8s.io", "v1", "customresourcedefinitions", _CRD, namespaced=False, status=True,
                 generation=True, short_names=("crd", "crds")),
    ResourceType("http.keda.sh", "v1alpha1", "httpscaledobjects", "HTTPScaledObject", builtin=False, status=True,
                 short_names=("httpso",)),
    ResourceType("http.keda.sh", "v1beta1", "interceptorroutes", "InterceptorRoute", builtin=False, status=True),
    ResourceType("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", builtin=False, status=True,
                 short_names=("so",)),
    ResourceType("networking.istio.io", "v1alpha3", "envoyfilters", "EnvoyFilter", builtin=False),
    ResourceType("networking.istio.io", "v1", "envoyfilters", "EnvoyFilter", builtin=False),
    # Istio serves DestinationRules in three versions, v1alpha3 stored (a test may unregister some).
    ResourceType("networking.istio.io", "v1alpha3", "destinationrules", "DestinationRule", builtin=False,
                 short_names=("dr",)),
    ResourceType("networking.istio.io", "v1beta1", "destinationrules", "DestinationRule", builtin=False,
                 short_names=("dr",)),
    ResourceType("networking.istio.io", "v1", "destinationrules", "DestinationRule", builtin=False,
                 short_names=("dr",)),
)
# fmt: on


class Registry:
    """Mutable set of served resource types (custom resources come and go)."""

    def __init__(self, resources: Iterable[ResourceType] = DEFAULT_RESOURCES) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        for rt in resources:
            self.register(rt)

    def register(self, rt: ResourceType) -> None:
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt

    def unregister(self, group: str, plural: str) -> None:
        for key in [k for k in self._by_gvr if k[0] == group and k[2] == plural]:
            del self._by_gvr[key]

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._by_gvr.values()))

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        for rt in self._by_gvr.values():
            if rt.api_version == api_version and rt.kind == kind:
                return rt
        return None

    def storage_type(self, gr: GroupResource) -> ResourceType | None:
        """The storage (first registered) version of a group/resource."""
        for rt in self._by_gvr.values():
            if rt.group_resource == gr:
                return rt
        return None

    def versions(self, group: str) -> list[str]:
        seen: list[str] = []
        for rt in self._by_gvr.values():
            if rt.group == group and rt.version not in seen:
                seen.append(rt.version)
        return seen

    def groups(self) -> list[str]:
        seen: list[str] = []
        for rt in self._by_gvr.values():
            if rt.group and rt.group not in seen:
                seen.append(rt.group)
        return seen

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._by_gvr.values() if rt.group == group and rt.version == version]
