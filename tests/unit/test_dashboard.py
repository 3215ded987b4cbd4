"""docs/grafana-dashboard.json and the metrics table of docs/observability.md against what the metrics module
really exposes: every metric and label a panel queries exists, and every family is documented.

`python -m tests.unit.test_dashboard` prints the table rows for docs/observability.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from extproc.core.coldstart import HoldOutcome
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey, parse
from extproc.core.provider import ReplicaCounts
from extproc.core.warmpath import PathState
from extproc.envoy.gatewaystats import Confirmation, GatewayStatsStatus, PodStatsState, PodStatsStatus
from extproc.envoy.processor import ProcessorStats
from extproc.keda.peers import PeersStatus, PeerStatus
from extproc.observability import metrics
from extproc.providers.kubernetes.informer import InformerStatus
from extproc.providers.kubernetes.provider import GatewayStatus, KubernetesStatus

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana-dashboard.json"
OBSERVABILITY = DOCS / "observability.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Families a panel must show (the dashboard's purpose), besides what it may add.
REQUIRED = {
    "zerohop_requests_total",
    "zerohop_in_flight_requests",
    "zerohop_held_requests",
    "zerohop_target_replicas",
    "zerohop_cold_starts_total",
    "zerohop_hold_duration_seconds",
    "zerohop_cold_requests_total",
    "zerohop_unmatched_requests_total",
    "zerohop_ext_proc_errors_total",
    "zerohop_peers",
    "zerohop_kubernetes_connected",
    "zerohop_kubernetes_watch_restarts_total",
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}


@dataclass
class StatsHealth:
    scrapes: int = 3
    failures: int = 1
    failing: bool = False


class WarmSwitchLike:
    """A warm switch (`--warm-path open`) with one target open, so the warm-path families have samples."""

    health = StatsHealth()
    gated_unexpectedly = 0

    def target_state(self, key: TargetKey) -> PathState:
        return PathState.OPEN

    def gateway_503s(self, key: TargetKey) -> int:
        return 0


class KubernetesLikeProvider:
    """A provider with replica counts, a Kubernetes status and a warm switch, so the provider-fed families have
    samples."""

    warm_switch = WarmSwitchLike()

    def replicas(self, key: TargetKey) -> ReplicaCounts:
        return ReplicaCounts(desired=2, ready=1)

    def status(self) -> ClusterAndConfigStatus:
        informer = InformerStatus("httpscaledobjects", True, True, 1, 0, 0, "")
        pod = PodStatsStatus("istio-ingressgateway-0", "10.0.0.9", PodStatsState.OK, "", 0.0)
        stats = GatewayStatsStatus(15090, (pod,), 1, 0, ((Confirmation.STATS, 1),))
        gateway = GatewayStatus("pod-stats", stats=stats)
        return ClusterAndConfigStatus(KubernetesStatus("zerohop-0", True, "zerohop-0", (informer,), 0, gateway, ()))


@dataclass(frozen=True)
class ClusterAndConfigStatus:
    """A status with both the Kubernetes provider's watches and the local provider's reload state, so every
    provider-sourced family is collected."""

    cluster: KubernetesStatus
    reload_success: bool = True
    last_reload_success: float | None = 1.7e9
    rejected_documents: int = 0

    @property
    def leader(self) -> bool:
        return self.cluster.leader

    @property
    def informers(self) -> tuple[InformerStatus, ...]:
        return self.cluster.informers

    @property
    def gateway_stats(self) -> GatewayStatsStatus | None:
        return self.cluster.gateway_stats

    def as_dict(self) -> dict[str, Any]:
        return self.cluster.as_dict()


class Peers:
    def status(self) -> PeersStatus:
        peer = PeerStatus("10.0.0.7:9092", 0.5, 0, "")
        return PeersStatus("10.0.0.6:9092", (peer,), 1, 0)


def every_family() -> list[metrics.Family]:
    """`collect()` with every source present and at least one sample (and one hold) in every family."""
    core = Core(hold_timeout=30, max_held_per_target=10, max_held_total=10)
    spec = {
        "hosts": ["shop.example"],
        "scaleTargetRef": {"name": "shop", "service": "shop", "port": 80},
        "scalingMetric": {"requestRate": {"targetValue": 10}},
    }
    document = {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": spec,
    }
    core.apply_targets([parse(document)], {})
    state = next(iter(core.registry))
    state.traffic.hold_ended(HoldOutcome.RELEASED, 0.4)
    state.gate.last_cold_duration = 0.4
    provider: Any = KubernetesLikeProvider()
    return metrics.collect(metrics.Sources(core, provider, ProcessorStats(), {"GetMetrics": 1}, Peers()))


def labels_of(family: metrics.Family) -> set[str]:
    found = {name for labels, _ in family.samples for name, _ in labels}
    found |= {name for labels, _, _, _ in family.histograms for name, _ in labels}
    return found


def exposed(families: list[metrics.Family]) -> dict[str, tuple[metrics.Family, set[str]]]:
    """Every series name Prometheus sees (histograms as _bucket, _sum, _count) -> its family and label names."""
    names: dict[str, tuple[metrics.Family, set[str]]] = {}
    for family in families:
        labels = labels_of(family)
        if family.kind == "histogram":
            names[f"{family.name}_bucket"] = (family, labels | {"le"})
            names[f"{family.name}_sum"] = (family, labels)
            names[f"{family.name}_count"] = (family, labels)
        else:
            names[family.name] = (family, labels)
    return names


def test_outcome_label_values_are_the_documented_strings() -> None:
    """Dashboards and alerts query these values: the enum behind them must not change what is exposed."""
    [cold] = [f for f in every_family() if f.name == "zerohop_cold_requests_total"]
    values = [value for labels, _ in cold.samples for name, value in labels if name == "outcome"]
    assert values == [
        "released",
        "timeout",
        "over_capacity",
        "shutdown",
        "removed",
        "aborted",
        "failover",
        "placeholder",
    ]
    assert all(type(value) is str for value in values)
    assert 'zerohop_cold_requests_total{namespace="default",name="shop",outcome="released"} 1' in metrics.render([cold])


def test_every_family_has_samples_so_its_labels_are_known() -> None:
    empty = [f.name for f in every_family() if not f.samples and not f.histograms]
    assert not empty


# --- the dashboard ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in panels(dashboard) for target in panel["targets"]]


def test_dashboard_has_the_datasource_and_target_variables(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    target = variables["target"]
    assert target["type"] == "query"
    assert target["datasource"] == DATASOURCE
    assert target["definition"] == "label_values(zerohop_requests_total, name)"
    assert target["query"]["query"] == target["definition"]


def test_every_panel_has_a_unique_id_and_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), ids
    for panel in panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]


def test_every_metric_and_label_a_panel_queries_exists(dashboard: dict[str, Any]) -> None:
    series = exposed(every_family())
    used: set[str] = set()
    for title, expr in expressions(dashboard):
        names = set(re.findall(r"\bzerohop_\w+", expr))
        assert names, f"{title}: {expr} queries no zerohop metric"
        unknown = names - set(series)
        assert not unknown, f"{title}: {sorted(unknown)} not exposed by extproc.observability.metrics"
        labels = set().union(*(series[name][1] for name in names))
        matchers = {m for selector in re.findall(r"\{([^}]*)\}", expr) for m in re.findall(r"(\w+)\s*[=!]~?", selector)}
        groupings = {
            word
            for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for word in re.findall(r"\w+", grouping)
        }
        foreign = (matchers | groupings) - labels - PROMQL_WORDS
        assert not foreign, f"{title}: {expr} uses labels {sorted(foreign)} that {sorted(names)} do not have"
        if "name" in labels:
            assert 'name=~"$target"' in expr, f"{title}: {expr} ignores the target variable"
        used |= {series[name][0].name for name in names}
    assert not REQUIRED - used, f"no panel shows {sorted(REQUIRED - used)}"


def test_the_label_checks_see_an_unknown_label() -> None:
    series = exposed(every_family())
    assert "pod" not in series["zerohop_requests_total"][1]
    assert series["zerohop_hold_duration_seconds_bucket"][1] == {"namespace", "name", "outcome", "le"}


# --- the metrics reference in docs/observability.md ---------------------------------------------------------


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(name, type, labels, meaning) of every family, as the doc's table lists them."""
    rows = []
    for family in every_family():
        labels = ", ".join(f"`{label}`" for label in sorted(labels_of(family))) or "-"
        rows.append((f"`{family.name}`", family.kind, labels, family.help))
    return rows


def documented_rows() -> dict[str, tuple[str, str, str]]:
    text = OBSERVABILITY.read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`zerohop_"):
            rows[cells[0]] = (cells[1], cells[2], cells[3])
    return rows


def test_the_doc_lists_every_family_with_its_type_and_labels() -> None:
    documented = documented_rows()
    for name, kind, labels, _ in reference_rows():
        assert name in documented, f"{name} is missing from the metrics table of {OBSERVABILITY.name}"
        assert documented[name][:2] == (kind, labels), f"{name}: documented as {documented[name][:2]}"
        assert documented[name][2], f"{name}: no meaning given"
    stale = set(documented) - {row[0] for row in reference_rows()}
    assert not stale, f"{OBSERVABILITY.name} documents metrics zerohop does not expose: {sorted(stale)}"


def instrument(family: metrics.Family) -> str:
    """The OpenTelemetry instrument a family is exported as (see `Telemetry.observe`)."""
    if family.kind == "counter":
        return "Counter (integer sum)"
    if family.kind == "histogram":
        return "Histogram"
    return "UpDownCounter (integer sum)" if family.additive else "Gauge"


def otlp_rows() -> list[tuple[str, str, str, str]]:
    """(OTLP name, unit, instrument, Prometheus name) of every family, as the doc's OTLP table lists them."""
    return [
        (f"`{f.otel_name}`", f"`{f.unit}`" if f.unit else "-", instrument(f), f"`{f.name}`") for f in every_family()
    ]


def test_the_doc_lists_every_otlp_instrument_with_its_unit_and_prometheus_name() -> None:
    text = OBSERVABILITY.read_text()
    documented = {
        cells[0]: tuple(cells[1:])
        for line in text.splitlines()
        if len(cells := [cell.strip() for cell in line.strip().strip("|").split("|")]) == 4
        and cells[0].startswith("`zerohop.")
    }
    expected = {row[0]: row[1:] for row in otlp_rows()}
    assert documented == expected, f"the OTLP table of {OBSERVABILITY.name} differs from metrics.py"


if __name__ == "__main__":
    print("| name | type | labels | meaning |\n|---|---|---|---|")
    for row in reference_rows():
        print("| " + " | ".join(row) + " |")
    print("\n| OTLP name | unit | instrument | Prometheus name |\n|---|---|---|---|")
    for row in otlp_rows():
        print("| " + " | ".join(row) + " |")
