"""DestinationRule subsets: which target serves each subset cluster, and which endpoints are in a subset.

Istio routes to a subset of a Service through the cluster `outbound|PORT|SUBSET|SVC.NS.svc.cluster.local`,
whose endpoints are the Service's endpoints of the pods carrying every label of the subset. A subset cluster
belongs to the target (HTTPScaledObject or InterceptorRoute) that names that Service and port and whose
workload's pod template carries the subset's labels: the Deployment that makes those pods. Where several
targets qualify the first by key takes it, as for a Service's own cluster. Pure state, no I/O: the watches
that feed it are in `subsetwatch`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from extproc.core.httpso import TargetKey

ServiceKey = tuple[str, str]
Workload = tuple[str, str, str]  # (resource plural, namespace, name)
_CLUSTER_DOMAIN = ".svc.cluster.local"


@dataclass(frozen=True, slots=True)
class Subset:
    """One subset of a DestinationRule: its Service (namespace, name), name and pod labels (sorted)."""

    service: ServiceKey
    name: str
    labels: tuple[tuple[str, str], ...]

    @property
    def selector(self) -> str:
        """The label selector of its pods (`k=v,...`)."""
        return ",".join(f"{key}={value}" for key, value in self.labels)

    def cluster(self, port: int) -> str:
        """Istio's name for this subset's outbound cluster on `port`."""
        namespace, service = self.service
        return f"outbound|{port}|{self.name}|{service}.{namespace}{_CLUSTER_DOMAIN}"

    def selects(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.labels)


def rule_service(host: object, namespace: str) -> ServiceKey | None:
    """The Service a DestinationRule's `spec.host` names, as Istio reads it: a short name is in the rule's own
    namespace, `svc.ns` and `svc.ns.svc.cluster.local` name their namespace; a wildcard or any other host (a
    ServiceEntry's) is no Service here."""
    if not isinstance(host, str) or not host or "*" in host:
        return None
    name = host.lower().removesuffix(".")
    name = name.removesuffix(_CLUSTER_DOMAIN)
    parts = name.split(".")
    if len(parts) == 1:
        return (namespace, parts[0])
    if len(parts) == 2:
        return (parts[1], parts[0])
    return None


def rule_subsets(document: Mapping[str, Any]) -> list[Subset]:
    """The subsets of one DestinationRule that tell pods apart: subsets without labels (every pod of the
    Service) and malformed ones are left out."""
    metadata = document.get("metadata") or {}
    spec = document.get("spec") or {}
    if not isinstance(spec, Mapping):
        return []
    service = rule_service(spec.get("host"), str(metadata.get("namespace") or "default"))
    if service is None:
        return []
    found: list[Subset] = []
    for entry in spec.get("subsets") or []:
        if not isinstance(entry, Mapping):
            continue
        name, labels = entry.get("name"), entry.get("labels")
        if not isinstance(name, str) or not name or not isinstance(labels, Mapping) or not labels:
            continue
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            continue
        found.append(Subset(service, name, tuple(sorted(labels.items()))))
    return found


@dataclass(frozen=True, slots=True)
class SubsetTarget:
    """A target that may serve subsets: the Service and port it names, and its workload (resource plural,
    namespace, name)."""

    key: TargetKey
    service: ServiceKey
    port: int
    workload: Workload | None


class SubsetIndex:
    """DestinationRules' subsets by Service, and the pod template labels of workloads, resolved to the subset
    clusters each target owns (`owners`, `of_target`)."""

    def __init__(self) -> None:
        self._rules: dict[tuple[str, str], list[Subset]] = {}
        self._by_service: dict[ServiceKey, list[Subset]] = {}
        self.templates: dict[Workload, dict[str, str]] = {}  # pod template labels
        self.owners: dict[str, TargetKey] = {}  # subset cluster -> target
        self._of_target: dict[TargetKey, tuple[tuple[Subset, str], ...]] = {}

    def set_rule(self, key: tuple[str, str], subsets: list[Subset] | None) -> None:
        """Replace (None: remove) the subsets of the DestinationRule `key` (namespace, name)."""
        if subsets:
            self._rules[key] = subsets
        else:
            self._rules.pop(key, None)
        by_service: dict[ServiceKey, list[Subset]] = {}
        # Istio merges the rules of one host; on a subset name given twice the first rule by name wins.
        for rule in sorted(self._rules):
            for subset in self._rules[rule]:
                listed = by_service.setdefault(subset.service, [])
                if all(s.name != subset.name for s in listed):
                    listed.append(subset)
        self._by_service = by_service

    @property
    def services(self) -> set[ServiceKey]:
        """Every Service some DestinationRule gives subsets."""
        return set(self._by_service)

    def subsets(self, service: ServiceKey) -> list[Subset]:
        return list(self._by_service.get(service, ()))

    def resolve(self, targets: Iterable[SubsetTarget]) -> tuple[dict[str, TargetKey | None], set[TargetKey]]:
        """Recompute which target owns each subset cluster from `targets` (those naming a Service with
        subsets); returns the clusters whose owner changed (None: no owner now) and the targets whose subsets
        changed."""
        candidates: dict[str, tuple[TargetKey, Subset]] = {}
        for target in targets:
            labels = self.templates.get(target.workload) if target.workload is not None else None
            if labels is None:
                continue
            for subset in self._by_service.get(target.service, ()):
                if subset.selects(labels):
                    cluster = subset.cluster(target.port)
                    current = candidates.get(cluster)
                    if current is None or target.key < current[0]:
                        candidates[cluster] = (target.key, subset)
        owners = {cluster: key for cluster, (key, _) in candidates.items()}
        changed: dict[str, TargetKey | None] = {c: owners.get(c) for c in self.owners.keys() | owners.keys()}
        changed = {c: k for c, k in changed.items() if self.owners.get(c) != k}
        of_target: dict[TargetKey, list[tuple[Subset, str]]] = {}
        for cluster, (key, subset) in sorted(candidates.items()):
            of_target.setdefault(key, []).append((subset, cluster))
        frozen = {key: tuple(found) for key, found in of_target.items()}
        touched = {k for k in self._of_target.keys() | frozen.keys() if self._of_target.get(k) != frozen.get(k)}
        self.owners = owners
        self._of_target = frozen
        return changed, touched

    def of_target(self, key: TargetKey) -> tuple[tuple[Subset, str], ...]:
        """The subsets `key` owns, each with its cluster (sorted by cluster); empty for most targets."""
        return self._of_target.get(key, ())

    def selectors(self) -> set[tuple[str, str]]:
        """(namespace, label selector) of every subset some target owns: the pods worth knowing."""
        return {(subset.service[0], subset.selector) for owned in self._of_target.values() for subset, _ in owned}

    def targets_selecting(self, namespace: str, selector: str) -> set[TargetKey]:
        return {
            key
            for key, owned in self._of_target.items()
            if any(s.service[0] == namespace and s.selector == selector for s, _ in owned)
        }


def endpoint_pod(endpoint: Mapping[str, Any]) -> str | None:
    """The name of the Pod behind an EndpointSlice endpoint (its `targetRef`), if it names one."""
    ref = endpoint.get("targetRef") or {}
    name = ref.get("name") if isinstance(ref, Mapping) and ref.get("kind", "Pod") == "Pod" else None
    return name if isinstance(name, str) else None


def subset_endpoints(slices: Iterable[Mapping[str, Any]], pods: set[str]) -> tuple[set[str], int]:
    """Of a Service's slices, the ready addresses of the endpoints whose Pod is in `pods`, and how many such
    endpoints there are in all (ready or not)."""
    ready: set[str] = set()
    total = 0
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            pod = endpoint_pod(endpoint)
            if pod is None or pod not in pods:
                continue
            total += 1
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                ready.update(str(address) for address in endpoint.get("addresses") or [])
    return ready, total
