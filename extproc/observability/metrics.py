"""zerohop's metrics: every family is read from the live counters when scraped, never on the hot path.

One definition serves both exporters: OpenTelemetry's instruments (OTLP, see `telemetry`), named by its
conventions, and `/metrics` on the admin port (Prometheus text format 0.0.4), whose names `prometheus_name`
derives from them. Labels are bounded: a target's namespace and name, an outcome, a method; never a raw
host or path from a request (requests that match no target are one series).
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from extproc import __version__
from extproc.core.coldstart import HoldOutcome
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.core.provider import Provider
from extproc.core.registry import TargetState
from extproc.core.traffic import HOLD_BUCKETS
from extproc.core.warmpath import PathState
from extproc.envoy.gatewaystats import GatewayStatsStatus, PodStatsState
from extproc.envoy.processor import ProcessorStats
from extproc.keda.peers import PeersStatus
from extproc.observability.pacing import Pacer

Labels = tuple[tuple[str, str], ...]

HOLD_OUTCOMES = tuple(HoldOutcome)
_OUTCOME_LABELS: tuple[tuple[HoldOutcome, Labels], ...] = tuple(
    (outcome, (("outcome", outcome.value),)) for outcome in HOLD_OUTCOMES
)
_PATH_STATES: tuple[tuple[PathState, Labels], ...] = tuple((state, (("state", state.value),)) for state in PathState)
_DESIRED: Labels = (("state", "desired"),)
_READY: Labels = (("state", "ready"),)


_UNIT_SUFFIXES = {"": "", "s": "seconds", "By": "bytes"}


def prometheus_name(otel_name: str, unit: str, kind: str) -> str:
    """The Prometheus name of an OpenTelemetry metric, by OpenTelemetry's Prometheus compatibility rules:
    dots become underscores, the unit becomes a suffix (`s` adds `_seconds`; an annotation such as
    `{request}` adds nothing), and a counter ends in `_total`. A suffix the name already has is not repeated."""
    name = otel_name.replace(".", "_")
    if unit.startswith("{") and unit.endswith("}"):
        suffix = ""
    elif unit in _UNIT_SUFFIXES:
        suffix = _UNIT_SUFFIXES[unit]
    else:
        raise ValueError(f"{otel_name}: no Prometheus suffix known for unit {unit!r}")
    if suffix and not name.endswith(f"_{suffix}"):
        name = f"{name}_{suffix}"
    if kind == "counter" and not name.endswith("_total"):
        name += "_total"
    return name


@dataclass(slots=True)
class Family:
    """One metric: its OpenTelemetry name (dotted, `zerohop.` first) and unit (UCUM, or a `{thing}`
    annotation), type (counter, gauge or histogram), help, and its samples at collection time. `name` is its
    Prometheus name, derived by `prometheus_name`. Counters count things: integers. `additive` gauges mean
    something summed over zerohop replicas (OpenTelemetry: an UpDownCounter); `bounds` are a histogram's."""

    otel_name: str
    kind: str
    help: str
    unit: str = ""
    additive: bool = False
    bounds: tuple[float, ...] = ()
    samples: list[tuple[Labels, float]] = field(default_factory=list)
    # histograms: per label set, the cumulative buckets, sum and count
    histograms: list[tuple[Labels, list[tuple[float, int]], float, int]] = field(default_factory=list)
    # Set for a scrape: samples are written as text lines at once instead of kept as tuples. Strings are not
    # tracked by the garbage collector; 300k surviving label tuples made it run full collections of ~100 ms.
    lines: list[str] | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = prometheus_name(self.otel_name, self.unit, self.kind)

    def add(self, value: float, **labels: str) -> None:
        if self.lines is not None:
            self.lines.append(f"{self.name}{_labels(tuple(labels.items()))} {_number(value)}")
        else:
            self.samples.append((tuple(labels.items()), float(value)))

    def add_target(self, target: TargetLabels, value: float, extra: Labels = ()) -> None:
        """A sample of one target: its labels are escaped once per target, not once per sample."""
        if self.lines is None:
            self.samples.append(((*target.pairs, *extra), float(value)))
        elif extra:
            self.lines.append(f"{self.name}{{{target.text},{_label_text(extra)}}} {_number(value)}")
        else:
            self.lines.append(f"{self.name}{{{target.text}}} {_number(value)}")

    def add_target_histogram(
        self, target: TargetLabels, extra: Labels, buckets: list[tuple[float, int]], total: float, count: int
    ) -> None:
        if self.lines is None:
            self.histograms.append(((*target.pairs, *extra), buckets, total, count))
            return
        labels = f"{target.text},{_label_text(extra)}"
        prefix = f"{self.name}_bucket{{{labels},le="
        self.lines += [f'{prefix}"{_number(bound)}"}} {cumulative}' for bound, cumulative in buckets]
        self.lines.append(f"{self.name}_sum{{{labels}}} {_number(total)}")
        self.lines.append(f"{self.name}_count{{{labels}}} {count}")


class TargetLabels:
    """A target's `namespace` and `name` labels, as pairs and as escaped text (without braces)."""

    __slots__ = ("pairs", "text")

    def __init__(self, state: TargetState) -> None:
        self.pairs: Labels = (("namespace", state.key.namespace), ("name", state.key.name))
        self.text = _label_text(self.pairs)


@dataclass(slots=True)
class Sources:
    """Where the metrics are read from; only `core` is required."""

    core: Core
    provider: Provider | None = None
    processor: ProcessorStats | None = None
    scaler_calls: dict[str, int] | None = None
    peers: PeerSource | None = None


class PeerSource(Protocol):
    """Where the peer families come from (`keda.peers.Peers`)."""

    def status(self) -> PeersStatus: ...


class WatchStatus(Protocol):
    """What the Kubernetes families read of one watch (`InformerStatus` has it)."""

    @property
    def resource(self) -> str: ...
    @property
    def restarts(self) -> int: ...
    @property
    def relists(self) -> int: ...
    @property
    def connected(self) -> bool: ...


@runtime_checkable
class ClusterStatus(Protocol):
    """A provider status with watches, a leader and gateway stats (`KubernetesStatus`): the Kubernetes families
    come from it without metrics importing the Kubernetes provider (and its client)."""

    @property
    def leader(self) -> bool: ...
    @property
    def informers(self) -> Sequence[WatchStatus]: ...
    @property
    def gateway_stats(self) -> GatewayStatsStatus | None: ...


class StatsHealth(Protocol):
    """How reading the gateways' stats goes (`warmswitch.ScrapeHealth` has it)."""

    @property
    def scrapes(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def failing(self) -> bool: ...


class WarmPathSource(Protocol):
    """What the warm-path families read (`providers.local.warmswitch.WarmSwitch` has it)."""

    @property
    def health(self) -> StatsHealth: ...
    @property
    def gated_unexpectedly(self) -> int: ...
    def target_state(self, key: TargetKey) -> PathState: ...
    def gateway_503s(self, key: TargetKey) -> int: ...


@runtime_checkable
class WarmPathProvider(Protocol):
    """A provider that may run the warm path (`--warm-path open`): `warm_switch` is None when it does not."""

    @property
    def warm_switch(self) -> WarmPathSource | None: ...


@runtime_checkable
class ConfigStatus(Protocol):
    """A provider status that reloads a config file (`LocalStatus`): the config families come from it."""

    @property
    def reload_success(self) -> bool: ...
    @property
    def last_reload_success(self) -> float | None: ...
    @property
    def rejected_documents(self) -> int: ...


class _Collection:
    """The families being collected: the per-target ones filled target by target (so a scrape can pause
    between targets, see `collect_paced`), then the process-wide ones."""

    def __init__(self, sources: Sources, targets: int, max_targets: int | None) -> None:
        self.sources = sources
        self.now = time.monotonic()
        # Above the cap no per-target sample is written (their families stay, empty): series stay bounded.
        self.per_target = max_targets is None or targets <= max_targets
        self.dropped = 0 if self.per_target else targets
        self.routable = 0
        self.targets = targets
        self.requests = Family(
            "zerohop.requests", "counter", "Requests matched to a target (warm and cold).", "{request}"
        )
        self.cold = Family(
            "zerohop.cold_requests", "counter", "Requests that found their target cold, by outcome.", "{request}"
        )
        self.released_5xx = Family(
            "zerohop.released_errors", "counter", "Released cold requests whose response was a 5xx.", "{request}"
        )
        self.in_flight = Family(
            "zerohop.in_flight_requests",
            "gauge",
            "Requests in flight (held ones included).",
            "{request}",
            additive=True,
        )
        self.held = Family(
            "zerohop.held_requests",
            "gauge",
            "Requests held right now while their target starts.",
            "{request}",
            additive=True,
        )
        self.rate = Family(
            "zerohop.request_rate", "gauge", "Requests per granularity, averaged over the window.", "{request}"
        )
        self.routable_family = Family("zerohop.target.routable", "gauge", "1 when the gateway can route to the target.")
        self.replicas = Family(
            "zerohop.target.replicas", "gauge", "Replicas of the target, by state (desired, ready).", "{replica}"
        )
        self.cold_starts = Family(
            "zerohop.cold_starts", "counter", "Cold starts: first request held while cold.", "{cold_start}"
        )
        self.activations = Family(
            "zerohop.activations",
            "counter",
            "Wakes sent (KEDA push, scale patch): cold starts and re-wakes.",
            "{activation}",
        )
        self.last_cold = Family(
            "zerohop.last_cold_start.duration", "gauge", "How long the last cold start held requests.", "s"
        )
        self.hold = Family(
            "zerohop.hold.duration",
            "histogram",
            "How long cold requests were held, by outcome.",
            "s",
            bounds=HOLD_BUCKETS,
        )
        provider = sources.provider
        # --warm-path open: families only then, present from the first collection (OTLP instruments need that).
        self.warm = provider.warm_switch if isinstance(provider, WarmPathProvider) else None
        self.path_state = Family(
            "zerohop.warm_path.state",
            "gauge",
            "1 for the warm path's state the target is in, 0 for the others: gated (ext_proc on), opening, open "
            "(its virtual hosts skip ext_proc; counted from the gateway's stats), closing.",
        )
        self.gateway_503 = Family(
            "zerohop.warm_path.gateway_503",
            "counter",
            "Requests to an open target the gateway answered itself with 503 (no healthy upstream): its endpoints "
            "vanished while its warm path was open.",
            "{request}",
        )

    def per_target_families(self) -> list[Family]:
        families = [self.requests, self.cold, self.released_5xx, self.in_flight, self.held, self.rate]
        families += [self.routable_family, self.replicas, self.cold_starts, self.activations, self.last_cold]
        families.append(self.hold)
        if self.warm is not None:
            families += [self.path_state, self.gateway_503]
        return families

    def add(self, state: TargetState) -> None:
        gate = state.gate
        if gate.routable:
            self.routable += 1
        if not self.per_target:
            return
        target = TargetLabels(state)
        traffic = state.traffic
        snapshot = state.snapshot(self.now)
        self.requests.add_target(target, traffic.requests)
        outcomes = traffic.outcomes
        for outcome, label in _OUTCOME_LABELS:
            self.cold.add_target(target, outcomes.get(outcome, 0), label)
        self.released_5xx.add_target(target, traffic.released_5xx)
        self.in_flight.add_target(target, snapshot.in_flight)
        self.held.add_target(target, snapshot.held)
        self.rate.add_target(target, snapshot.rate)
        self.routable_family.add_target(target, 1 if gate.routable else 0)
        provider = self.sources.provider
        counts = provider.replicas(state.key) if provider is not None else None
        if counts is not None:
            self.replicas.add_target(target, counts.desired, _DESIRED)
            self.replicas.add_target(target, counts.ready, _READY)
        self.cold_starts.add_target(target, gate.cold_starts)
        self.activations.add_target(target, gate.wakes)
        if gate.last_cold_duration is not None:
            self.last_cold.add_target(target, gate.last_cold_duration)
        for outcome, histogram in sorted(traffic.holds.items()):
            label = (("outcome", outcome.value),)
            self.hold.add_target_histogram(target, label, histogram.cumulative(), histogram.sum, histogram.count)
        warm = self.warm
        if warm is not None:
            current = warm.target_state(state.key)
            for path_state, label in _PATH_STATES:
                self.path_state.add_target(target, 1 if path_state is current else 0, label)
            self.gateway_503.add_target(target, warm.gateway_503s(state.key))

    def families(self) -> list[Family]:
        families = self.per_target_families()
        targets = Family("zerohop.targets", "gauge", "Targets loaded, by state (routable, unroutable).", "{target}")
        targets.add(self.routable, state="routable")
        targets.add(self.targets - self.routable, state="unroutable")
        dropped = Family(
            "zerohop.metrics.dropped_targets",
            "gauge",
            "Targets whose per-target series are left out: more targets than --metrics-max-targets.",
            "{target}",
        )
        dropped.add(self.dropped)
        families += [targets, dropped]
        if self.warm is not None:
            families += _warm_path_families(self.warm)
        return families + _process_families(self.sources)


def collect(sources: Sources, max_targets: int | None = None) -> list[Family]:
    """Every family with its current samples; per-target samples only while there are at most
    `max_targets` targets (None: always)."""
    states = list(sources.core.registry)
    collection = _Collection(sources, len(states), max_targets)
    for state in states:
        collection.add(state)
    return collection.families()


async def collect_paced(sources: Sources, max_targets: int | None, pacer: Pacer) -> list[Family]:
    """`collect`, giving the event loop back between targets whenever the pacer's budget is spent; the
    per-target families come back with their samples already written as text (`Family.lines`)."""
    states = list(sources.core.registry)
    collection = _Collection(sources, len(states), max_targets)
    for family in collection.per_target_families():
        family.lines = []
    for state in states:
        collection.add(state)
        await pacer.pause()
    return collection.families()


def _process_families(sources: Sources) -> list[Family]:
    families = []
    info = Family("zerohop.info", "gauge", "zerohop's version.")
    info.add(1, version=__version__)
    families.append(info)

    if sources.processor is not None:
        stats = sources.processor
        unmatched = Family(
            "zerohop.unmatched_requests", "counter", "Requests whose host and cluster match no target.", "{request}"
        )
        unmatched.add(stats.unmatched)
        streams = Family("zerohop.ext_proc.streams", "counter", "ext_proc streams Envoy opened.", "{stream}")
        streams.add(stats.streams)
        errors = Family(
            "zerohop.ext_proc.errors", "counter", "ext_proc input zerohop could not use, by kind.", "{error}"
        )
        errors.add(stats.malformed, kind="malformed")
        errors.add(stats.errors, kind="error")
        not_routed = Family(
            "zerohop.released_not_routed",
            "counter",
            "Requests zerohop let through (released, or warm while a guessed release was watched) that the "
            "gateway answered itself with 503 no healthy upstream: it did not have the endpoint yet.",
            "{request}",
        )
        not_routed.add(stats.not_routed)
        families += [unmatched, streams, errors, not_routed]

    if sources.scaler_calls is not None:
        calls = Family(
            "zerohop.scaler.requests", "counter", "Calls to KEDA's external scaler API, by method.", "{call}"
        )
        for method, count in sorted(sources.scaler_calls.items()):
            calls.add(count, method=method)
        families.append(calls)

    if sources.peers is not None:
        families += _peer_families(sources.peers.status())
    status = sources.provider.status() if sources.provider is not None else None
    if isinstance(status, ClusterStatus):
        families += _kubernetes_families(status)
    if isinstance(status, ConfigStatus):
        families += _config_families(status)
    return families


def _warm_path_families(warm: WarmPathSource) -> list[Family]:
    health = warm.health
    scrapes = Family(
        "zerohop.warm_path.stats_scrapes",
        "counter",
        "Reads of the gateways' stats that counted the requests of targets not gated.",
        "{scrape}",
    )
    scrapes.add(health.scrapes)
    failures = Family(
        "zerohop.warm_path.stats_failures", "counter", "Reads of the gateways' stats that failed.", "{failure}"
    )
    failures.add(health.failures)
    failing = Family(
        "zerohop.warm_path.stats_failing",
        "gauge",
        "1 while the last read of the gateways' stats failed (open targets' counts wait for the next one).",
    )
    failing.add(1 if health.failing else 0)
    unexpected = Family(
        "zerohop.warm_path.gated_unexpectedly",
        "counter",
        "Times an open target lost its endpoints (a crash, a scale to 0 from elsewhere) and was gated at once.",
        "{event}",
    )
    unexpected.add(warm.gated_unexpectedly)
    return [scrapes, failures, failing, unexpected]


def _config_families(status: ConfigStatus) -> list[Family]:
    success = Family(
        "zerohop.config.reload_success",
        "gauge",
        "1 when the last config (re)load applied the file as written; 0 when it failed or rejected a document.",
    )
    success.add(1 if status.reload_success else 0)
    families = [success]
    # Always declared (OTLP instruments are created from the first collection), sampled once there is one.
    last = Family(
        "zerohop.config.last_reload_success_timestamp",
        "gauge",
        "When the config file was last applied as written (Unix time).",
        "s",
    )
    if status.last_reload_success is not None:
        last.add(status.last_reload_success)
    families.append(last)
    rejected = Family(
        "zerohop.config.rejected_documents",
        "gauge",
        "Documents of the config file left out or kept at their last good version.",
        "{document}",
    )
    rejected.add(status.rejected_documents)
    families.append(rejected)
    return families


def _peer_families(status: PeersStatus) -> list[Family]:
    known = Family("zerohop.peers", "gauge", "Other zerohop replicas, by state (known, answered last fetch).", "{peer}")
    known.add(len(status.peers), state="known")
    known.add(status.answered, state="answered")
    errors = Family("zerohop.peer.fetch_errors", "counter", "Peer count fetches that failed.", "{error}")
    errors.add(status.fetch_errors)
    age = Family("zerohop.peer.last_answer_age", "gauge", "Seconds since each peer last answered.", "s")
    for peer in status.peers:
        if peer.last_answer_age is not None:
            age.add(peer.last_answer_age, peer=peer.address)
    return [known, errors, age]


def _kubernetes_families(status: ClusterStatus) -> list[Family]:
    if not status.informers:
        return []
    restarts = Family(
        "zerohop.kubernetes.watch_restarts",
        "counter",
        "Watches that failed and were restarted, by resource.",
        "{restart}",
    )
    relists = Family("zerohop.kubernetes.relists", "counter", "Full lists after a 410, by resource.", "{relist}")
    connected = Family("zerohop.kubernetes.connected", "gauge", "1 while the watch of a resource is connected.")
    for informer in status.informers:
        resource = informer.resource
        restarts.add(informer.restarts, resource=resource)
        relists.add(informer.relists, resource=resource)
        connected.add(1 if informer.connected else 0, resource=resource)
    leader = Family("zerohop.leader", "gauge", "1 while this replica holds the leader Lease.")
    leader.add(1 if status.leader else 0)
    return [restarts, relists, connected, leader, *_gateway_families(status.gateway_stats)]


def _gateway_families(gateway: GatewayStatsStatus | None) -> list[Family]:
    if gateway is None:
        return []
    readable = Family(
        "zerohop.gateway.pod_stats_readable",
        "gauge",
        "1 while zerohop can read a gateway pod's Envoy stats (routability is exact for it), 0 while it "
        "falls back to --propagation-delay for it, by pod and state (ok, unknown, unreachable, no-stats).",
    )
    for pod in gateway.pods:
        readable.add(1 if pod.stats is PodStatsState.OK else 0, pod=pod.name, state=pod.stats.value)
    confirmations = Family(
        "zerohop.gateway.confirmations",
        "counter",
        "Cold starts confirmed routable, by how: stats (every gateway pod had it), fallback or no_pods (a delay).",
        "{confirmation}",
    )
    for how, count in sorted((outcome.value, count) for outcome, count in gateway.confirmations):
        confirmations.add(count, how=how)
    errors = Family("zerohop.gateway.stats_errors", "counter", "Gateway pod stats fetches that failed.", "{error}")
    errors.add(gateway.fetch_errors)
    return [readable, confirmations, errors]


# --- Prometheus text format ------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: Labels) -> str:
    return ",".join(f'{k}="{_escape(v)}"' for k, v in labels)


def _labels(labels: Labels) -> str:
    return "{" + _label_text(labels) + "}" if labels else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(families: Iterable[Family]) -> str:
    return "".join(render_chunks(families))


# Lines per chunk of `render_chunks`: about 1 ms of writing, so a paced scrape pauses at a fine grain.
CHUNK_LINES = 256


def render_chunks(families: Iterable[Family], lines_per_chunk: int = CHUNK_LINES) -> Iterator[str]:
    """The text format, in chunks of about `lines_per_chunk` lines (a family's samples stay in order).
    Families written as text (`Family.lines`, a scrape's) are emptied as they are written."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        if family.lines:
            # Consumed from the end a chunk at a time, so the strings are freed chunk by chunk: freeing a
            # scrape's 300k lines at once held the loop ~80 ms.
            pending, family.lines = family.lines, []
            pending.reverse()
            while pending:
                take = min(lines_per_chunk - len(lines), len(pending))
                piece = pending[-take:]
                del pending[-take:]
                piece.reverse()
                lines += piece
                if len(lines) >= lines_per_chunk:
                    yield "\n".join(lines) + "\n"
                    lines.clear()
        for labels, value in family.samples:
            lines.append(f"{family.name}{_labels(labels)} {_number(value)}")
            if len(lines) >= lines_per_chunk:
                yield "\n".join(lines) + "\n"
                lines.clear()
        for labels, buckets, total, count in family.histograms:
            for bound, cumulative in buckets:
                lines.append(f"{family.name}_bucket{_labels((*labels, ('le', _number(bound))))} {cumulative}")
            lines.append(f"{family.name}_sum{_labels(labels)} {_number(total)}")
            lines.append(f"{family.name}_count{_labels(labels)} {count}")
            if len(lines) >= lines_per_chunk:
                yield "\n".join(lines) + "\n"
                lines.clear()
    if lines:
        yield "\n".join(lines) + "\n"


async def scrape(sources: Sources, max_targets: int | None, pacer: Pacer | None = None) -> AsyncIterator[bytes]:
    """/metrics as encoded chunks, collected and written in slices that each hold the loop about the
    pacer's budget: at 10k targets a scrape is seconds of work, and the loop must keep answering Envoy."""
    pacer = pacer or Pacer()
    families = await collect_paced(sources, max_targets, pacer)
    for chunk in render_chunks(families):
        yield chunk.encode()
        await pacer.pause()
