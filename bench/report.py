"""docs/performance.md from a run's JSON: medians across rounds, ratios against the plain gateway, added
latency, CPU per request, cold-start overhead, the checks that each number measured what it claims, and
the team's targets met or not. Everything is derived from the JSON, so the report can be regenerated."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from typing import Any

Run = dict[str, Any]

TARGET_ADDED_P50_MS = 0.7
EXT_PROC = ("B", "D", "E", "F")  # the setups whose every request asks a Python ext_proc server
ZEROHOP_CPU = (*EXT_PROC, "G")  # ... and G's zerohop, which its warm requests skip
# Issue 9's targets for the warm path open (G), in the same run: throughput against A, added p50 against A
# (paired), zerohop's CPU per warm request against B's.
TARGET_OPEN_THROUGHPUT = 0.95
TARGET_OPEN_ADDED_P50_MS = 0.05
TARGET_OPEN_CPU_SHARE = 0.02
TARGET_COLD_OVERHEAD_P50_MS = 20.0


def percentile(values: Iterable[float], fraction: float) -> float:
    """Nearest-rank percentile (p90 of 20 samples is the 18th smallest)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _median(values: Iterable[float]) -> float:
    found = [value for value in values if not math.isnan(value)]
    return statistics.median(found) if found else math.nan


def _fmt(value: float, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}{suffix}"


def _signed(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.{digits}f}"


def _ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


class Runs:
    """The measurements of one document, indexed by (setup, kind, round)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.attempts: list[Run] = document.get("runs", [])
        # Of repeated measurements (see runner.measure_until_clean) only the kept attempt counts.
        self.by_key: dict[tuple[str, str, int], Run] = {
            (run["setup"], run["kind"], run["round"]): run for run in self.attempts if run.get("kept", True)
        }
        self.setups = [key for key in document["setups"] if any(k[0] == key for k in self.by_key)]
        self.rounds = sorted({k[2] for k in self.by_key})

    def values(self, setup: str, kind: str, get: Callable[[Run], float]) -> list[float]:
        found = []
        for round_ in self.rounds:
            run = self.by_key.get((setup, kind, round_))
            if run is not None:
                found.append(get(run))
        return found

    def median(self, setup: str, kind: str, get: Callable[[Run], float]) -> float:
        return _median(self.values(setup, kind, get))

    def paired_values(
        self, setup: str, base: str, kind: str, get: Callable[[Run], float], combine: Callable[[float, float], float]
    ) -> list[float]:
        """combine(setup's value, base's value) of each round that has both."""
        found = []
        for round_ in self.rounds:
            run, other = self.by_key.get((setup, kind, round_)), self.by_key.get((base, kind, round_))
            if run is not None and other is not None:
                found.append(combine(get(run), get(other)))
        return found

    def paired(
        self, setup: str, base: str, kind: str, get: Callable[[Run], float], combine: Callable[[float, float], float]
    ) -> float:
        """Median over rounds of combine(setup's value, base's value) in the same round."""
        return _median(self.paired_values(setup, base, kind, get, combine))


def _rps(run: Run) -> float:
    return float(run["load"]["rps"])


def _p50(run: Run) -> float:
    return float(run["load"]["p50_ms"])


def _p99(run: Run) -> float:
    return float(run["load"]["p99_ms"])


def _cpu(role: str) -> Callable[[Run], float]:
    def get(run: Run) -> float:
        return float(run["cpu_us_per_request"].get(role, math.nan))

    return get


def _divide(a: float, b: float) -> float:
    return a / b if b else math.nan


def _subtract(a: float, b: float) -> float:
    return a - b


def _title(document: dict[str, Any], key: str) -> str:
    return f"{key}. {document['setups'][key]['title']}"


def render(document: dict[str, Any], source: str) -> str:
    runs = Runs(document)
    sections = [
        _header(document, source),
        _targets(runs),
        _how_to_read(document),
        _saturation(runs),
        _fixed_rate(runs),
        _paired(document, runs),
        _cpu_table(runs),
        _cpu_breakdown(runs),
        _warm_open(runs),
        _hotpath(document, runs),
        _cold(document),
        _verification(runs),
        _setup(document, runs),
    ]
    return "\n".join(section for section in sections if section).rstrip() + "\n"


def _header(document: dict[str, Any], source: str) -> str:
    options = document["options"]
    rounds = options["rounds"] if document.get("runs") else 0
    link = f"[`{source}`]({source if source.startswith('/') else '../' + source})"
    merged = _merged_note(document)
    return f"""# Performance

How much does zerohop cost a request that goes through the gateway while its target is warm, compared with
no ext_proc at all, with an extra proxy hop, and with the simplest ext_proc servers one could write in
Python? And how long after the gateway can route to a new replica does a held request get its answer?

Generated by `{document["command"]}` on {document["started"][:10]}: {rounds} interleaved round(s) of
every setup, medians across rounds. The raw per-round numbers are in {link}.
Regenerate this page from that file with `python -m bench --report-only {source}`; do not edit it by hand.{merged}
"""


def _merged_note(document: dict[str, Any]) -> str:
    runs = document.get("partial_runs", [])
    if not runs:
        return ""
    parts = [f"`{run['command']}` on {run['started'][:10]} ({', '.join(run['sections'])})" for run in runs]
    return (
        "\nSome sections were measured later by partial runs and merged into that file: "
        + "; ".join(parts)
        + ". Each says so where it appears."
    )


def _how_to_read(document: dict[str, Any]) -> str:
    load = document.get("load", {})
    duration = document["options"]["duration"]
    wrk = f"wrk -t{load.get('threads', 1)} -c{load.get('connections', 32)} -d{duration}s"
    rate = load.get("rate", 200)
    interval = 1000 / rate
    pinning = document.get("pinning", {}).get("description", "nothing pinned")
    setups = "\n".join(
        f"- **{_title(document, key)}**: {info['description']}" for key, info in document["setups"].items()
    )
    body, cpus = document["app_body_bytes"], document["machine"]["nproc"]
    return f"""## How to read this

{setups}

- Every setup runs the same real Envoy binary, the gateway with `--concurrency 1`, and sends to an
  upstream of its own with the same configuration: a separate Envoy process answering `direct_response` 200
  with a {body}-byte body, so differences come from the gateway path. Each setup has its own upstream so that
  in the paired load every upstream receives the same request rate: an app shared by six setups wakes six
  times as often as one app alone and answers it about 0.1 ms faster at p50 (measured between two identical
  plain gateways, one in front of a shared app and one in front of its own).
  Load generator, Envoys and Python share one machine ({cpus} CPUs); absolute
  numbers say little about other machines, **ratios between setups** are the point.
- Rounds are interleaved and rotated (A B C D E, then B C D E A, ...) so slow drifts of the machine hit
  every setup alike and none always runs at the same point of a round.
  Each cell is the median across rounds; ratios and differences are computed per round (each setup against
  A in the same round) and then the median is taken.
- **Saturation**: `{wrk}`, as many requests as the setup can answer; p50/p99 are wrk's latencies
  under that load, mostly queueing. Pinning: {pinning}.
- **Fixed rate**: one connection, one request every {interval:g} ms ({rate} req/s) for {duration}s, paced by
  a wrk Lua script: the latency a request sees on an idle gateway. "Added" is the setup's latency minus the
  plain gateway's (A) in the same round. (`hey -q` was not used: it reports latencies in 0.1 ms steps, too
  coarse here; wrk records microseconds.)
- **CPU µs/request**: the process's utime+stime (from `/proc/PID/stat`, all threads) over the run, divided
  by the requests wrk completed. Its resolution is one clock tick (10 ms) per run; idle background work
  (zerohop's autoscaler polls its scaler API every second) is included, and listed separately as "idle CPU"
  (measured from `/proc/PID/task/*/schedstat`, in nanoseconds, with no traffic at all). At the fixed low
  rate every request wakes idle processes, so CPU per request there is much higher than at saturation for
  every process, Envoy included; compare setups within a column, not across columns.
- **Checks**: after every run the bench reads the gateway's ext_proc counters (every request got an ext_proc
  stream; none failed open — the filter has `failure_mode_allow: true`, so a broken ext_proc server would
  otherwise look *fast*) and, for B, zerohop's `/status` (the target's request count grew by the requests
  sent; no cold or unmatched request). For G: no ext_proc stream at all (the warm path stayed open), and
  zerohop's count, read from `/status` once two reads of the gateway's stats have finished after the load,
  grew by the requests sent; no failed stats read.
"""


def _saturation(runs: Runs) -> str:
    if not runs.setups:
        return ""
    lines = [
        "## Throughput at saturation",
        "",
        "| setup | req/s | vs A | p50 ms | p99 ms | ext_proc server CPU µs/req | gateway Envoy CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in runs.setups:
        ratio = runs.paired(key, "A", "saturation", _rps, _divide)
        lines.append(
            f"| {_title(runs.document, key)} | {_fmt(runs.median(key, 'saturation', _rps), 0)} | {_ratio(ratio)} "
            f"| {_fmt(runs.median(key, 'saturation', _p50), 3)} | {_fmt(runs.median(key, 'saturation', _p99), 3)} "
            f"| {_fmt(runs.median(key, 'saturation', _cpu('extproc')), 1) if key in ZEROHOP_CPU else '—'} "
            f"| {_fmt(runs.median(key, 'saturation', _cpu('gateway')), 1)} |"
        )
    lines += ["", "req/s per round:", "", "| setup | " + " | ".join(f"round {r}" for r in runs.rounds) + " |"]
    lines.append("|---|" + "---:|" * len(runs.rounds))
    for key in runs.setups:
        lines.append(f"| {key} | " + " | ".join(_fmt(v, 0) for v in runs.values(key, "saturation", _rps)) + " |")
    return "\n".join(lines) + "\n"


def _fixed_rate(runs: Runs) -> str:
    if not runs.setups:
        return ""
    lines = [
        "## Added latency at a fixed low rate",
        "",
        "| setup | p50 ms | p99 ms | added p50 vs A (ms) | added p99 vs A (ms) | ext_proc server CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key in runs.setups:
        added50 = runs.paired(key, "A", "fixed_rate", _p50, _subtract)
        added99 = runs.paired(key, "A", "fixed_rate", _p99, _subtract)
        lines.append(
            f"| {_title(runs.document, key)} | {_fmt(runs.median(key, 'fixed_rate', _p50), 3)} "
            f"| {_fmt(runs.median(key, 'fixed_rate', _p99), 3)} | {_signed(added50, 3)} | {_signed(added99, 3)} "
            f"| {_fmt(runs.median(key, 'fixed_rate', _cpu('extproc')), 1) if key in ZEROHOP_CPU else '—'} |"
        )
    lines += ["", "p50 ms per round:", "", "| setup | " + " | ".join(f"round {r}" for r in runs.rounds) + " |"]
    lines.append("|---|" + "---:|" * len(runs.rounds))
    for key in runs.setups:
        lines.append(f"| {key} | " + " | ".join(_fmt(v, 3) for v in runs.values(key, "fixed_rate", _p50)) + " |")
    return "\n".join(lines) + "\n"


def _paired_rounds(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document.get("paired", {}).get("rounds", []))


def _paired_pooled(document: dict[str, Any], key: str, fraction: float) -> float:
    """Percentile in ms of every paired sample of `key`, over all rounds."""
    values = [v for result in _paired_rounds(document) for v in result["latencies_us"].get(key, [])]
    return percentile(values, fraction) / 1000 if values else math.nan


def _paired_added(document: dict[str, Any], key: str, base: str) -> tuple[float, list[float]]:
    """p50 of `key` less p50 of `base` over all paired samples, and the same per round (ms)."""
    per_round = []
    for result in _paired_rounds(document):
        a, b = result["latencies_us"].get(key), result["latencies_us"].get(base)
        if a and b:
            per_round.append((statistics.median(a) - statistics.median(b)) / 1000)
    pooled = _paired_pooled(document, key, 0.5) - _paired_pooled(document, base, 0.5)
    return pooled, per_round


def _paired(document: dict[str, Any], runs: Runs) -> str:
    rounds = _paired_rounds(document)
    if not rounds or "A" not in rounds[0]["latencies_us"]:
        return ""
    keys = list(rounds[0]["latencies_us"])
    rate = document["paired"]["rate"]
    samples = sum(len(result["latencies_us"]["A"]) for result in rounds)
    lines = [
        "## Added latency, paired: every setup in the same seconds",
        "",
        f"{len(rounds)} round(s) of {document['options']['duration']}s; {rate} times a second, one `GET /` to "
        f"every setup in turn (a new random order each time, one request at a time, a keep-alive connection "
        f"per setup), {samples:,} requests per setup in all (`python -m bench.paired`, pinned like wrk). A "
        "slow moment of the machine now hits every setup alike, which the one-setup-at-a-time wrk runs above "
        "cannot offer; the client's own overhead (Python, uvloop) is in every sample and cancels out of the "
        "differences. Percentiles over all samples; the range is that of the per-round p50 differences.",
        "",
        "| setup | p50 ms | p90 ms | p99 ms | added p50 vs A (ms) | range across rounds |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key in keys:
        added, per_round = _paired_added(document, key, "A")
        spread = _spread(per_round, lambda value: _signed(value, 3)) if key != "A" else ""
        lines.append(
            f"| {_title(document, key)} | {_fmt(_paired_pooled(document, key, 0.5), 3)} "
            f"| {_fmt(_paired_pooled(document, key, 0.9), 3)} | {_fmt(_paired_pooled(document, key, 0.99), 3)} "
            f"| {_signed(added, 3)} | {spread} |"
        )
    comparisons = [
        (a, b, label)
        for a, b, label in (
            ("B", "E", "zerohop against the bare server E"),
            ("B", "D", "zerohop against the bare server D"),
            ("E", "F", "zerohop's gRPC settings, on the bare server"),
        )
        if a in keys and b in keys
    ]
    if comparisons:
        lines.append("")
        for a, b, label in comparisons:
            added, per_round = _paired_added(document, a, b)
            spread = _spread(per_round, lambda value: _signed(value, 3))
            lines.append(f"{a} - {b}, {label}: {_signed(added, 3)} ms p50{f' ({spread})' if spread else ''}.")
    failed = [result for result in rounds if not result["check"]["ok"]]
    lines += [
        "",
        f"Checks: every response 200, every ext_proc request through its server (no fail-open, timeout or "
        f"failed stream), zerohop counted every {' and '.join(k for k in ('B', 'G') if k in keys)} request"
        f"{', no G request asked zerohop' if 'G' in keys else ''}: "
        f"{len(rounds) - len(failed)} of {len(rounds)} rounds.",
    ]
    for result in failed:
        lines.append(f"- round {result['round']}: {'; '.join(result['check']['problems'])}")
    return "\n".join(lines) + "\n"


def _idle(document: dict[str, Any], key: str) -> float:
    return float(document.get("idle_cpu_ms_per_s", {}).get(key, {}).get("extproc", math.nan))


def _less_idle(document: dict[str, Any], key: str) -> Callable[[Run], float]:
    """CPU µs/request of the ext_proc server less the background work (timers, zerohop's autoscaler) that
    the run's duration would have cost without any traffic."""
    idle = _idle(document, key)
    return lambda run: _cpu("extproc")(run) - idle * 1000 / max(_rps(run), 1e-9)


def _net_ratio(runs: Runs, a: str, b: str) -> float:
    """Per-round median of a's / b's fixed-rate CPU per request, each less its idle background."""

    def get(run: Run) -> float:
        return _less_idle(runs.document, run["setup"])(run)

    return runs.paired(a, b, "fixed_rate", get, _divide)


def _normalised(run: Run) -> float:
    """The ext_proc server's CPU per request relative to the app Envoy's in the same run."""
    return _divide(_cpu("extproc")(run), _cpu("app")(run))


def _cpu_table(runs: Runs) -> str:
    servers = [key for key in ZEROHOP_CPU if key in runs.setups]
    if not servers:
        return ""
    document = runs.document
    lines = [
        "## CPU per request of the Python ext_proc servers",
        "",
        "| server | saturation µs/req | fixed rate µs/req | fixed rate less idle µs/req | idle CPU ms/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in servers:
        lines.append(
            f"| {_title(document, key)} | {_fmt(runs.median(key, 'saturation', _cpu('extproc')), 1)} "
            f"| {_fmt(runs.median(key, 'fixed_rate', _cpu('extproc')), 1)} "
            f"| {_fmt(runs.median(key, 'fixed_rate', _less_idle(document, key)), 1)} "
            f"| {_fmt(_idle(document, key), 2)} |"
        )
    pairs = [(a, b) for a, b in (("B", "E"), ("B", "D"), ("E", "D"), ("E", "F")) if a in servers and b in servers]
    if pairs:
        lines += [
            "",
            "| ratio (per round, median) | saturation | fixed rate | fixed rate less idle |",
            "|---|---:|---:|---:|",
        ]
        for a, b in pairs:
            sat = runs.paired(a, b, "saturation", _cpu("extproc"), _divide)
            fixed = runs.paired(a, b, "fixed_rate", _cpu("extproc"), _divide)
            net = _net_ratio(runs, a, b)
            lines.append(f"| {a} / {b} CPU per request | {_ratio(sat)} | {_ratio(fixed)} | {_ratio(net)} |")
        if ("B", "E") in pairs:
            sat = runs.paired("B", "E", "saturation", _cpu("app"), _divide)
            fixed = runs.paired("B", "E", "fixed_rate", _cpu("app"), _divide)
            lines.append(f"| control: the app Envoy's CPU per request, B / E | {_ratio(sat)} | {_ratio(fixed)} | |")
            sat = runs.paired("B", "E", "saturation", _normalised, _divide)
            fixed = runs.paired("B", "E", "fixed_rate", _normalised, _divide)
            lines.append(f"| B / E CPU per request, divided by the control | {_ratio(sat)} | {_ratio(fixed)} | |")
    lines += [
        "",
        '"Less idle" subtracts what the process burns per second with no traffic at all (measured once, before '
        "the rounds) for the run's duration. For zerohop that is mostly its built-in autoscaler, which calls "
        "zerohop's scaler API over gRPC every second (both ends in the same process); in a cluster KEDA makes "
        "those calls instead, every 30 s by default.",
        "",
        "The control row is the app Envoy, which does exactly the same work per request in every setup: when it "
        "too costs more per request in B than in E, the machine as a whole ran differently (fewer requests per "
        "wakeup at a lower throughput, other load, where the scheduler put the threads), and that part of the "
        "B / E ratio is not zerohop's code. The last row divides it out, per round; it assumes the ext_proc "
        "server is affected like the app Envoy, and is an estimate, not a measurement. The targets below use "
        "the plain ratios.",
    ]
    return "\n".join(lines) + "\n"


def _cpu_breakdown(runs: Runs) -> str:
    if not runs.setups:
        return ""
    roles = [("gateway", "gateway Envoy"), ("interceptor", "interceptor Envoy"), ("extproc", "ext_proc server")]
    roles += [("app", "app Envoy"), ("wrk", "wrk")]

    def total(run: Run) -> float:
        return float(sum(run["cpu_us_per_request"].values()))

    lines = [
        "## Where the CPU goes at saturation",
        "",
        "CPU µs per request of every process on the request's path (medians across rounds):",
        "",
        "| setup | " + " | ".join(label for _, label in roles) + " | total |",
        "|---|" + "---:|" * (len(roles) + 1),
    ]
    for key in runs.setups:
        cells = []
        for role, _label in roles:
            value = runs.median(key, "saturation", _cpu(role))
            cells.append("—" if math.isnan(value) else _fmt(value, 0))
        lines.append(
            f"| {_title(runs.document, key)} | "
            + " | ".join(cells)
            + f" | {_fmt(runs.median(key, 'saturation', total), 0)} |"
        )
    return "\n".join(lines) + "\n"


def _summary(values: list[float]) -> str:
    """`p50 | p90 | max | samples` cells: the median, the nearest-rank p90, the largest."""
    return f"{_fmt(_median(values), 1)} | {_fmt(percentile(values, 0.9), 1)} | {_fmt(max(values, default=math.nan), 1)}"


ADMIN_ROW = "cold start: admin API"
STATS_ROW = "cold start: gateway pod stats"


def _cold_rows(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The overhead rows (the headline first, then the upper bounds) and the reference rows of each path run."""
    admin, stats = document.get("cold_start"), document.get("cold_start_stats")
    headline: list[str] = []
    upper: list[str] = []
    reference: list[str] = []
    for label, cold, loaded, pushed, boot in (
        (
            ADMIN_ROW,
            admin,
            "the gateway's admin API (`/clusters`) first shows the replica",
            ("overhead_upper_ms", "zerohop's EDS file holds the replica (seen by the bench)"),
            "the app's boot",
        ),
        (
            STATS_ROW,
            stats,
            "the gateway pod's stats first show `membership_healthy` 1",
            ("overhead_push_ms", "istiod's push: the pod's EDS file written"),
            "the replica's readiness delay",
        ),
    ):
        if not cold:
            continue
        samples = cold["samples"]
        n = len(samples)
        headline.append(f"| **{label}** | {loaded} | {_summary([s['overhead_ms'] for s in samples])} | {n} |")
        key, text = pushed
        upper.append(f"| {label}, upper bound | {text} | {_summary([s[key] for s in samples])} | {n} |")
        reference += [
            f"| whole cold request, {label.removeprefix('cold start: ')} (includes {boot}) "
            f"| {_summary([s['total_ms'] for s in samples])} |",
            f"| a warm request to the same replica right after, {label.removeprefix('cold start: ')} "
            f"| {_summary([statistics.median(s['warm_ms']) for s in samples])} |",
        ]
    return headline + upper, reference


def _machine_before(cold: dict[str, Any]) -> str:
    before = cold.get("machine_before")
    if not before:
        return ""
    waited = f" after waiting {before['quiet_wait_s']:g} s for quiet" if before["quiet_wait_s"] >= 0.1 else ""
    return (
        f" Just before this path{waited}: all CPUs {before['busy_percent']:g}% busy, load average "
        f"{before['load_average']}; {cold['seconds']:g} s for the whole path, its processes' start and stop included."
    )


def _cold_admin_text(cold: dict[str, Any]) -> str:
    samples = cold["samples"]
    flags = " ".join(cold["zerohop_flags"])
    return (
        f"**Admin API** (plain Envoy, the local provider): zerohop serves one target at 0 replicas (max 1, "
        f"concurrency metric, `scaledownPeriod: 1`), run as `zerohop serve ... --envoy-admin <gateway admin> "
        f"{flags}`; its replica is `python -m extproc.dev.demoapp --startup-delay {cold['app_startup_delay']:g}`. The "
        "gateway is `local_bootstrap()` reading zerohop's xDS files. For each sample the bench waits until the "
        "target is cold everywhere (zerohop not routable with 0 replicas, the gateway with no endpoint, the "
        "replica's port free), sends one request, and polls the gateway's `/clusters` back to back from the "
        "moment zerohop's EDS file holds the new endpoint; the overhead runs from the answer of the first poll "
        "that shows it to the response. It includes zerohop noticing the load (its own admin polls), the "
        "release, Envoy's first request to the new replica on a new connection, the demo app's answer (the warm "
        "reference is that part on a reused connection) and the response-header round trip.\n\n"
        f"Every sample: HTTP {', '.join(map(str, sorted({s['status'] for s in samples})))}, "
        f"`x-zerohop-cold-start: true` on {sum(1 for s in samples if s['cold_header'] == 'true')}/{len(samples)}, "
        f"wakes per sample {', '.join(map(str, sorted({s['wakes'] for s in samples})))}; zerohop's counters at "
        f"the end: {_counters(cold['zerohop_ext_proc'])}.{_machine_before(cold)}\n"
    )


def _cold_stats_text(cold: dict[str, Any]) -> str:
    samples = cold["samples"]
    flags = " ".join(cold["zerohop_flags"])
    first_poll = sum(1 for s in samples if s["polls"] == 1)
    confirmations = cold["gateway"]["confirmations"]
    pods = ", ".join(f"{pod['name']} {pod['stats']}" for pod in cold["gateway"]["pods"]) or "none"
    return (
        "**Gateway pod stats** (Istio, the Kubernetes provider), end to end: a real `zerohop serve --provider "
        f"kubernetes ... --gateway-stats-port <pod stats port> {flags}` against the tests' Kubernetes API "
        "emulator (`tests.kubeemu`, in the bench process) with its fake kubelet, whose replica of the "
        f"Deployment turns ready {cold['ready_delay']:g} s after zerohop's scale-on-wake patch (its address is "
        "a demo app process that runs throughout). The gateway is one real Envoy configured as Istio configures "
        "a gateway pod, built by `tests.istio_gateway.istio_gateway_pod_bootstrap` (Istio's stats tags and "
        "inclusion list plus the shipped `proxyStatsMatcher`, the stats listener on the pod IP, zerohop's "
        "EnvoyFilter, an EDS cluster read from a file) and run with `--concurrency 1`; a Ready Pod object with "
        "its IP is how zerohop finds it. The bench plays istiod: "
        f"{cold['istiod_lag'] * 1000:.0f} ms (istiod's default debounce) after the Service's ready endpoints "
        "change it writes them into the pod's EDS file, so zerohop, which watches the same EndpointSlices, is "
        "already polling the pod's stats when the push lands. For each sample the bench scales the Deployment to "
        "0 (KEDA's part), waits until it is cold everywhere (zerohop not routable with 0 replicas, no ready "
        "endpoint, an empty push, the pod's `membership_healthy` 0), sends one request through the pod, and "
        "polls the pod's stats back to back from the push; the headline runs from the answer of the first poll "
        "showing `membership_healthy` 1 to the response, the upper bound from the push itself. The first poll, "
        f"sent at the push, already showed it in {first_poll} of {len(samples)} samples (median "
        f"{_fmt(_median(s['load_ms'] for s in samples), 1)} ms after the push, one stats round trip with zerohop "
        "polling the same pod every 5 ms). Both include zerohop seeing the pod's stats, the release, Envoy's "
        "first request to the replica on a new connection, the app's answer and the response-header round "
        "trip.\n\n"
        f"Every sample: HTTP {', '.join(map(str, sorted({s['status'] for s in samples})))}, "
        f"`x-zerohop-cold-start: true` on {sum(1 for s in samples if s['cold_header'] == 'true')}/{len(samples)}, "
        f"wakes per sample {', '.join(map(str, sorted({s['wakes'] for s in samples})))}; zerohop's releases "
        f"confirmed by the pod's stats {confirmations.get('stats', 0)}, after the fallback delay "
        f"{confirmations.get('fallback', 0)}, with no pod known {confirmations.get('no_pods', 0)}; the pod's "
        f"stats as zerohop saw them: {pods}; zerohop's counters at the end: {_counters(cold['zerohop_ext_proc'])}."
        f"{_machine_before(cold)}\n"
    )


def _partial_note(document: dict[str, Any], sections: set[str]) -> str:
    """Where sections measured by a later partial run merged into this document came from."""
    notes = []
    full = document["machine"]
    for run in document.get("partial_runs", []):
        if sections & set(run["sections"]):
            machine = run["machine"]
            where = f"{machine['nproc']} CPUs, {machine['cpu_model']}, Linux {machine['kernel']}"
            same = (machine["nproc"], machine["cpu_model"], machine["kernel"]) == (
                full["nproc"],
                full["cpu_model"],
                full["kernel"],
            )
            notes.append(
                f"measured by `{run['command']}` on {run['started'][:10]} at {run['started'][11:16]} UTC "
                f"({run['seconds']:g} s in all, on {where}"
                f"{'' if same else ', not the machine of the rest of this page'}) and merged into this run's "
                "JSON, which keeps the figures they replaced under `partial_runs`"
            )
    return "; ".join(notes)


def _cold(document: dict[str, Any]) -> str:
    admin, stats = document.get("cold_start"), document.get("cold_start_stats")
    if not admin and not stats:
        return ""
    counts = sorted({len(cold["samples"]) for cold in (admin, stats) if cold})
    overhead, reference = _cold_rows(document)
    provenance = _partial_note(document, {"cold_start", "cold_start_stats"})
    lines = [
        f"## Cold start ({' and '.join(map(str, counts))} samples{' per path' if admin and stats else ''})",
        "",
        "How long after the gateway can route to the new replica does the held request's answer reach the "
        "client: zerohop's part of a cold start, with the app's own start taken out. zerohop learns that the "
        "gateway can route in one of two ways: from the gateway Envoy's admin API (plain Envoy, `--envoy-admin`) "
        "or, on Istio, from each gateway pod's own Envoy stats (`POD_IP:15090/stats/prometheus`)."
        + (" Both were measured in the same run, one after the other." if admin and stats else ""),
    ]
    if provenance:
        lines += ["", f"These figures were {provenance}."]
    lines += [
        "",
        "| ms | counted from | p50 | p90 | max | samples |",
        "|---|---|---:|---:|---:|---:|",
        *overhead,
        "",
        "| for reference, ms | p50 | p90 | max |",
        "|---|---:|---:|---:|",
        *reference,
        "",
    ]
    if admin:
        lines.append(_cold_admin_text(admin))
    if stats:
        lines.append(_cold_stats_text(stats))
    return "\n".join(lines)


def _counters(counters: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counters.items() if value) or "all zero"


def _spread(values: list[float], show: Callable[[float], str]) -> str:
    return f"rounds {show(min(values))} to {show(max(values))}" if len(values) > 1 else ""


def _cpu_target_row(runs: Runs, base: str, label: str, kind: str, extra: str = "") -> str:
    ratios = runs.paired_values("B", base, kind, _cpu("extproc"), _divide)
    ratio = _median(ratios)
    met = "met" if ratio <= 1.0 else "**not met**"
    notes = [_spread(ratios, _ratio)]
    if kind == "fixed_rate":
        notes.append(f"{_ratio(_net_ratio(runs, 'B', base))} less idle")
    note = "; ".join(n for n in notes if n)
    kind_label = kind.replace("_", " ")
    return (
        f"| zerohop CPU/request ≤ {label}, {kind_label} | B/{base} = {_ratio(ratio)}"
        f"{f' ({note})' if note else ''} | {met}{extra} |"
    )


def _targets(runs: Runs) -> str:
    rows = []
    hot = runs.document.get("hotpath")
    if "B" in runs.setups and "D" in runs.setups:
        for kind in ("saturation", "fixed_rate"):
            rows.append(_cpu_target_row(runs, "D", "the bare grpc.aio server (D)", kind))
    if "B" in runs.setups and "E" in runs.setups:
        floor = runs.median("E", "saturation", _cpu("extproc"))
        extra = ""
        if hot and not math.isnan(floor):
            extra = f"; zerohop's own work is +{hot['own_us']:.1f} µs ({hot['own_us'] / floor:.1%} of E), see below"
        for kind in ("saturation", "fixed_rate"):
            rows.append(_cpu_target_row(runs, "E", "the tuned floor (E)", kind, extra))
    paired_keys = set(_paired_rounds(runs.document)[0]["latencies_us"]) if _paired_rounds(runs.document) else set()
    if {"A", "B"} <= paired_keys:
        added, per_round = _paired_added(runs.document, "B", "A")
        met = "met" if added <= TARGET_ADDED_P50_MS else "**not met**"
        spread = _spread(per_round, lambda value: _signed(value, 3))
        rows.append(
            f"| added p50 latency at low rate ≤ {TARGET_ADDED_P50_MS} ms vs A, paired | {_signed(added, 3)} ms"
            f"{f' ({spread})' if spread else ''} | {met} |"
        )
    if "B" in runs.setups and "A" in runs.setups:
        added_values = runs.paired_values("B", "A", "fixed_rate", _p50, _subtract)
        added = _median(added_values)
        met = "met" if added <= TARGET_ADDED_P50_MS else "**not met**"
        spread = _spread(added_values, lambda value: _signed(value, 3))
        rows.append(
            f"| added p50 latency at low rate ≤ {TARGET_ADDED_P50_MS} ms vs A, wrk one setup at a time "
            f"| {_signed(added, 3)} ms{f' ({spread})' if spread else ''} | {met} |"
        )
    for base in ("E", "D"):
        if {"A", "B", base} <= paired_keys:
            floor, _ = _paired_added(runs.document, base, "A")
            own, _ = _paired_added(runs.document, "B", base)
            rows.append(
                f"| for comparison, paired: added p50 of the bare server {base} vs A; B - {base} | "
                f"{_signed(floor, 3)} ms; {_signed(own, 3)} ms | (no target) |"
            )
    rows += _open_target_rows(runs, paired_keys)
    for section, label, upper in (
        ("cold_start", ADMIN_ROW, "overhead_upper_ms"),
        ("cold_start_stats", STATS_ROW, "overhead_push_ms"),
    ):
        cold = runs.document.get(section)
        if cold:
            overhead = _median(sample["overhead_ms"] for sample in cold["samples"])
            bound = _median(sample[upper] for sample in cold["samples"])
            met = "met" if overhead <= TARGET_COLD_OVERHEAD_P50_MS else "**not met**"
            later = "; measured later, see Cold start" if _partial_note(runs.document, {section}) else ""
            rows.append(
                f"| cold-start overhead p50 ≤ {TARGET_COLD_OVERHEAD_P50_MS:g} ms, {label.removeprefix('cold start: ')} "
                f"| {_fmt(overhead, 1)} ms (upper bound {_fmt(bound, 1)} ms{later}) | {met} |"
            )
    if not rows:
        return ""
    return "\n".join(
        [
            "## The targets",
            "",
            "| target | measured (median, and the range across rounds) | |",
            "|---|---:|---|",
            *rows,
            "",
            "B does everything E does and then routes and counts, so in expectation B / E is 1.0 plus zerohop's "
            "own work, which is measured directly below (in-process) because it is far smaller than the "
            "round-to-round spread of the wire-level CPU figures: on this shared 2-CPU machine the CPU per "
            "request of every process, Envoy included, moves by several percent from round to round (see the "
            "control row in the CPU section). The paired latency rows split B's added latency the same way: "
            "B - E is zerohop's own part, E - A the ext_proc round trip that any Python server pays.",
            "",
        ]
    )


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _open_cpu_share(runs: Runs, kind: str, get: Callable[[Run], float]) -> tuple[float, list[float]]:
    """zerohop's CPU per request in G over B's, per round (median, and every round's)."""
    values = runs.paired_values("G", "B", kind, get, _divide)
    return _median(values), values


def _open_target_rows(runs: Runs, paired_keys: set[str]) -> list[str]:
    """Issue 9's three targets for the warm path open (G)."""
    rows = []
    if {"A", "G"} <= set(runs.setups):
        ratios = runs.paired_values("G", "A", "saturation", _rps, _divide)
        ratio = _median(ratios)
        spread = _spread(ratios, _ratio)
        rows.append(
            f"| warm path open: throughput ≥ {TARGET_OPEN_THROUGHPUT:.2f}x A | G/A = {_ratio(ratio)}"
            f"{f' ({spread})' if spread else ''} | {_met(ratio >= TARGET_OPEN_THROUGHPUT)} |"
        )
    if {"A", "G"} <= paired_keys:
        added, per_round = _paired_added(runs.document, "G", "A")
        spread = _spread(per_round, lambda value: _signed(value, 3))
        rows.append(
            f"| warm path open: added p50 ≤ {TARGET_OPEN_ADDED_P50_MS} ms vs A, paired | {_signed(added, 3)} ms"
            f"{f' ({spread})' if spread else ''} | {_met(added <= TARGET_OPEN_ADDED_P50_MS)} |"
        )
    if {"B", "G"} <= set(runs.setups):
        for kind, label, get in (
            ("saturation", "saturation", _cpu("extproc")),
            ("fixed_rate", "fixed rate, less idle", lambda run: _less_idle(runs.document, run["setup"])(run)),
        ):
            share, values = _open_cpu_share(runs, kind, get)
            notes = [_spread(values, lambda value: f"{value:.1%}")]
            if kind == "fixed_rate":
                plain, _ = _open_cpu_share(runs, kind, _cpu("extproc"))
                tick = 10_000 / runs.median("G", kind, lambda run: float(run["load"]["requests"]))
                b_cpu = runs.median("B", kind, _cpu("extproc"))
                notes.append(
                    f"{_fmt(plain * 100, 1)}% with the background; one CPU tick is {_fmt(tick / b_cpu * 100, 1)}%"
                )
            note = "; ".join(n for n in notes if n)
            rows.append(
                f"| warm path open: zerohop CPU per warm request ≤ {TARGET_OPEN_CPU_SHARE:.0%} of B's, {label} "
                f"| G/B = {_fmt(share * 100, 1)}%{f' ({note})' if note else ''} "
                f"| {_met(share <= TARGET_OPEN_CPU_SHARE)} |"
            )
    return rows


def _warm_open(runs: Runs) -> str:
    """G side by side with A, B and C: what opening the warm path buys, and that it measured what it claims."""
    if "G" not in runs.setups:
        return ""
    document = runs.document
    keys = [key for key in ("A", "B", "C", "G") if key in runs.setups]
    paired_keys = set(_paired_rounds(document)[0]["latencies_us"]) if _paired_rounds(document) else set()

    def total(run: Run) -> float:
        return float(sum(value for role, value in run["cpu_us_per_request"].items() if role != "wrk"))

    lines = [
        "## The warm path open (G) side by side with A, B and C",
        "",
        "Medians across rounds; ratios and differences per round against A (or B) in the same round. Total CPU "
        "is every server process on the request's path (gateway, interceptor, ext_proc server, app), wrk "
        "left out. zerohop's CPU in G is what it burns while the warm requests pass it by: its autoscaler and "
        "its reads of the gateway's stats (once a second), divided by the requests. What G's gateway still "
        "does per request beyond A's: Envoy looks the ext_proc filter up in the virtual host's per-filter "
        "config and skips it (the filter is not created), and zerohop's routes carry a retry policy "
        "(`connect-failure`, `refused-stream`; A's route has none, Istio's gateways have one by default) that "
        "costs nothing until a connection fails; its upstream is the target's replica, an Envoy configured "
        "like every setup's app, reached through zerohop's EDS cluster.",
        "",
        "| setup | req/s vs A | added p50 vs A, paired (ms) | added p50 vs A, wrk fixed rate (ms) "
        "| total CPU µs/req, saturation | zerohop CPU µs/req, saturation | zerohop CPU µs/req, fixed rate "
        "(less idle) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key in keys:
        paired = _signed(_paired_added(document, key, "A")[0], 3) if {"A", key} <= paired_keys else "n/a"
        zerohop = key in ("B", "G")
        sat = _fmt(runs.median(key, "saturation", _cpu("extproc")), 1) if zerohop else "—"
        fixed = (
            f"{_fmt(runs.median(key, 'fixed_rate', _cpu('extproc')), 1)} "
            f"({_fmt(runs.median(key, 'fixed_rate', _less_idle(document, key)), 1)})"
            if zerohop
            else "—"
        )
        lines.append(
            f"| {_title(document, key)} | {_ratio(runs.paired(key, 'A', 'saturation', _rps, _divide))} "
            f"| {paired} | {_signed(runs.paired(key, 'A', 'fixed_rate', _p50, _subtract), 3)} "
            f"| {_fmt(runs.median(key, 'saturation', total), 0)} | {sat} | {fixed} |"
        )
    if "B" in runs.setups:
        share, _ = _open_cpu_share(runs, "saturation", _cpu("extproc"))
        fixed, _ = _open_cpu_share(runs, "fixed_rate", _cpu("extproc"))
        net, _ = _open_cpu_share(runs, "fixed_rate", lambda run: _less_idle(document, run["setup"])(run))
        lines += [
            "",
            f"zerohop's CPU per warm request in G against B's, per round: {_fmt(share * 100, 1)}% at saturation, "
            f"{_fmt(fixed * 100, 1)}% at the fixed rate ({_fmt(net * 100, 1)}% less idle). At the fixed rate "
            "a request is rare and zerohop's background work (autoscaler, stats reads) is spread over few "
            "requests; less idle subtracts the background measured with no traffic. "
            f"{_tick_note(runs)}",
        ]
    g_runs = [run for run in runs.by_key.values() if run["setup"] == "G"]
    checks = [run["check"] for run in g_runs]
    completed = sum(run["load"]["requests"] for run in g_runs)
    lines += [
        "",
        "Setup G's warm requests really skipped zerohop and were still counted (sums over all G runs):",
        "",
        "| requests completed (wrk) | ext_proc streams (gateway) | zerohop target requests (from the gateway's "
        "stats) | failed stats reads |",
        "|---:|---:|---:|---:|",
        f"| {completed:,} | {sum(c.get('ext_proc_streams', 0.0) for c in checks):,.0f} "
        f"| {sum(c.get('zerohop_target_requests', 0.0) for c in checks):,.0f} "
        f"| {sum(c.get('stats_failures', 0.0) for c in checks):,.0f} |",
    ]
    return "\n".join(lines) + "\n"


def _tick_note(runs: Runs) -> str:
    """How fine G's per-request CPU figures are: /proc counts CPU time in 10 ms ticks per run."""
    parts = []
    for kind, label in (("saturation", "at saturation"), ("fixed_rate", "at the fixed rate")):
        requests = runs.median("G", kind, lambda run: float(run["load"]["requests"]))
        parts.append(f"{_fmt(10_000 / requests, 1)} µs {label}")
    return (
        "The CPU times come from `/proc/PID/stat`, in 10 ms ticks per run: one tick is "
        + " and ".join(parts)
        + " per request in G's runs, the resolution of its figures."
    )


def _tracing_rows(hot: dict[str, Any]) -> str:
    if "tracing_on_us" not in hot:
        return ""
    traced = _signed(hot["tracing_on_us"] - hot["zerohop_us"])
    spans = hot["warm_spans_us"] - hot["zerohop_us"]
    return (
        f"| zerohop with tracing on (OTEL_* set; a warm request gets no span) | {hot['tracing_on_us']:.2f} |\n"
        f"| zerohop with `--trace-warm-requests` (a `zerohop.continue` span per request) "
        f"| {hot['warm_spans_us']:.2f} |\n\n"
        f"With tracing on, a warm request costs {traced} µs against tracing off: the warm path never touches the "
        f"tracer. A span per warm request costs {spans:.0f} µs more (reading the `traceparent`, creating, ending "
        "and queueing the span), which is why `--trace-warm-requests` is off by default.\n"
    )


def _hotpath(document: dict[str, Any], runs: Runs) -> str:
    hot = document.get("hotpath")
    if not hot:
        return ""
    floor = runs.median("E", "saturation", _cpu("extproc")) if "E" in runs.setups else math.nan
    share = f" ({hot['own_us'] / floor:.1%} of it)" if not math.isnan(floor) else ""
    return f"""## zerohop's own work per warm request

The handlers alone, in the bench process, fed the same {hot["request_bytes"]}-byte request-headers message
as the gateway sends for setup B's target (headers in `raw_value`, the `xds.cluster_name` attribute) through a
context that answers at once; best of {hot["repeats"]} runs of {hot["calls_per_repeat"]:,} calls each. Both include
parsing the message (grpc's request deserializer); neither includes gRPC itself.

| handler | µs per request |
|---|---:|
| E's `tuned_process` (parse, answer CONTINUE) | {hot["floor_us"]:.2f} |
| zerohop's `ExtProcServicer.process` (parse, route by cluster, count, answer CONTINUE) | {hot["zerohop_us"]:.2f} |
| **zerohop's own work** | **+{hot["own_us"]:.2f}** |
{_tracing_rows(hot)}
Against the whole process's {_fmt(floor, 0)} µs CPU per request at saturation in E{share}, the rest is grpc.aio
and the kernel: that is where a faster warm path would have to come from (more zerohop processes, or a
gRPC stack other than Python's), not from zerohop's code.
"""


def _verification(runs: Runs) -> str:
    all_runs = list(runs.by_key.values())
    if not all_runs:
        return ""
    failed = [run for run in all_runs if not run["check"]["ok"]]
    lines = ["## Checks", ""]
    lines.append(
        f"{len(all_runs) - len(failed)} of {len(all_runs)} runs passed every check."
        + ("" if not failed else " Failed:")
    )
    for run in failed:
        lines.append(f"- round {run['round']} {run['setup']} {run['kind']}: {'; '.join(run['check']['problems'])}")
    threshold = float(runs.document.get("disturbed_threshold", 0.3))

    def share(run: Run) -> float:
        return float(run["other_cpu_seconds"]) / max(float(run["load"]["seconds"]), 1e-9)

    repeated = len(runs.attempts) - len(all_runs)
    quiet = runs.document.get("quiet", {})
    busy = [run for run in all_runs if share(run) > threshold]
    lines += [
        "",
        f"Outside load: CPU time not accounted to the measured processes and wrk (kernel networking, the idle "
        f"setups, the bench, anything else on the machine) is normally 5-20% of one CPU. A measurement that saw "
        f"more than {threshold:.0%} was repeated ({repeated} repeat(s) in this run, at most "
        f"{runs.document.get('repeat_budget', 0.15):.0%} of all measurements; every attempt is in the JSON, the "
        f"least disturbed one is used). Each measurement also started only once less than "
        f"{quiet.get('busy_below', 0.25):.0%} of the CPUs were busy, or after {quiet.get('max_wait_s', 5):g} s "
        f"({quiet.get('budget_s', 30):g} s of such waiting per run at most).",
    ]
    if busy:
        lines += [
            "",
            "Still above the threshold after repeats (the medians across rounds limit their effect): "
            + ", ".join(f"round {run['round']} {run['setup']} {run['kind']} ({share(run):.0%})" for run in busy)
            + ".",
        ]
    b_runs = [run for run in all_runs if run["setup"] == "B"]
    if b_runs:
        completed = sum(run["load"]["requests"] for run in b_runs)
        checks = [run["check"] for run in b_runs]
        lines += [
            "",
            "Setup B really went through zerohop as warm requests (sums over all B runs):",
            "",
            "| requests completed (wrk) | ext_proc streams (gateway) | zerohop streams | zerohop target requests "
            "| cold | unmatched | failed open | message timeouts |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {completed:,} | {sum(c['ext_proc_streams'] for c in checks):,.0f} "
            f"| {sum(c['zerohop_streams'] for c in checks):,.0f} "
            f"| {sum(c['zerohop_target_requests'] for c in checks):,.0f} "
            f"| {sum(c['zerohop_cold_requests'] for c in checks):,.0f} "
            f"| {sum(c['zerohop_unmatched'] for c in checks):,.0f} "
            f"| {sum(c['failure_mode_allowed'] for c in checks):,.0f} "
            f"| {sum(c['message_timeouts'] for c in checks):,.0f} |",
            "",
            "A few more streams than completed requests is expected: when wrk stops, up to one request per "
            "connection is in flight; the gateway and zerohop saw it, wrk did not count it.",
        ]
    return "\n".join(lines) + "\n"


def _setup(document: dict[str, Any], runs: Runs) -> str:
    machine = document["machine"]
    options = document["options"]
    other = [run["other_cpu_seconds"] / max(run["load"]["seconds"], 1e-9) for run in runs.by_key.values()]
    lines = [
        "## Machine and setup",
        "",
        f"- Command: `{document['command']}`",
        f"- Machine: {machine['nproc']} CPUs, {machine['cpu_model']}, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}",
        f"- Envoy {machine['envoy']}, Python {machine['python']}, grpcio {machine['grpcio']}, "
        f"uvloop {machine['uvloop']}, protobuf {machine['protobuf']}, {machine['wrk']}",
        f"- Envoy `--concurrency {document['envoy_concurrency']}` for every Envoy (gateways, interceptor, app)",
    ]
    if "pinning" in document:
        lines.append(f"- Pinning: {document['pinning']['description']}")
    lines.append(
        f"- {options['rounds']} round(s) of {options['duration']}s per load, after {options['warmup']}s of warm-up "
        "per setup; the processes of every setup run for the whole measurement, idle while another is loaded"
    )
    busy = machine.get("busy_percent_before")
    if busy is not None:
        lines.append(
            f"- CPUs busy before the run started: {busy:g}% of all CPUs (load average "
            f"{machine['load_average_before']}); CPU time during the runs not accounted to the measured "
            f"processes or wrk (kernel network softirq, the idle setups, the bench itself, any other program): "
            f"median {_fmt(_median(other) * 100, 0)}% of one CPU"
        )
    return "\n".join(lines) + "\n"
