"""What /metrics costs, written by hand (`metrics.render`) or by `prometheus_client` custom collectors.

`python -m bench.metricsrender` builds a synthetic registry of 1k and 10k targets, each with traffic, a
finished cold start and a hold histogram, and times, best of REPEATS:
- `collect`: reading every family from the live counters (the same for both ways of writing the text);
- `render`: zerohop's text writer over those families;
- `prometheus_client`: the same samples put into its metric families (`add_metric`, as a custom collector
  yields them) and written by `generate_latest`;
and, per warm request, what counting costs: zerohop's plain `int += 1` on the target's counters, against a
`prometheus_client` Counter child's `inc()` (what instrumenting the hot path with the library would cost;
custom collectors leave the hot path as it is). `prometheus_client` is not a zerohop dependency: install it
beside the venv (`pip install --target DIR prometheus_client`, then `PYTHONPATH=DIR:.`) to get its figures.
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable, Iterable
from typing import Any

from extproc.core.coldstart import HoldOutcome
from extproc.core.engine import Core
from extproc.core.httpso import TargetKey, parse
from extproc.core.provider import ReplicaCounts
from extproc.envoy.processor import ProcessorStats
from extproc.observability import metrics

REPEATS = 5
SIZES = (1_000, 10_000)
WARM_CALLS = 1_000_000


class _Status:
    def as_dict(self) -> dict[str, Any]:
        return {"provider": "bench"}


class _Replicas:
    def replicas(self, key: TargetKey) -> ReplicaCounts:
        return ReplicaCounts(desired=2, ready=2)

    def status(self) -> _Status:
        return _Status()


def registry(targets: int) -> Core:
    """`targets` targets, each with requests counted, one released hold and a finished cold start."""
    core = Core(hold_timeout=30, max_held_per_target=10, max_held_total=10)
    documents = (
        {
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": f"app-{index}", "namespace": "bench"},
            "spec": {
                "hosts": [f"app-{index}.bench.example"],
                "scaleTargetRef": {"name": f"app-{index}", "service": f"app-{index}", "port": 80},
                "scalingMetric": {"requestRate": {"targetValue": 10}},
            },
        }
        for index in range(targets)
    )
    core.apply_targets([parse(document) for document in documents], {})
    for index, state in enumerate(core.registry):
        state.traffic.requests = 1000 + index
        state.traffic.hold_ended(HoldOutcome.RELEASED, 0.3 + index % 7 / 10)
        state.gate.last_cold_duration = 0.4
    return core


def sources(core: Core) -> metrics.Sources:
    provider: Any = _Replicas()
    return metrics.Sources(core, provider, ProcessorStats(), {"GetMetrics": 10, "IsActive": 3})


def _best(run: Callable[[], object]) -> float:
    """Best of REPEATS runs, in milliseconds (after one untimed run)."""
    run()
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def prometheus_text(families: Iterable[metrics.Family]) -> bytes:
    """The same samples written by prometheus_client: a custom collector's families, then generate_latest."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

    def collected() -> list[Metric]:
        out: list[Metric] = []
        for family in families:
            if family.kind == "histogram":
                label_names = [name for name, _ in family.histograms[0][0]] if family.histograms else []
                histogram = HistogramMetricFamily(family.name, family.help, labels=label_names)
                for labels, buckets, total, _count in family.histograms:
                    bucket_values = [(metrics._number(bound), count) for bound, count in buckets]
                    histogram.add_metric([v for _, v in labels], bucket_values, total)
                out.append(histogram)
                continue
            names = [name for name, _ in family.samples[0][0]] if family.samples else []
            kind = CounterMetricFamily if family.kind == "counter" else GaugeMetricFamily
            metric = kind(family.name, family.help, labels=names)
            for labels, value in family.samples:
                metric.add_metric([v for _, v in labels], value)
            out.append(metric)
        return out

    class Collector:
        def collect(self) -> list[Metric]:
            return collected()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    return bytes(generate_latest(registry))


def warm_path() -> dict[str, float]:
    """Nanoseconds per warm request for counting it: plain ints, and a prometheus_client Counter child."""
    core = registry(1)
    traffic = next(iter(core.registry)).traffic

    def plain() -> None:
        traffic.requests += 1

    figures = {"plain_int_ns": min(timeit.repeat(plain, number=WARM_CALLS, repeat=REPEATS)) / WARM_CALLS * 1e9}
    try:
        from prometheus_client import CollectorRegistry, Counter
    except ImportError:
        return figures
    counter = Counter("bench_requests", "Requests.", ["namespace", "name"], registry=CollectorRegistry())
    child = counter.labels("bench", "app-0")
    figures["prometheus_child_inc_ns"] = (
        min(timeit.repeat(child.inc, number=WARM_CALLS, repeat=REPEATS)) / WARM_CALLS * 1e9
    )
    by_labels = lambda: counter.labels("bench", "app-0").inc()  # noqa: E731
    figures["prometheus_labels_inc_ns"] = (
        min(timeit.repeat(by_labels, number=WARM_CALLS // 10, repeat=REPEATS)) / (WARM_CALLS // 10) * 1e9
    )
    return figures


def measure() -> dict[str, Any]:
    result: dict[str, Any] = {"repeats": REPEATS, "warm": warm_path()}
    try:
        import prometheus_client  # noqa: F401

        have_client = True
    except ImportError:
        have_client = False
    for size in SIZES:
        src = sources(registry(size))
        families = metrics.collect(src)
        text = metrics.render(families)
        figures = {
            "lines": text.count("\n"),
            "bytes": len(text.encode()),
            "collect_ms": round(_best(lambda src=src: metrics.collect(src)), 2),
            "render_ms": round(_best(lambda families=families: metrics.render(families).encode()), 2),
        }
        if have_client:
            written = prometheus_text(families)
            figures["prometheus_client_ms"] = round(_best(lambda families=families: prometheus_text(families)), 2)
            figures["prometheus_client_bytes"] = len(written)
        result[f"targets_{size}"] = figures
    result["warm"] = {key: round(value, 1) for key, value in result["warm"].items()}
    return result


if __name__ == "__main__":
    print(json.dumps(measure(), indent=2))
