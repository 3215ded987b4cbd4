"""/metrics as text: the exact exposition for known states, label escaping, and every documented metric served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from extproc import __version__
from extproc.core.coldstart import HoldOutcome
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey, parse
from extproc.core.provider import ReplicaCounts
from extproc.core.warmpath import WarmPath
from extproc.envoy.processor import ProcessorStats
from extproc.envoy.warmswitch import WarmSwitch
from extproc.observability import metrics
from extproc.providers.local.provider import LocalStatus, ReloadStatus
from tests import promtext
from tests.unit.test_dashboard import KubernetesLikeProvider, Peers, documented_rows, every_family


def shop() -> Core:
    core = Core(hold_timeout=30, max_held_per_target=10, max_held_total=10)
    document = {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {
            "hosts": ["shop.example"],
            "scaleTargetRef": {"name": "shop", "service": "shop", "port": 80},
            "scalingMetric": {"requestRate": {"targetValue": 10}},
        },
    }
    core.apply_targets([parse(document)], {})
    return core


def samples(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_render_writes_the_text_format_exactly() -> None:
    requests = metrics.Family("demo_requests_total", "counter", "Requests.")
    requests.add(3, namespace="default", name="shop")
    requests.add(1e16, namespace="default", name="big")
    rate = metrics.Family("demo_rate", "gauge", "A rate.")
    rate.add(0.125)
    rate.add(float("inf"), kind="up")
    rate.add(float("-inf"), kind="down")
    hold = metrics.Family("demo_hold_seconds", "histogram", "Holds.")
    hold.histograms.append(((("outcome", "released"),), [(0.5, 1), (1.0, 2), (float("inf"), 2)], 1.25, 2))
    empty = metrics.Family("demo_empty", "gauge", "No samples yet.")

    assert metrics.render([requests, rate, hold, empty]) == (
        "# HELP demo_requests_total Requests.\n"
        "# TYPE demo_requests_total counter\n"
        'demo_requests_total{namespace="default",name="shop"} 3\n'
        'demo_requests_total{namespace="default",name="big"} 1e+16\n'
        "# HELP demo_rate A rate.\n"
        "# TYPE demo_rate gauge\n"
        "demo_rate 0.125\n"
        'demo_rate{kind="up"} +Inf\n'
        'demo_rate{kind="down"} -Inf\n'
        "# HELP demo_hold_seconds Holds.\n"
        "# TYPE demo_hold_seconds histogram\n"
        'demo_hold_seconds_bucket{outcome="released",le="0.5"} 1\n'
        'demo_hold_seconds_bucket{outcome="released",le="1"} 2\n'
        'demo_hold_seconds_bucket{outcome="released",le="+Inf"} 2\n'
        'demo_hold_seconds_sum{outcome="released"} 1.25\n'
        'demo_hold_seconds_count{outcome="released"} 2\n'
        "# HELP demo_empty No samples yet.\n"
        "# TYPE demo_empty gauge\n"
    )


def test_label_values_are_escaped() -> None:
    family = metrics.Family("demo_info", "gauge", "Odd label values.")
    family.add(1, peer='say "hi"', path="C:\\dir", text="two\nlines")
    [line] = samples(metrics.render([family]))
    assert line == r'demo_info{peer="say \"hi\"",path="C:\\dir",text="two\nlines"} 1'
    assert promtext.parse(metrics.render([family])) == {line.rpartition(" ")[0]: 1.0}


def test_a_known_state_renders_exactly() -> None:
    core = shop()
    state = next(iter(core.registry))
    state.traffic.requests += 3
    state.traffic.hold_ended(HoldOutcome.RELEASED, 0.3)
    state.traffic.hold_ended("over_capacity", None)
    stats = ProcessorStats()
    stats.streams, stats.unmatched = 5, 2
    target = 'namespace="default",name="shop"'
    buckets = [("0.05", 0), ("0.1", 0), ("0.25", 0), ("0.5", 1), ("1", 1), ("2.5", 1), ("5", 1), ("10", 1)]
    buckets += [("30", 1), ("60", 1), ("120", 1), ("+Inf", 1)]

    text = metrics.render(metrics.collect(metrics.Sources(core, None, stats, {"GetMetrics": 4, "IsActive": 1})))

    assert samples(text) == [
        f"zerohop_requests_total{{{target}}} 3",
        f'zerohop_cold_requests_total{{{target},outcome="released"}} 1',
        f'zerohop_cold_requests_total{{{target},outcome="timeout"}} 0',
        f'zerohop_cold_requests_total{{{target},outcome="over_capacity"}} 1',
        f'zerohop_cold_requests_total{{{target},outcome="shutdown"}} 0',
        f'zerohop_cold_requests_total{{{target},outcome="removed"}} 0',
        f'zerohop_cold_requests_total{{{target},outcome="aborted"}} 0',
        f'zerohop_cold_requests_total{{{target},outcome="failover"}} 0',
        f'zerohop_cold_requests_total{{{target},outcome="placeholder"}} 0',
        f"zerohop_released_errors_total{{{target}}} 0",
        f"zerohop_in_flight_requests{{{target}}} 0",
        f"zerohop_held_requests{{{target}}} 0",
        f"zerohop_request_rate{{{target}}} 0",
        f"zerohop_target_routable{{{target}}} 0",
        f"zerohop_cold_starts_total{{{target}}} 0",
        f"zerohop_activations_total{{{target}}} 0",
        *(f'zerohop_hold_duration_seconds_bucket{{{target},outcome="released",le="{le}"}} {n}' for le, n in buckets),
        f'zerohop_hold_duration_seconds_sum{{{target},outcome="released"}} 0.3',
        f'zerohop_hold_duration_seconds_count{{{target},outcome="released"}} 1',
        'zerohop_targets{state="routable"} 0',
        'zerohop_targets{state="unroutable"} 1',
        "zerohop_metrics_dropped_targets 0",
        f'zerohop_info{{version="{__version__}"}} 1',
        "zerohop_unmatched_requests_total 2",
        "zerohop_ext_proc_streams_total 5",
        'zerohop_ext_proc_errors_total{kind="malformed"} 0',
        'zerohop_ext_proc_errors_total{kind="error"} 0',
        "zerohop_released_not_routed_total 0",
        'zerohop_scaler_requests_total{method="GetMetrics"} 4',
        'zerohop_scaler_requests_total{method="IsActive"} 1',
    ]


def test_provider_peer_and_kubernetes_samples_come_from_the_typed_statuses() -> None:
    provider: Any = KubernetesLikeProvider()
    text = metrics.render(metrics.collect(metrics.Sources(shop(), provider, peers=Peers())))

    lines = set(samples(text))
    expected = {
        'zerohop_target_replicas{namespace="default",name="shop",state="desired"} 2',
        'zerohop_target_replicas{namespace="default",name="shop",state="ready"} 1',
        'zerohop_peers{state="known"} 1',
        'zerohop_peers{state="answered"} 1',
        "zerohop_peer_fetch_errors_total 0",
        'zerohop_peer_last_answer_age_seconds{peer="10.0.0.7:9092"} 0.5',
        'zerohop_kubernetes_watch_restarts_total{resource="httpscaledobjects"} 0',
        'zerohop_kubernetes_relists_total{resource="httpscaledobjects"} 0',
        'zerohop_kubernetes_connected{resource="httpscaledobjects"} 1',
        "zerohop_leader 1",
        'zerohop_gateway_pod_stats_readable{pod="istio-ingressgateway-0",state="ok"} 1',
        'zerohop_gateway_confirmations_total{how="stats"} 1',
        "zerohop_gateway_stats_errors_total 0",
    }
    assert expected <= lines, sorted(expected - lines)


class LocalLikeProvider:
    def replicas(self, key: TargetKey) -> ReplicaCounts:
        return ReplicaCounts(desired=1, ready=1)

    def status(self) -> LocalStatus:
        return LocalStatus(Path("zerohop.yaml"), Path("xds"), ReloadStatus(True, 1.7e9, 1.7e9, None, None), ())


def test_a_provider_without_watches_has_no_kubernetes_families() -> None:
    provider: Any = LocalLikeProvider()
    text = metrics.render(metrics.collect(metrics.Sources(shop(), provider)))
    assert "zerohop_target_replicas" in text
    assert "zerohop_kubernetes" not in text
    assert "zerohop_leader" not in text
    assert "zerohop_config_reload_success 1" in text.splitlines()
    assert "zerohop_gateway" not in text


def test_every_documented_metric_is_served_with_its_type() -> None:
    text = metrics.render(every_family())
    served = promtext.parse(text)
    for name, (kind, _, _) in documented_rows().items():
        name = name.strip("`")
        assert f"# TYPE {name} {kind}\n" in text, f"{name} ({kind}) is documented but not served"
        series = f"{name}_count" if kind == "histogram" else name
        assert any(key.partition("{")[0] == series for key in served), f"{name} is served without a sample"


class WarmLocalProvider(LocalLikeProvider):
    """The local provider's shape with `--warm-path open`: its warm switch is where the warm-path series come from."""

    def __init__(self, warm_switch: WarmSwitch) -> None:
        self.warm_switch = warm_switch


def warm_switch_of(core: Core) -> WarmSwitch:
    gateways: Any = None  # never used: no round runs here
    return WarmSwitch(core, WarmPath(open_after=0.0), gateways, 1.0)


def test_the_warm_path_series_come_from_the_warm_switch() -> None:
    core = shop()
    state = next(iter(core.registry))
    switch = warm_switch_of(core)
    switch.warm.set_hosts(core.registry, {state.key: ("shop.example",)})
    core.set_routable(state.key, True)
    state.traffic.requests += 1
    state.traffic.rate.record(100.0)
    assert switch.warm.update(100.0) == {"shop.example"}
    switch.warm.confirmed(frozenset({"shop.example"}))
    switch.gateway_503[state.key] = 2
    switch.health.scrapes, switch.health.failures, switch.health.failing = 7, 1, True
    provider: Any = WarmLocalProvider(switch)
    target = 'namespace="default",name="shop"'

    def lines() -> set[str]:
        return set(samples(metrics.render(metrics.collect(metrics.Sources(core, provider)))))

    expected = {
        f'zerohop_warm_path_state{{{target},state="gated"}} 0',
        f'zerohop_warm_path_state{{{target},state="opening"}} 0',
        f'zerohop_warm_path_state{{{target},state="open"}} 1',
        f'zerohop_warm_path_state{{{target},state="closing"}} 0',
        f"zerohop_warm_path_gateway_503_total{{{target}}} 2",
        "zerohop_warm_path_stats_scrapes_total 7",
        "zerohop_warm_path_stats_failures_total 1",
        "zerohop_warm_path_stats_failing 1",
        "zerohop_warm_path_gated_unexpectedly_total 0",
    }
    assert expected <= lines(), sorted(expected - lines())

    # Its endpoints vanish while open: counted, and being gated from the switch's next round.
    core.set_routable(state.key, False)
    assert switch.warm.update(100.5) == frozenset()
    after = lines()
    assert f'zerohop_warm_path_state{{{target},state="open"}} 0' in after
    assert f'zerohop_warm_path_state{{{target},state="closing"}} 1' in after
    assert "zerohop_warm_path_gated_unexpectedly_total 1" in after


def test_the_warm_path_per_target_series_obey_the_target_cap_and_are_absent_without_it() -> None:
    core = shop()
    provider: Any = WarmLocalProvider(warm_switch_of(core))
    capped = metrics.render(metrics.collect(metrics.Sources(core, provider), max_targets=0))
    assert "# TYPE zerohop_warm_path_state gauge" in capped  # the family stays, empty
    assert not [line for line in samples(capped) if line.startswith("zerohop_warm_path_state")]
    assert "zerohop_warm_path_stats_scrapes_total 0" in samples(capped)

    plain: Any = LocalLikeProvider()
    assert "zerohop_warm_path" not in metrics.render(metrics.collect(metrics.Sources(core, plain)))
