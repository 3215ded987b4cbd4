"""HTTPScaledObjects, InterceptorRoutes and Services in, targets out: what the route table serves, how the
gateway names each target's cluster, and the `Ready` condition each object should carry.

Each object is an `Entry`, a pure function of its document and its Service, so a bad object only ever affects
its own condition and a change costs that object alone. The two kinds share names (namespace/name), as in the
add-on; where both exist, the HTTPScaledObject is served and the route's condition says why it is not
(`route_condition`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from extproc.core import httpso, iroute
from extproc.core.httpso import InvalidSpec, ScaledTarget, TargetKey
from extproc.envoy.config import istio_cluster_name

JsonObj = dict[str, Any]

REASON_OK = "Reconciled"
REASON_INVALID = "InvalidSpec"
REASON_NO_SERVICE = "ServiceNotFound"
REASON_NO_PORT = "PortNotFound"
REASON_NAME_TAKEN = "NameConflict"


@dataclass(frozen=True, slots=True)
class Condition:
    """A metav1.Condition of type Ready, minus the timestamps."""

    ready: bool
    reason: str
    message: str


ServiceKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Entry:
    """What one HTTPScaledObject or InterceptorRoute (`kind`) comes to: its target (None when invalid),
    condition, Service, port, cluster."""

    target: ScaledTarget | None
    condition: Condition
    generation: int
    service: ServiceKey | None = None
    port: int | None = None
    cluster: str | None = None
    kind: str = httpso.KIND


class TargetTable:
    """Every HTTPScaledObject's entry, kept one object at a time, with the lookups the provider and the
    reconciler need (by key, by Service, cluster owners) maintained as entries change, so one change costs
    one entry whatever the number of targets."""

    def __init__(self) -> None:
        self.entries: dict[TargetKey, Entry] = {}
        self.by_key: dict[TargetKey, ScaledTarget] = {}
        self.clusters: dict[str, TargetKey] = {}
        self.conditions: dict[TargetKey, Condition] = {}
        self.services: dict[TargetKey, ServiceKey] = {}
        self.ports: dict[TargetKey, int] = {}
        self.generations: dict[TargetKey, int] = {}
        self._by_service: dict[ServiceKey, set[TargetKey]] = {}
        self._claims: dict[str, set[TargetKey]] = {}

    @property
    def targets(self) -> list[ScaledTarget]:
        return list(self.by_key.values())

    def for_service(self, service: ServiceKey) -> set[TargetKey]:
        """The HTTPScaledObjects that name `service` (valid ones)."""
        return set(self._by_service.get(service, ()))

    def set(self, key: TargetKey, entry: Entry | None) -> dict[str, TargetKey | None]:
        """Replace (None: remove) the entry of `key`; returns the clusters whose owner changed."""
        touched: list[str] = []
        old = self.entries.pop(key, None)
        if old is not None:
            if old.service is not None:
                _discard(self._by_service, old.service, key)
            if old.cluster is not None:
                _discard(self._claims, old.cluster, key)
                touched.append(old.cluster)
            for index in (self.by_key, self.conditions, self.services, self.ports, self.generations):
                index.pop(key, None)
        if entry is not None:
            self.entries[key] = entry
            self.conditions[key] = entry.condition
            self.generations[key] = entry.generation
            if entry.target is not None:
                self.by_key[key] = entry.target
            if entry.service is not None:
                self.services[key] = entry.service
                self._by_service.setdefault(entry.service, set()).add(key)
            if entry.port is not None:
                self.ports[key] = entry.port
            if entry.cluster is not None:
                self._claims.setdefault(entry.cluster, set()).add(key)
                touched.append(entry.cluster)
        changed: dict[str, TargetKey | None] = {}
        for cluster in touched:
            # Two HTTPScaledObjects for one Service port: the first by key owns the cluster mapping; host
            # matching still tells them apart.
            claims = self._claims.get(cluster)
            owner = min(claims) if claims else None
            if self.clusters.get(cluster) != owner:
                if owner is None:
                    del self.clusters[cluster]
                else:
                    self.clusters[cluster] = owner
                changed[cluster] = owner
        return changed


def _discard(index: dict[Any, set[TargetKey]], at: Any, key: TargetKey) -> None:
    members = index.get(at)
    if members is not None:
        members.discard(key)
        if not members:
            del index[at]


def service_port(service: Mapping[str, Any], name: str) -> int | None:
    for port in (service.get("spec") or {}).get("ports") or []:
        if port.get("name") == name:
            value = port.get("port")
            return int(value) if isinstance(value, int) else None
    return None


def document_key(document: Mapping[str, Any]) -> TargetKey:
    metadata = document.get("metadata") or {}
    return TargetKey(str(metadata.get("namespace") or "default"), str(metadata.get("name") or ""))


class ParseMemo:
    """The last parse of each object, kept with the document it came from: an object derived again with the
    same document (its Service arrived or changed; at start most Services come after their
    HTTPScaledObjects) is not parsed again. The informers replace a cached document on every change, so the
    same document object is the same version."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], tuple[Mapping[str, Any], ScaledTarget | str]] = {}

    def parse(self, document: Mapping[str, Any], kind: str) -> ScaledTarget:
        key = document_key(document)
        memo_key = (kind, key.namespace, key.name)
        last = self._last.get(memo_key)
        if last is not None and last[0] is document:
            result = last[1]
        else:
            try:
                result = (iroute.parse if kind == iroute.KIND else httpso.parse)(document)
            except InvalidSpec as exc:
                result = str(exc)
            self._last[memo_key] = (document, result)
        if isinstance(result, str):
            raise InvalidSpec(result)
        return result

    def forget(self, kind: str, key: tuple[str, str]) -> None:
        self._last.pop((kind, key[0], key[1]), None)


def entry(
    document: Mapping[str, Any],
    service_of: Callable[[ServiceKey], Mapping[str, Any] | None],
    kind: str = httpso.KIND,
    *,
    memo: ParseMemo | None = None,
) -> Entry:
    """Parse one HTTPScaledObject (or InterceptorRoute, by `kind`) and resolve its Service port (`service_of`
    reads the Service cache); with `memo`, a document parsed before is not parsed again."""
    metadata = document.get("metadata") or {}
    key = document_key(document)
    generation = int(metadata.get("generation") or 0)
    try:
        if memo is not None:
            target = memo.parse(document, kind)
        else:
            target = (iroute.parse if kind == iroute.KIND else httpso.parse)(document)
    except InvalidSpec as exc:
        return Entry(None, Condition(False, REASON_INVALID, str(exc)), generation, kind=kind)
    ref = target.scale_target
    service_key = (key.namespace, ref.service)
    service = service_of(service_key)
    port = ref.port
    condition: Condition | None = None
    if service is None:
        condition = Condition(
            False, REASON_NO_SERVICE, f"Service {key.namespace}/{ref.service} not found; requests will be held"
        )
    elif port is None and ref.port_name is not None:
        port = service_port(service, ref.port_name)
        if port is None:
            condition = Condition(
                False, REASON_NO_PORT, f"Service {key.namespace}/{ref.service} has no port named {ref.port_name!r}"
            )
    cluster = istio_cluster_name(ref.service, key.namespace, port) if port is not None else None
    if condition is None:
        scaling = f"scaling {ref.kind}/{ref.name}" if ref.name else "scaled by the ScaledObject whose trigger names it"
        condition = Condition(True, REASON_OK, f"routing to {ref.service}:{port}; {scaling}")
    return Entry(target, condition, generation, service_key, port, cluster, kind)


def route_condition(table: TargetTable, key: TargetKey) -> Condition | None:
    """The Ready condition of the InterceptorRoute `key`: its entry's, or, when an HTTPScaledObject of the
    same name is served instead, why not; None before it is processed."""
    found = table.entries.get(key)
    if found is None:
        return None
    if found.kind == iroute.KIND:
        return found.condition
    message = f"HTTPScaledObject {key} has the same name and is served instead; rename or delete one of them"
    return Condition(False, REASON_NAME_TAKEN, message)


def build(httpsos: Iterable[Mapping[str, Any]], services: Mapping[tuple[str, str], Mapping[str, Any]]) -> TargetTable:
    """Parse every HTTPScaledObject; valid ones become targets, every one gets a condition."""
    table = TargetTable()
    for document in httpsos:
        table.set(document_key(document), entry(document, services.get))
    return table
