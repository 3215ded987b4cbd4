"""The warm path's state machine and the request count read from the gateway's counters (core/warmpath.py)."""

from __future__ import annotations

from typing import Any

from extproc.core.engine import Core
from extproc.core.httpso import TargetKey, parse
from extproc.core.registry import TargetState
from extproc.core.warmpath import GatewayCounters, PathState, StatsCounter, WarmPath, counter_increase


def spec(name: str, host: str, prefix: str = "/") -> Any:
    return parse(
        {
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "hosts": [host],
                "pathPrefixes": [prefix],
                "scaleTargetRef": {"name": name, "service": name, "port": 80},
                "scalingMetric": {"requestRate": {"window": "10s", "granularity": "1s"}},
            },
        }
    )


def setup(*specs: Any, open_after: float = 3.0) -> tuple[Core, WarmPath, dict[str, TargetState]]:
    core = Core(hold_timeout=30, max_held_per_target=10, max_held_total=10)
    core.apply_targets(specs, {})
    states = {state.key.name: state for state in core.registry}
    warm = WarmPath(open_after)
    warm.set_hosts(states.values(), {state.key: state.spec.hosts for state in states.values()})
    # As the warm-path loop wires it: the core tells it which targets turn routable or not.
    core.add_routable_hook(lambda key, routable: warm.routable_changed(key, routable))
    return core, warm, states


def traffic(state: TargetState, now: float) -> None:
    state.traffic.requests += 1
    state.traffic.rate.record(now)


def test_counter_increase_reads_a_decrease_as_a_reset() -> None:
    assert counter_increase(None, 50) == 0
    assert counter_increase(10, 25) == 15
    assert counter_increase(100, 7) == 7  # the gateway restarted and has counted 7 since
    assert counter_increase(7, 7) == 0


def test_stats_counter_subtracts_what_ext_proc_counted_itself() -> None:
    counter = StatsCounter()
    assert counter.add({"gw": 1000}, own_total=40) == 0  # the first read only sets the baseline
    # 30 more upstream requests, 10 of which went through ext_proc (a switch under way): 20 bypassed.
    assert counter.add({"gw": 1030}, own_total=50) == 20
    counter.own_counted(20)  # the caller adds the 20 to the target's own count
    assert counter.add({"gw": 1050}, own_total=80) == 10  # 20 upstream, 10 of them via ext_proc
    counter.own_counted(10)
    assert counter.add({"gw": 5}, own_total=90) == 5  # a gateway restart: it has counted 5 since
    counter.own_counted(5)
    # ext_proc counted 2 whose upstream requests the gateway has not counted yet: carried, not lost...
    assert counter.add({"gw": 5}, own_total=97) == 0
    # ...so when the gateway counts them (and 3 that bypassed), only the 3 are new.
    assert counter.add({"gw": 10}, own_total=97) == 3


def test_gateway_counters_sum_each_gateway_with_its_own_resets_and_absences() -> None:
    counters = GatewayCounters()
    assert counters.increase({"pod-a": 100, "pod-b": 50}) == 0  # baselines
    assert counters.increase({"pod-a": 110, "pod-b": 55}) == 15
    assert not counters.reset
    # pod-b restarted (its 3 are new); pod-a grew by 5: a sum-then-difference would read -52 here.
    assert counters.increase({"pod-a": 115, "pod-b": 3}) == 8
    assert counters.reset
    # pod-a could not be read: nothing of it is lost, its growth arrives with its next read.
    assert counters.increase({"pod-b": 4}) == 1
    assert counters.increase({"pod-a": 130, "pod-b": 4}) == 15
    # A new pod only sets its baseline (its total may predate this reader), then counts.
    assert counters.increase({"pod-a": 130, "pod-b": 4, "pod-c": 900}) == 0
    assert counters.increase({"pod-a": 130, "pod-b": 4, "pod-c": 905}) == 5
    counters.forget(["pod-c"])
    assert counters.increase({"pod-c": 2}) == 0


def test_stats_counter_with_two_gateways_one_restarting() -> None:
    counter = StatsCounter()
    assert counter.add({"a": 10, "b": 20}, own_total=0) == 0
    assert counter.add({"a": 15, "b": 2}, own_total=0) == 7  # 5 on a, b restarted and counted 2 since


def test_assumed_open_hosts_keep_their_targets_active_until_a_confirmed_gate() -> None:
    _core, warm, states = setup(spec("a", "a.test"), open_after=3.0)
    a = states["a"]
    warm.assume_open(["a.test"])
    assert warm.host_state("a.test") is PathState.OPEN
    assert a.forced_active
    assert warm.update(100.0) == frozenset()  # not eligible (no traffic seen): gate it
    assert warm.host_state("a.test") is PathState.CLOSING
    assert a.forced_active
    warm.confirmed(frozenset())
    assert warm.host_state("a.test") is PathState.GATED
    assert not a.forced_active


def test_a_target_opens_only_after_being_routable_and_active_for_open_after() -> None:
    core, warm, states = setup(spec("a", "a.test"), open_after=3.0)
    a = states["a"]
    core.set_routable(a.key, True)
    traffic(a, 100.0)
    assert warm.update(100.0) == frozenset()
    traffic(a, 102.0)
    assert warm.update(102.5) == frozenset()
    assert warm.host_state("a.test") is PathState.GATED
    assert not a.forced_active
    traffic(a, 103.0)
    assert warm.update(103.0) == {"a.test"}
    assert warm.host_state("a.test") is PathState.OPENING
    assert a.forced_active  # from the moment the config may be written open
    warm.confirmed(frozenset({"a.test"}))
    assert warm.target_state(a.key) is PathState.OPEN


def test_an_unroutable_or_idle_target_does_not_open() -> None:
    core, warm, states = setup(spec("a", "a.test"), open_after=0.0)
    a = states["a"]
    traffic(a, 1.0)
    assert warm.update(1.0) == frozenset()  # not routable
    core.set_routable(a.key, True)
    assert warm.update(20.0) == frozenset()  # routable, but its window has no request
    traffic(a, 20.0)
    assert warm.update(20.0) == {"a.test"}


def test_an_idle_open_target_closes_and_is_forced_active_until_the_gate_is_confirmed() -> None:
    core, warm, states = setup(spec("a", "a.test"), open_after=0.0)
    a = states["a"]
    core.set_routable(a.key, True)
    traffic(a, 1.0)
    warm.update(1.0)
    warm.confirmed(frozenset({"a.test"}))
    assert warm.update(5.0) == {"a.test"}  # still requests in the window
    assert warm.update(12.0) == frozenset()  # the window emptied: close
    assert warm.host_state("a.test") is PathState.CLOSING
    assert a.forced_active
    warm.confirmed(frozenset({"a.test"}))  # an older config confirmed: still closing
    assert a.forced_active
    warm.confirmed(frozenset())
    assert warm.host_state("a.test") is PathState.GATED
    assert not a.forced_active


def test_a_virtual_host_opens_only_when_every_target_behind_it_is_eligible() -> None:
    core, warm, states = setup(spec("v1", "shop.test", "/v1"), spec("v2", "shop.test", "/v2"), open_after=0.0)
    core.set_routable(states["v1"].key, True)
    traffic(states["v1"], 1.0)
    traffic(states["v2"], 1.0)
    assert warm.update(1.0) == frozenset()  # v2 is cold: the vhost stays gated
    core.set_routable(states["v2"].key, True)
    assert warm.update(1.5) == {"shop.test"}


def test_endpoints_vanishing_while_open_gate_at_once() -> None:
    core, warm, states = setup(spec("a", "a.test"), open_after=0.0)
    a = states["a"]
    core.set_routable(a.key, True)
    traffic(a, 1.0)
    warm.update(1.0)
    warm.confirmed(frozenset({"a.test"}))
    core.set_routable(a.key, False)
    assert warm.routable_lost(a.key)
    assert warm.close_all([a.key]) == frozenset()
    assert warm.host_state("a.test") is PathState.CLOSING
    assert a.forced_active
    assert warm.gated_unexpectedly == 1
    assert not warm.routable_lost(TargetKey("default", "missing"))


def test_the_gateways_in_flight_count_is_not_added_to_zerohops_own() -> None:
    _core, _warm, states = setup(spec("a", "a.test"))
    a = states["a"]
    a.traffic.in_flight = 2
    a.traffic.gateway_in_flight = 5
    assert a.snapshot(1.0).in_flight == 5
    a.traffic.gateway_in_flight = 0
    assert a.snapshot(1.0).in_flight == 2
