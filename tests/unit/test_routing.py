"""Route table: cluster mapping first (no cluster named: unmatched), then exact host, wildcards (most specific
first), catch-all, longest path prefix and header matches; immutable snapshots that keep live state across
rebuilds. Every rule is reached through `RouteTable.lookup`, the one entry the servicer uses."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable
from typing import Any

from extproc.core.coldstart import ColdGate
from extproc.core.httpso import ScaledTarget, TargetKey, parse
from extproc.core.registry import InFlightMode, TargetRegistry, TargetState
from extproc.core.routing import _HOST_CACHE_LIMIT, _MAX_AUTHORITY, NO_UPSTREAM, RouteTable
from tests.helpers import READER, Request, route


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
    assert name(route(routes, b"api.example.com")) == "exact"
    assert name(route(routes, b"www.example.com")) == "wild"
    assert name(route(routes, b"deep.www.example.com")) == "wild"
    assert name(route(routes, b"example.com")) == "any"
    assert name(route(routes, b"other.org")) == "any"


def test_most_specific_wildcard_wins() -> None:
    routes = table(target("broad", hosts=["*.example.com"]), target("narrow", hosts=["*.eu.example.com"]))
    assert name(route(routes, b"shop.eu.example.com")) == "narrow"
    assert name(route(routes, b"shop.us.example.com")) == "broad"


def test_unknown_host_without_catch_all_is_unmatched() -> None:
    routes = table(target("a", hosts=["a.example.com"]))
    assert route(routes, b"b.example.com") is None
    assert route(routes, b"") is None


def test_host_is_normalised_at_request_time() -> None:
    routes = table(target("a", hosts=["a.example.com"]))
    assert name(route(routes, b"A.Example.Com:8080")) == "a"
    assert name(route(routes, b"a.example.com.")) == "a"


def test_longest_prefix_wins_then_falls_through_to_less_specific_hosts() -> None:
    routes = table(
        target("api", hosts=["shop.example.com"], pathPrefixes=["/api"]),
        target("api-v2", hosts=["shop.example.com"], pathPrefixes=["/api/v2"]),
        target("wild", hosts=["*.example.com"]),
    )
    assert name(route(routes, b"shop.example.com", "/api/v2/items?x=1")) == "api-v2"
    assert name(route(routes, b"shop.example.com", "/api/v1")) == "api"
    # No route of the exact host matches "/", so the wildcard host's route takes it.
    assert name(route(routes, b"shop.example.com", "/")) == "wild"


def test_path_prefixes_match_whole_segments_only() -> None:
    routes = table(
        target("api", hosts=["h"], pathPrefixes=["/api"]), target("slash", hosts=["s"], pathPrefixes=["/v1/"])
    )
    for path in ("/api", "/api/", "/api/v1/x", "/api?q=1", "/api#top", "/api//x"):
        assert name(route(routes, b"h", path)) == "api", path
    for path in ("/apix", "/api-v2", "/ap", "/", "", "/API", "*"):
        assert route(routes, b"h", path) is None, path
    # A trailing slash in pathPrefixes changes nothing, as in the add-on: "/v1/" is "/v1".
    for path in ("/v1", "/v1/", "/v1/items", "/v1?x"):
        assert name(route(routes, b"s", path)) == "slash", path
    assert route(routes, b"s", "/v1x") is None


def test_root_prefix_takes_every_path_and_more_specific_prefixes_win() -> None:
    routes = table(target("root", hosts=["h"], pathPrefixes=["/"]), target("api", hosts=["h"], pathPrefixes=["/api"]))
    assert name(route(routes, b"h", "/apix")) == "root"
    assert name(route(routes, b"h", "/api/x")) == "api"
    assert name(route(routes, b"h", "/?q")) == "root"


def test_headers_all_must_match_and_no_value_means_present() -> None:
    routes = table(
        target("tenant-a", hosts=["h"], headers=[{"name": "X-Tenant", "value": "a"}, {"name": "x-beta"}]),
        target("plain", hosts=["h"]),
    )
    assert name(route(routes, b"h", "/", {"x-tenant": "a", "x-beta": ""})) == "tenant-a"
    assert name(route(routes, b"h", "/", {"x-tenant": "a"})) == "plain"
    assert name(route(routes, b"h", "/", {"x-tenant": "b", "x-beta": "1"})) == "plain"


def test_only_what_a_rule_needs_is_read() -> None:
    a = target("a", hosts=["a"])
    routes = table(a, target("b", hosts=["b"], pathPrefixes=["/x"]), clusters={"cluster-a": a.key})
    by_cluster = Request(b"a", cluster="cluster-a")
    assert name(routes.lookup(by_cluster, READER)) == "a"
    assert by_cluster.reads == ["cluster"]  # a cluster hit decodes no header
    single = Request(b"a")
    assert name(routes.lookup(single, READER)) == "a"
    assert single.reads == ["cluster", "authority"]  # one route for every path: no path read
    prefixed = Request(b"b", "/x/y")
    assert name(routes.lookup(prefixed, READER)) == "b"
    assert prefixed.reads == ["cluster", "authority", "path"]  # no header rule: no headers read


def test_cluster_first_then_host() -> None:
    a = target("a", hosts=["a"])
    b = target("b", hosts=["b"])
    routes = table(a, b, clusters={"outbound|80||a.default.svc.cluster.local": a.key, "ghost": TargetKey("x", "y")})
    assert name(route(routes, b"b", cluster="outbound|80||a.default.svc.cluster.local")) == "a"
    # A cluster zerohop does not know (or a target since removed) leaves it to the host.
    assert name(route(routes, b"b", cluster="ghost")) == "b"
    assert name(route(routes, b"b", cluster="outbound|80||other")) == "b"
    assert route(routes, b"nobody", cluster="ghost") is None


def test_no_upstream_named_is_unmatched_whatever_the_host() -> None:
    routes = table(target("a", hosts=["a"]), target("any", hosts=[]))
    assert route(routes, b"a", cluster=NO_UPSTREAM) is None
    assert route(routes, b"elsewhere", cluster=NO_UPSTREAM) is None
    assert name(route(routes, b"a", cluster=None)) == "a"


def test_non_utf8_and_garbage_authority_do_not_raise() -> None:
    routes = table(target("a", hosts=["a.example.com"]))
    assert route(routes, b"\xff\xfe\x00bad") is None
    assert route(routes, b"a.example.com\xff") is None


def test_host_memo_is_bounded() -> None:
    routes = table(target("a", hosts=["a"]), target("any", hosts=[]))
    for i in range(_HOST_CACHE_LIMIT * 3):
        assert name(route(routes, f"random-{i}.example".encode())) == "any"
    assert len(routes._by_host) <= _HOST_CACHE_LIMIT


def grown_by(lookups: Callable[[], None]) -> int:
    """Bytes still allocated after `lookups` ran (what the route table kept)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        lookups()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_distinct_unknown_hosts_are_not_remembered() -> None:
    routes = table(target("a", hosts=["a.example"]), target("w", hosts=["*.wild.example"]))

    def lookups() -> None:
        for i in range(300):
            assert route(routes, b"%d." % i + b"x" * 100_000) is None  # 30 MB of distinct authorities
            assert route(routes, b"h%d.example" % i) is None

    assert grown_by(lookups) < 64 * 1024
    assert routes._by_host == {}


def test_overlong_authorities_cost_no_memory_even_with_a_catch_all() -> None:
    routes = table(target("a", hosts=["a.example"]), target("any", hosts=[]))

    def lookups() -> None:
        for i in range(300):
            # Longer than any DNS name with a port: it names no configured host, only the catch-all takes it.
            assert name(route(routes, b"a.example:%d" % i + b"0" * 100_000)) == "any"
            assert name(route(routes, b"%d" % i + b"a" * 300)) == "any"

    assert grown_by(lookups) < 64 * 1024
    assert routes._by_host == {}


def test_remembered_hosts_are_bounded_in_bytes() -> None:
    routes = table(target("a", hosts=["a.example"]), target("any", hosts=[]))
    longest = b"a" * (_MAX_AUTHORITY - 8)

    def lookups() -> None:
        for i in range(_HOST_CACHE_LIMIT * 2):
            assert name(route(routes, b"%08d" % i + longest)) == "any"

    # Each remembered host costs its key (at most _MAX_AUTHORITY bytes) and a dict slot; the routes are shared.
    assert grown_by(lookups) < _HOST_CACHE_LIMIT * (_MAX_AUTHORITY + 150)
    assert name(route(routes, b"A.example:8080")) == "a"
    assert name(route(routes, b"a" * (_MAX_AUTHORITY - 5) + b":8080")) == "any"


def test_rebuild_keeps_live_state() -> None:
    gate = ColdGate(max_held_per_target=1, max_held_total=1)
    registry = TargetRegistry(gate, hold_timeout=1, in_flight=InFlightMode.CONCURRENCY)
    first = registry.sync([target("a", hosts=["a"])])
    first[TargetKey("default", "a")].traffic.requests = 41
    second = registry.sync([target("a", hosts=["a", "b"]), target("c", hosts=["c"])])
    state = route(RouteTable(second.values()), b"b")
    assert state is not None
    assert state.traffic.requests == 41
    assert second[TargetKey("default", "a")] is first[TargetKey("default", "a")]


def test_removed_target_disappears_and_its_holds_end() -> None:
    gate = ColdGate(max_held_per_target=1, max_held_total=1)
    registry = TargetRegistry(gate, hold_timeout=1, in_flight=InFlightMode.CONCURRENCY)
    registry.sync([target("a", hosts=["a"])])
    assert len(registry.sync([])) == 0
    assert len(registry) == 0


def test_updated_table_routes_like_a_whole_build_through_random_changes() -> None:
    """`RouteTable.updated` touches only what changed, and must still answer every request as a table built
    whole from the same targets would: hosts, wildcards, catch-all, prefixes, headers, ties and clusters."""
    rng = random.Random(14)
    hosts = ["a.example", "b.example", "*.example", "*.b.example", "*"]
    prefixes = ["/", "/api", "/api/v1", "/web"]
    registry = TargetRegistry(
        ColdGate(max_held_per_target=1, max_held_total=1), hold_timeout=1, in_flight=InFlightMode.ALL
    )
    clusters: dict[str, TargetKey] = {}
    current = RouteTable()
    requests = [
        (authority, path, headers, cluster)
        for authority in (b"a.example", b"x.b.example", b"z.example", b"other")
        for path in ("/", "/api/v1/x", "/web?q")
        for headers in ({}, {"canary": "1"})
        for cluster in (None, "c0", "c1", "c2")
    ]
    for step in range(300):
        name_ = f"t{rng.randrange(8)}"
        key = TargetKey("default", name_)
        changed: list[TargetState] = []
        removed: list[TargetKey] = []
        delta: dict[str, TargetKey | None] = {}
        if rng.random() < 0.25:
            removed.append(key)
            registry.remove(key)
            for cluster in [c for c, owner in clusters.items() if owner == key]:
                del clusters[cluster]
                delta[cluster] = None
        else:
            spec: dict[str, Any] = {
                "hosts": [h for h in hosts if rng.random() < 0.3 and h != "*"] if rng.random() < 0.8 else [],
                "pathPrefixes": [p for p in prefixes if rng.random() < 0.4],
            }
            if rng.random() < 0.3:
                spec["headers"] = [{"name": "canary", "value": "1"}]
            changed.append(registry.upsert(target(name_, **spec)))
            cluster = f"c{rng.randrange(3)}"
            clusters[cluster] = key
            delta[cluster] = key
        current = current.updated(changed, removed, delta)
        whole = RouteTable(list(registry), clusters)
        assert current.states == whole.states, step
        for authority, path, headers, cluster in requests:
            got = route(current, authority, path, headers, cluster)
            want = route(whole, authority, path, headers, cluster)
            assert name(got) == name(want), (step, authority, path, headers, cluster)


def test_updated_table_leaves_the_previous_snapshot_as_it_was() -> None:
    registry = TargetRegistry(
        ColdGate(max_held_per_target=1, max_held_total=1), hold_timeout=1, in_flight=InFlightMode.ALL
    )
    before = RouteTable([registry.upsert(target("a", hosts=["a"])), registry.upsert(target("b", hosts=["b"]))])
    registry.remove(TargetKey("default", "b"))
    after = before.updated(
        [registry.upsert(target("c", hosts=["a"], pathPrefixes=["/c"]))], [TargetKey("default", "b")]
    )
    assert after.changed == 2
    assert name(route(before, b"b")) == "b"
    assert name(route(before, b"a", "/c")) == "a"
    assert route(after, b"b") is None
    assert name(route(after, b"a", "/c")) == "c"
    assert name(route(after, b"a", "/")) == "a"
