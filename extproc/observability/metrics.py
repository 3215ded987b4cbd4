"""zerohop's metrics: every family is read from the live counters when scraped, never on the hot path.

One definition serves both exporters: `/metrics` on the admin port (Prometheus text format 0.0.4) and
OpenTelemetry's observable instruments (OTLP, see `telemetry`). Labels are bounded: a target's namespace
and name, an outcome, a method; never a raw host or path from a request (requests that match no target
are one series).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from extproc import __version__
from extproc.core.coldstart import HoldOutcome
from extproc.core.engine import Core
from extproc.core.provider import Provider
from extproc.core.registry import TargetState
from extproc.envoy.processor import ProcessorStats

Labels = tuple[tuple[str, str], ...]

HOLD_OUTCOMES = tuple(HoldOutcome)


@dataclass(slots=True)
class Family:
    """One metric: name, type (counter, gauge or histogram), help, and its samples at collection time."""

    name: str
    kind: str
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)
    # histograms: per label set, the cumulative buckets, sum and count
    histograms: list[tuple[Labels, list[tuple[float, int]], float, int]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((tuple(labels.items()), float(value)))


@dataclass(slots=True)
class Sources:
    """Where the metrics are read from; only `core` is required."""

    core: Core
    provider: Provider | None = None
    processor: ProcessorStats | None = None
    scaler_calls: dict[str, int] | None = None
    peers: Any = None


def _target(state: TargetState) -> dict[str, str]:
    return {"namespace": state.key.namespace, "name": state.key.name}


def collect(sources: Sources) -> list[Family]:
    """Every family with its current samples."""
    now = time.monotonic()
    core = sources.core
    states = list(core.registry)

    requests = Family("zerohop_requests_total", "counter", "Requests matched to a target (warm and cold).")
    cold = Family("zerohop_cold_requests_total", "counter", "Requests that found their target cold, by outcome.")
    released_5xx = Family(
        "zerohop_released_errors_total", "counter", "Released cold requests whose response was a 5xx."
    )
    in_flight = Family("zerohop_in_flight_requests", "gauge", "Requests in flight (held ones included).")
    held = Family("zerohop_held_requests", "gauge", "Requests held right now while their target starts.")
    rate = Family("zerohop_request_rate", "gauge", "Requests per granularity, averaged over the window.")
    routable = Family("zerohop_target_routable", "gauge", "1 when the gateway can route to the target.")
    replicas = Family("zerohop_target_replicas", "gauge", "Replicas of the target, by state (desired, ready).")
    cold_starts = Family("zerohop_cold_starts_total", "counter", "Cold starts: first request held while cold.")
    activations = Family(
        "zerohop_activations_total", "counter", "Wakes sent (KEDA push, scale patch): cold starts and re-wakes."
    )
    last_cold = Family(
        "zerohop_last_cold_start_duration_seconds", "gauge", "How long the last cold start held requests."
    )
    hold = Family("zerohop_hold_duration_seconds", "histogram", "How long cold requests were held, by outcome.")
    for state in states:
        labels = _target(state)
        traffic = state.traffic
        snapshot = state.snapshot(now)
        gate = state.gate
        requests.add(traffic.requests, **labels)
        for outcome in HOLD_OUTCOMES:
            cold.add(traffic.outcomes.get(outcome, 0), **labels, outcome=outcome.value)
        released_5xx.add(traffic.released_5xx, **labels)
        in_flight.add(snapshot.in_flight, **labels)
        held.add(snapshot.held, **labels)
        rate.add(snapshot.rate, **labels)
        routable.add(1 if gate.routable else 0, **labels)
        counts = sources.provider.replicas(state.key) if sources.provider is not None else None
        if counts is not None:
            replicas.add(counts.desired, **labels, state="desired")
            replicas.add(counts.ready, **labels, state="ready")
        cold_starts.add(gate.cold_starts, **labels)
        activations.add(gate.wakes, **labels)
        if gate.last_cold_duration is not None:
            last_cold.add(gate.last_cold_duration, **labels)
        for outcome, histogram in sorted(traffic.holds.items()):
            hold_labels = (*tuple(labels.items()), ("outcome", outcome.value))
            hold.histograms.append((hold_labels, histogram.cumulative(), histogram.sum, histogram.count))

    families = [requests, cold, released_5xx, in_flight, held, rate, routable, replicas, cold_starts]
    families += [activations, last_cold, hold]

    info = Family("zerohop_info", "gauge", "zerohop's version.")
    info.add(1, version=__version__)
    families.append(info)

    if sources.processor is not None:
        stats = sources.processor
        unmatched = Family(
            "zerohop_unmatched_requests_total", "counter", "Requests whose host and cluster match no target."
        )
        unmatched.add(stats.unmatched)
        streams = Family("zerohop_ext_proc_streams_total", "counter", "ext_proc streams Envoy opened.")
        streams.add(stats.streams)
        errors = Family("zerohop_ext_proc_errors_total", "counter", "ext_proc input zerohop could not use, by kind.")
        errors.add(stats.malformed, kind="malformed")
        errors.add(stats.errors, kind="error")
        not_routed = Family(
            "zerohop_released_not_routed_total",
            "counter",
            "Requests zerohop let through (released, or warm while a guessed release was watched) that the "
            "gateway answered itself with 503 no healthy upstream: it did not have the endpoint yet.",
        )
        not_routed.add(stats.not_routed)
        families += [unmatched, streams, errors, not_routed]

    if sources.scaler_calls is not None:
        calls = Family("zerohop_scaler_requests_total", "counter", "Calls to KEDA's external scaler API, by method.")
        for method, count in sorted(sources.scaler_calls.items()):
            calls.add(count, method=method)
        families.append(calls)

    if sources.peers is not None:
        families += _peer_families(sources.peers)
    status = sources.provider.status() if sources.provider is not None else {}
    families += _kubernetes_families(status)
    return families


def _peer_families(peers: Any) -> list[Family]:
    status = peers.status()
    known = Family("zerohop_peers", "gauge", "Other zerohop replicas, by state (known, answered last fetch).")
    known.add(len(status["peers"]), state="known")
    known.add(status["answered"], state="answered")
    errors = Family("zerohop_peer_fetch_errors_total", "counter", "Peer count fetches that failed.")
    errors.add(status["fetchErrors"])
    age = Family("zerohop_peer_last_answer_age_seconds", "gauge", "Seconds since each peer last answered.")
    for peer in status["peers"]:
        if peer["lastAnswerAgeSeconds"] is not None:
            age.add(peer["lastAnswerAgeSeconds"], peer=peer["address"])
    return [known, errors, age]


def _kubernetes_families(status: dict[str, Any]) -> list[Family]:
    informers = status.get("informers")
    if not informers:
        return []
    restarts = Family(
        "zerohop_kubernetes_watch_restarts_total", "counter", "Watches that failed and were restarted, by resource."
    )
    relists = Family("zerohop_kubernetes_relists_total", "counter", "Full lists after a 410, by resource.")
    connected = Family("zerohop_kubernetes_connected", "gauge", "1 while the watch of a resource is connected.")
    for informer in informers:
        resource = informer["resource"]
        restarts.add(informer["restarts"], resource=resource)
        relists.add(informer["relists"], resource=resource)
        connected.add(1 if informer["connected"] else 0, resource=resource)
    leader = Family("zerohop_leader", "gauge", "1 while this replica holds the leader Lease.")
    leader.add(1 if status.get("leader") else 0)
    return [restarts, relists, connected, leader, *_gateway_families(status.get("gateway") or {})]


def _gateway_families(gateway: dict[str, Any]) -> list[Family]:
    if gateway.get("source") != "pod-stats":
        return []
    readable = Family(
        "zerohop_gateway_pod_stats_readable",
        "gauge",
        "1 while zerohop can read a gateway pod's Envoy stats (routability is exact for it), 0 while it "
        "falls back to --propagation-delay for it, by pod and state (ok, unknown, unreachable, no-stats).",
    )
    for pod in gateway.get("pods", []):
        readable.add(1 if pod["stats"] == "ok" else 0, pod=pod["name"], state=pod["stats"])
    confirmations = Family(
        "zerohop_gateway_confirmations_total",
        "counter",
        "Cold starts confirmed routable, by how: stats (every gateway pod had it), fallback or no_pods (a delay).",
    )
    for how, count in sorted(gateway.get("confirmations", {}).items()):
        confirmations.add(count, how=how)
    errors = Family("zerohop_gateway_stats_errors_total", "counter", "Gateway pod stats fetches that failed.")
    errors.add(gateway.get("fetchErrors", 0))
    return [readable, confirmations, errors]


# --- Prometheus text format ------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}" if labels else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for labels, value in family.samples:
            lines.append(f"{family.name}{_labels(labels)} {_number(value)}")
        for labels, buckets, total, count in family.histograms:
            for bound, cumulative in buckets:
                lines.append(f"{family.name}_bucket{_labels((*labels, ('le', _number(bound))))} {cumulative}")
            lines.append(f"{family.name}_sum{_labels(labels)} {_number(total)}")
            lines.append(f"{family.name}_count{_labels(labels)} {count}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[str, float]:
    """Prometheus text back into {"name{labels}": value}: for tests and `zerohop status`."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
