"""Route table: cluster mapping first, then exact host, wildcards (most specific first), catch-all,
longest path prefix and header matches; immutable snapshots that keep live state across rebuilds."""

from __future__ import annotations

from typing import Any

from extproc.core.coldstart import ColdGate
from extproc.core.httpso import ScaledTarget, TargetKey, parse
from extproc.core.registry import InFlightMode, TargetRegistry, TargetState
from extproc.core.routing import _HOST_CACHE_LIMIT, RouteTable


def target(name: str, **spec: Any) -> ScaledTarget:
    body: dict[str, Any] = {"scaleTargetRef": {"name": name, "service": name, "port": 80}}
    body.update(spec)
    return parse(
        {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject", "metadata": {"name": name}, "spec": body}
    )


def table(*targets: ScaledTarget, clusters: dict[str, TargetKey] | None = None) -> RouteTable:
    registry = TargetRegistry(
        ColdGate(max_held_per_target=1, max_held_total=1), hold_timeout=1, in_flight=InFlightMode.ALL
    )
    return RouteTable(registry.sync(targets).values(), clusters)


def name(state: TargetState | None) -> str | None:
    return None if state is None else state.key.name


def test_exact_host_beats_wildcard_and_catch_all() -> None:
    routes = table(
        target("exact", hosts=["api.example.com"]),
        target("wild", hosts=["*.example.com"]),
        target("any", hosts=[]),
    )
    assert name(routes.match(b"api.example.com")) == "exact"
    assert name(routes.match(b"www.example.com")) == "wild"
    assert name(routes.match(b"deep.www.example.com")) == "wild"
    assert name(routes.match(b"example.com")) == "any"
    assert name(routes.match(b"other.org")) == "any"


def test_most_specific_wildcard_wins() -> None:
    routes = table(target("broad", hosts=["*.example.com"]), target("narrow", hosts=["*.eu.example.com"]))
    assert name(routes.match(b"shop.eu.example.com")) == "narrow"
    assert name(routes.match(b"shop.us.example.com")) == "broad"


def test_unknown_host_without_catch_all_is_unmatched() -> None:
    routes = table(target("a", hosts=["a.example.com"]))
    assert routes.match(b"b.example.com") is None
    assert routes.match(b"") is None


def test_host_is_normalised_at_request_time() -> None:
    routes = table(target("a", hosts=["a.example.com"]))
    assert name(routes.match(b"A.Example.Com:8080")) == "a"
    assert name(routes.match(b"a.example.com.")) == "a"


def test_longest_prefix_wins_then_falls_through_to_less_specific_hosts() -> None:
    routes = table(
        target("api", hosts=["shop.example.com"], pathPrefixes=["/api"]),
        target("api-v2", hosts=["shop.example.com"], pathPrefixes=["/api/v2"]),
        target("wild", hosts=["*.example.com"]),
    )
    assert name(routes.match(b"shop.example.com", "/api/v2/items?x=1")) == "api-v2"
    assert name(routes.match(b"shop.example.com", "/api/v1")) == "api"
    # No route of the exact host matches "/", so the wildcard host's route takes it.
    assert name(routes.match(b"shop.example.com", "/")) == "wild"


def test_headers_all_must_match_and_no_value_means_present() -> None:
    routes = table(
        target("tenant-a", hosts=["h"], headers=[{"name": "X-Tenant", "value": "a"}, {"name": "x-beta"}]),
        target("plain", hosts=["h"]),
    )
    host = routes.for_host(b"h")
    assert host is not None
    assert host.needs_headers
    assert host.only is None
    assert name(host.match("/", {"x-tenant": "a", "x-beta": ""})) == "tenant-a"
    assert name(host.match("/", {"x-tenant": "a"})) == "plain"
    assert name(host.match("/", {"x-tenant": "b", "x-beta": "1"})) == "plain"


def test_single_route_host_needs_no_path() -> None:
    routes = table(target("a", hosts=["a"]))
    host = routes.for_host(b"a")
    assert host is not None
    assert name(host.only) == "a"


def test_cluster_mapping() -> None:
    a = target("a", hosts=["a"])
    routes = table(a, clusters={"outbound|80||a.default.svc.cluster.local": a.key, "ghost": TargetKey("x", "y")})
    assert name(routes.for_cluster("outbound|80||a.default.svc.cluster.local")) == "a"
    assert routes.for_cluster("ghost") is None
    assert routes.has_clusters


def test_non_utf8_and_garbage_authority_do_not_raise() -> None:
    routes = table(target("a", hosts=["a.example.com"]))
    assert routes.match(b"\xff\xfe\x00bad") is None
    assert routes.match(b"a.example.com\xff") is None


def test_host_memo_is_bounded() -> None:
    routes = table(target("a", hosts=["a"]))
    for i in range(_HOST_CACHE_LIMIT * 3):
        routes.for_host(f"random-{i}.example".encode())
    assert len(routes._by_host) <= _HOST_CACHE_LIMIT


def test_rebuild_keeps_live_state() -> None:
    gate = ColdGate(max_held_per_target=1, max_held_total=1)
    registry = TargetRegistry(gate, hold_timeout=1, in_flight=InFlightMode.CONCURRENCY)
    first = registry.sync([target("a", hosts=["a"])])
    first[TargetKey("default", "a")].traffic.requests = 41
    second = registry.sync([target("a", hosts=["a", "b"]), target("c", hosts=["c"])])
    state = RouteTable(second.values()).match(b"b")
    assert state is not None
    assert state.traffic.requests == 41
    assert second[TargetKey("default", "a")] is first[TargetKey("default", "a")]


def test_removed_target_disappears_and_its_holds_end() -> None:
    gate = ColdGate(max_held_per_target=1, max_held_total=1)
    registry = TargetRegistry(gate, hold_timeout=1, in_flight=InFlightMode.CONCURRENCY)
    registry.sync([target("a", hosts=["a"])])
    assert len(registry.sync([])) == 0
    assert len(registry) == 0
