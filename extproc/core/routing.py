"""The route table: which target a request belongs to, as an immutable snapshot swapped atomically.

`RouteTable.lookup` holds every rule the ext_proc servicer applies, in this order:
1. the upstream cluster the gateway already chose (`xds.cluster_name`, e.g. Istio's
   `outbound|8080||app.ns.svc.cluster.local`), so zerohop never disagrees with the gateway's routing;
   when the gateway was asked for the cluster and names none, it routes the request nowhere: unmatched;
2. the KEDA HTTP add-on's matching: host (exact, then `*.suffix` wildcards most specific first, then a
   catch-all), then the longest path prefix on whole segments, then headers (all must match; no value =
   present).

The request is read through a `RequestReader`, one part at a time and only when a rule needs it, so a
cluster hit decodes no header and a single-route host reads no path.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping
from typing import Final, Protocol, TypeVar

from extproc.core.httpso import HeaderMatch, TargetKey, normalize_host
from extproc.core.registry import TargetState

log = logging.getLogger(__name__)

# Hosts that match a route are remembered per snapshot (unmatched ones are not: distinct unknown hosts must
# cost no memory). An authority longer than a DNS name (253), its trailing dot and a port names no
# configured host, so it is never remembered either: the memo is at most this many keys of that many bytes.
_HOST_CACHE_LIMIT = 4096
_MAX_AUTHORITY = 253 + len(".:65535")

Request = TypeVar("Request", contravariant=True)


class NoUpstream(enum.Enum):
    """The gateway was asked for the request's upstream cluster and sent none: no route, or a direct response."""

    NO_UPSTREAM = "no upstream"


NO_UPSTREAM: Final = NoUpstream.NO_UPSTREAM


class RequestReader(Protocol[Request]):
    """Reads the parts of one request the route table asks for (the servicer reads Envoy's ext_proc messages)."""

    def cluster(self, request: Request) -> str | NoUpstream | None:
        """The upstream cluster the gateway chose; NO_UPSTREAM when it was asked and named none; None when
        it was not asked (no attributes sent)."""
        ...

    def authority(self, request: Request) -> bytes:
        """The raw `:authority` (port included); empty when the request has none."""
        ...

    def path(self, request: Request) -> str:
        """The `:path`, query included; "/" when the request has none."""
        ...

    def headers(self, request: Request) -> Mapping[str, str]:
        """Every header by lower-case name (the first value of a repeated one)."""
        ...


class _Route:
    __slots__ = ("headers", "prefix", "state")

    def __init__(self, prefix: str, headers: tuple[HeaderMatch, ...], state: TargetState) -> None:
        self.prefix = prefix
        self.headers = headers
        self.state = state

    def matches(self, path: str, headers: Mapping[str, str] | None) -> bool:
        # Whole segments only: `/api` takes `/api`, `/api/v1` and `/api?q`, never `/apix` (prefixes are
        # parsed without a trailing slash, `/` aside).
        prefix = self.prefix
        if not path.startswith(prefix):
            return False
        end = len(prefix)
        if len(path) > end and end > 1 and path[end] not in "/?#":
            return False
        if not self.headers:
            return True
        if headers is None:
            return False
        for want in self.headers:
            got = headers.get(want.name)
            if got is None or (want.value is not None and got != want.value):
                return False
        return True


class _HostRoutes:
    """The routes a request to one host can take, most specific first.

    `only` is set when the host has exactly one route that matches every path and header, so the hot path
    needs neither the path nor the headers.
    """

    __slots__ = ("needs_headers", "only", "routes")

    def __init__(self, routes: list[_Route]) -> None:
        self.routes = tuple(routes)
        first = self.routes[0]
        self.only: TargetState | None = (
            first.state if first.prefix == "/" and not first.headers and len(routes) == 1 else None
        )
        self.needs_headers = any(route.headers for route in self.routes)

    def match(self, path: str, headers: Mapping[str, str] | None) -> TargetState | None:
        for route in self.routes:
            if route.matches(path, headers):
                return route.state
        return None


def _sort_key(route: _Route) -> tuple[int, int, TargetKey]:
    # Ties go to the target first by key, whichever order the targets arrived in.
    return (-len(route.prefix), -len(route.headers), route.state.key)


class RouteTable:
    """An immutable routing snapshot over live TargetStates. Build a new one to change anything: whole
    (`RouteTable(states, clusters)`) or from the previous one (`updated`), which touches only the hosts and
    clusters of the targets that changed and gives the same table a whole build would."""

    __slots__ = (
        "_by_host",
        "_catch_all",
        "_catch_all_only",
        "_clusters",
        "_exact",
        "_placed",
        "_wildcard_routes",
        "_wildcards",
        "changed",
        "states",
    )

    def __init__(
        self,
        states: Iterable[TargetState] = (),
        clusters: Mapping[str, TargetKey] | None = None,
    ) -> None:
        self.states: dict[TargetKey, TargetState] = {}
        # The hosts each target's routes sit under ("*": the catch-all), to take them out again.
        self._placed: dict[TargetKey, tuple[str, ...]] = {}
        self._exact: dict[str, tuple[_Route, ...]] = {}
        self._wildcard_routes: dict[str, tuple[_Route, ...]] = {}
        self._wildcards: list[tuple[str, tuple[_Route, ...]]] = []
        self._catch_all: tuple[_Route, ...] = ()
        # Shared by every host only the catch-all takes, so remembering one costs its key alone.
        self._catch_all_only: _HostRoutes | None = None
        self._clusters: dict[str, TargetState] = {}
        self._by_host: dict[bytes, _HostRoutes] = {}
        self.changed = 0
        self._apply(states, (), clusters or {})

    def updated(
        self,
        states: Iterable[TargetState] = (),
        removed: Iterable[TargetKey] = (),
        clusters: Mapping[str, TargetKey | None] | None = None,
    ) -> RouteTable:
        """A new snapshot with `states` added or changed (their spec as it is now), `removed` gone and the
        `clusters` mappings that changed set (None: unmapped). This table stays as it was."""
        table = RouteTable.__new__(RouteTable)
        table.states = dict(self.states)
        table._placed = dict(self._placed)
        table._exact = dict(self._exact)
        table._wildcard_routes = dict(self._wildcard_routes)
        table._wildcards = self._wildcards
        table._catch_all = self._catch_all
        table._catch_all_only = self._catch_all_only
        table._clusters = dict(self._clusters)
        table._by_host = {}
        table._apply(states, removed, clusters or {})
        return table

    def _apply(
        self, states: Iterable[TargetState], removed: Iterable[TargetKey], clusters: Mapping[str, TargetKey | None]
    ) -> None:
        upserts = {state.key: state for state in states}
        gone = {key for key in removed if key not in upserts and key in self.states}
        changed = gone | upserts.keys()
        added: dict[str, list[_Route]] = {}
        for key in changed:
            for host in self._placed.pop(key, ()):
                added.setdefault(host, [])
        for key in gone:
            del self.states[key]
        for key, state in upserts.items():
            placed: dict[str, None] = {}
            for rule in state.spec.routing_rules:
                hosts = tuple(dict.fromkeys(rule.hosts or ("*",)))
                routes = [_Route(prefix, rule.headers, state) for prefix in (rule.path_prefixes or ("/",))]
                for host in hosts:
                    placed[host] = None
                    added.setdefault(host, []).extend(routes)
            self.states[key] = state
            self._placed[key] = tuple(placed)
        wildcards_touched = False
        for host, routes in added.items():
            if host == "*":
                self._catch_all = _merge(self._catch_all, routes, changed)
                self._catch_all_only = _HostRoutes(list(self._catch_all)) if self._catch_all else None
            elif host.startswith("*."):
                wildcards_touched = True
                _merge_into(self._wildcard_routes, host[1:], routes, changed)
            else:
                _merge_into(self._exact, host, routes, changed)
        if wildcards_touched:
            self._wildcards = sorted(self._wildcard_routes.items(), key=lambda item: (-len(item[0]), item[0]))
        if gone:
            for cluster in [c for c, state in self._clusters.items() if state.key in gone]:
                del self._clusters[cluster]
        for cluster, owner in clusters.items():
            mapped = self.states.get(owner) if owner is not None else None
            if mapped is None:
                self._clusters.pop(cluster, None)
            else:
                self._clusters[cluster] = mapped
        self.changed = len(changed)

    def lookup(self, request: Request, reader: RequestReader[Request]) -> TargetState | None:
        """The target this request belongs to, or None (unmatched: zerohop lets it through untouched)."""
        cluster = reader.cluster(request)
        if cluster is not None:
            if cluster is NO_UPSTREAM:
                # Holding or counting it for a target whose host it names would scale a workload that
                # never gets the request.
                return None
            state = self._clusters.get(cluster)
            if state is not None:
                return state
        routes = self._for_host(reader.authority(request))
        if routes is None:
            return None
        only = routes.only
        if only is not None:
            return only
        return routes.match(reader.path(request), reader.headers(request) if routes.needs_headers else None)

    def _for_host(self, authority: bytes) -> _HostRoutes | None:
        """Routes for a raw `:authority` value (any bytes, port included); memoised per snapshot."""
        routes = self._by_host.get(authority)
        if routes is None:
            if len(authority) > _MAX_AUTHORITY:
                return self._catch_all_only  # neither decoded nor remembered
            if not authority.isascii():
                log.debug("non-ASCII :authority %r; matched as latin-1 text", authority[:100])
            routes = self._resolve_host(normalize_host(authority.decode("latin-1")))
            if routes is not None:
                if len(self._by_host) >= _HOST_CACHE_LIMIT:
                    self._by_host.clear()
                self._by_host[authority] = routes
        return routes

    def _resolve_host(self, host: str) -> _HostRoutes | None:
        candidates: list[_Route] = []
        candidates.extend(self._exact.get(host, ()))
        for suffix, routes in self._wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                candidates.extend(routes)
        if not candidates:
            return self._catch_all_only
        candidates.extend(self._catch_all)
        return _HostRoutes(candidates)


def _merge(current: tuple[_Route, ...], added: list[_Route], changed: set[TargetKey]) -> tuple[_Route, ...]:
    """`current` without the routes of `changed` targets, plus `added`, most specific first."""
    kept = [route for route in current if route.state.key not in changed]
    return tuple(sorted(kept + added, key=_sort_key))


def _merge_into(index: dict[str, tuple[_Route, ...]], host: str, added: list[_Route], changed: set[TargetKey]) -> None:
    routes = _merge(index.get(host, ()), added, changed)
    if routes:
        index[host] = routes
    else:
        index.pop(host, None)


class Router:
    """Holds the current RouteTable; readers take `router.table` once per request."""

    __slots__ = ("published", "table")

    def __init__(self) -> None:
        self.table = RouteTable()
        self.published = 0  # snapshots swapped in: what a change that must not touch routing leaves alone

    def publish(self, table: RouteTable) -> None:
        self.table = table
        self.published += 1
