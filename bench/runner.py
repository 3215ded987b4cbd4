"""One benchmark run: start the setups, load them interleaved round by round (A B C D E, B C D E A, ...),
measure each process's CPU time and the gateways' counters around every load, then the cold starts.
Returns the whole run as one JSON-ready document; nothing here formats a report."""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import coldstart, hotpath, machine
from bench import paired as paired_load
from bench.envoys import APP_BODY
from bench.load import LoadResult, LoadSpec, run_wrk, write_scripts
from bench.procs import PROJECT_ROOT, affinity, cpu_seconds, taskset, thread_cpu_seconds
from bench.setups import (
    ALL_SETUPS,
    ENVOY_CONCURRENCY,
    EXT_PROC_SETUPS,
    SETUPS,
    ZEROHOP_SETUPS,
    Setup,
    start_setup,
)

Progress = Callable[[str], None]
EXT_PROC_STATS = "http.gateway.ext_proc.zerohop."
_EXT_PROC_FAILURES = ("failure_mode_allowed", "message_timeouts", "streams_failed")
# Setup G: ext_proc streams tolerated during a load on the open warm path ("~0": none is expected).
MAX_OPEN_STREAMS = 0
FORMAT_VERSION = 1
# The sections of a run's JSON that `--only cold` measures (and `python -m bench --merge-into` replaces).
COLD_SECTIONS = ("cold_start", "cold_start_stats")
# Outside the measured processes, kernel networking, the idle setups and the bench itself take about 5-20%
# of one CPU during a run; more means something else on the machine was busy too (other people's tests).
DISTURBED = 0.3
# A measurement starts once the machine is this quiet (share of all CPUs busy over QUIET_WINDOW seconds),
# or after QUIET_MAX_WAIT seconds regardless, and the whole run waits at most QUIET_BUDGET seconds for quiet.
QUIET_BUSY = 0.25
QUIET_WINDOW = 0.25
QUIET_MAX_WAIT = 5.0
QUIET_BUDGET = 30.0
# Disturbed measurements are repeated (keeping the least disturbed attempt) until this share of all
# measurements has been repeated: on a busy machine a default run then takes at most about a minute longer.
REPEAT_BUDGET = 0.15


@dataclass(frozen=True, slots=True)
class Options:
    """What to run; the defaults are the documented full run (five to six minutes). Many short
    rounds rather than a few long ones: the median then shrugs off a round disturbed by something else."""

    rounds: int = 5
    duration: int = 5
    warmup: int = 2
    idle: int = 5
    threads: int = 1
    connections: int = 32
    rate: int = 200
    paired_rate: int = 100
    setups: tuple[str, ...] = ALL_SETUPS
    cold_samples: int = 20
    pin: str = "loadgen"
    retries: int = 1
    quick: bool = False
    command: str = "python -m bench"


@dataclass(frozen=True, slots=True)
class Pinning:
    """CPUs for the servers (Envoys, Python) and for the load generator; None = not pinned."""

    mode: str
    servers: frozenset[int] | None
    loadgen: frozenset[int] | None

    @classmethod
    def plan(cls, mode: str) -> Pinning:
        cpus = sorted(os.sched_getaffinity(0))
        if mode == "none" or len(cpus) < 2:
            return cls("none", None, None)
        loadgen = frozenset(cpus[-1:])
        servers = frozenset(cpus[:-1]) if mode == "split" else None
        return cls(mode, servers, loadgen)

    def describe(self) -> str:
        if self.loadgen is None:
            return "nothing pinned"
        gen = f"wrk pinned to CPU {_cpus(self.loadgen)} (taskset)"
        if self.servers is None:
            return gen + "; Envoys and Python servers not pinned"
        return gen + f"; every Envoy and Python server pinned to CPU {_cpus(self.servers)} (inherited affinity)"


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


@dataclass
class Measurement:
    """One load run against one setup, with CPU time per process and counter deltas around it."""

    setup: str
    round: int
    kind: str
    load: dict[str, Any]
    cpu_seconds: dict[str, float]
    cpu_us_per_request: dict[str, float]
    counters: dict[str, float]
    machine_busy_percent: float
    other_cpu_seconds: float
    check: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1
    kept: bool = True
    quiet_wait_s: float = 0.0

    @property
    def other_share(self) -> float:
        """CPU time not accounted to the measured processes, in CPUs (1.0 = one CPU all the time)."""
        return self.other_cpu_seconds / max(float(self.load["seconds"]), 1e-9)

    @property
    def disturbed(self) -> bool:
        return self.other_share > DISTURBED


async def wait_quiet(max_wait: float) -> float:
    """Wait (at most `max_wait` seconds more than one window) until the machine is quiet; the seconds waited."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        busy_before, total_before = machine.cpu_times()
        await asyncio.sleep(QUIET_WINDOW)
        busy_after, total_after = machine.cpu_times()
        busy = (busy_after - busy_before) / max(total_after - total_before, 1e-9)
        waited = loop.time() - started - QUIET_WINDOW
        if busy < QUIET_BUSY or waited >= max_wait:
            return waited


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check(setup: str, kind: str, load: LoadResult, deltas: dict[str, float], spec: LoadSpec) -> dict[str, Any]:
    """Did this run measure what it claims? Clean HTTP results; for ext_proc setups, every request went
    through the ext_proc server (no fail-open, no timeout); for B, every one was a warm, matched request."""
    problems: list[str] = []
    if load.non2xx or load.socket_errors:
        problems.append(f"{load.non2xx} non-2xx responses, {load.socket_errors} socket errors")
    if kind == "fixed_rate" and load.rps < 0.95 * spec.rate:
        problems.append(f"fixed rate not held: {load.rps:.0f} req/s for {spec.rate}")
    result: dict[str, Any] = {}
    if setup in EXT_PROC_SETUPS:
        streams = deltas.get(EXT_PROC_STATS + "streams_started", 0.0)
        fail_open = deltas.get(EXT_PROC_STATS + "failure_mode_allowed", 0.0)
        timeouts = deltas.get(EXT_PROC_STATS + "message_timeouts", 0.0)
        failed = deltas.get(EXT_PROC_STATS + "streams_failed", 0.0)
        result.update(
            ext_proc_streams=streams, failure_mode_allowed=fail_open, message_timeouts=timeouts, streams_failed=failed
        )
        if streams < load.requests:
            problems.append(f"only {streams:.0f} ext_proc streams for {load.requests} requests")
        if fail_open or timeouts or failed:
            problems.append(f"ext_proc failed open {fail_open:.0f}x, timed out {timeouts:.0f}x, failed {failed:.0f}x")
    if setup == "G":
        streams = deltas.get(EXT_PROC_STATS + "streams_started", 0.0)
        requests = deltas.get("zerohop.target.requests", 0.0)
        result.update(
            ext_proc_streams=streams,
            zerohop_target_requests=requests,
            stats_failures=deltas.get("zerohop.warm_path.stats_failures", 0.0),
        )
        # The warm path stayed open: no request asked zerohop (a closing would send them all through it).
        if streams > MAX_OPEN_STREAMS:
            problems.append(f"{streams:.0f} ext_proc streams for {load.requests} requests on the open warm path")
        # Counted from the gateway's stats (read after the load): wrk's last requests in flight included.
        if not load.requests <= requests <= load.requests + spec.connections + 1:
            problems.append(f"zerohop counted {requests:.0f} target requests for {load.requests} completed")
        if result["stats_failures"]:
            problems.append(f"{result['stats_failures']:.0f} failed reads of the gateway's stats")
    if setup == "B":
        requests = deltas.get("zerohop.target.requests", 0.0)
        cold = deltas.get("zerohop.cold_requests", 0.0)
        unmatched = deltas.get("zerohop.unmatched", 0.0)
        result.update(
            zerohop_streams=deltas.get("zerohop.streams", 0.0),
            zerohop_target_requests=requests,
            zerohop_cold_requests=cold,
            zerohop_unmatched=unmatched,
        )
        # wrk stops with up to one request per connection in flight: zerohop saw it, wrk did not count it.
        if not load.requests <= requests <= load.requests + spec.connections + 1:
            problems.append(f"zerohop counted {requests:.0f} target requests for {load.requests} completed")
        if cold or unmatched:
            problems.append(f"zerohop saw {cold:.0f} cold and {unmatched:.0f} unmatched requests")
    result["ok"] = not problems
    result["problems"] = problems
    return result


class Bench:
    """The running setups of one bench run and how to load them."""

    def __init__(self, options: Options, workdir: Path, progress: Progress) -> None:
        self.options = options
        self.workdir = workdir
        self.progress = progress
        self.pinning = Pinning.plan(options.pin)
        self.spec = LoadSpec(
            duration=options.duration,
            threads=options.threads,
            connections=options.connections,
            rate=options.rate,
            cpus=self.pinning.loadgen,
        )
        self.saturation_script, self.paced_script = write_scripts(workdir / "lua")
        self.setups: dict[str, Setup] = {}
        total = options.rounds * len(options.setups) * 2
        self.repeats_left = math.ceil(REPEAT_BUDGET * total) if options.retries else 0
        self.quiet_left = QUIET_BUDGET

    async def start(self, stack: AsyncExitStack) -> None:
        servers = set(self.pinning.servers) if self.pinning.servers else None
        with affinity(servers):
            for key in self.options.setups:
                self.progress(f"starting {key}: {SETUPS[key][0]}")
                self.setups[key] = await start_setup(key, stack, self.workdir)

    async def warm_up(self) -> dict[str, dict[str, Any]]:
        results = {}
        for key, setup in self.setups.items():
            argv = self.spec.saturation_argv(setup.url, self.saturation_script, self.options.warmup)
            results[key] = asdict(await run_wrk(argv, self.options.warmup + 30))
        return results

    async def idle_cpu(self) -> dict[str, dict[str, float]]:
        """CPU milliseconds per second each process burns with no traffic at all (timers, polling)."""
        pids = {key: setup.pids() for key, setup in self.setups.items()}
        before = {key: {role: thread_cpu_seconds(pid) for role, pid in roles.items()} for key, roles in pids.items()}
        await asyncio.sleep(self.options.idle)
        return {
            key: {
                role: round((thread_cpu_seconds(pid) - before[key][role]) * 1000 / self.options.idle, 3)
                for role, pid in roles.items()
            }
            for key, roles in pids.items()
        }

    async def measure_until_clean(
        self, session: aiohttp.ClientSession, key: str, round_: int, kind: str
    ) -> list[Measurement]:
        """Measure once, and again (up to `retries` times, within the repeat budget) while something outside
        the bench disturbed the run; every attempt is returned, the least disturbed one marked `kept`."""
        attempts: list[Measurement] = []
        while True:
            waited = await wait_quiet(min(QUIET_MAX_WAIT, self.quiet_left))
            self.quiet_left -= waited
            measurement = await self.measure(session, key, round_, kind)
            measurement.attempt, measurement.quiet_wait_s = len(attempts) + 1, round(waited, 2)
            attempts.append(measurement)
            self.progress(_line(measurement, self.options.rounds))
            if not measurement.disturbed or len(attempts) > self.options.retries or self.repeats_left <= 0:
                break
            self.repeats_left -= 1
            self.progress(f"  something else used {measurement.other_share:.0%} of a CPU meanwhile; measuring again")
        best = min(attempts, key=lambda attempt: attempt.other_share)
        for attempt in attempts:
            attempt.kept = attempt is best
        return attempts

    async def measure(self, session: aiohttp.ClientSession, key: str, round_: int, kind: str) -> Measurement:
        setup = self.setups[key]
        if kind == "saturation":
            argv = self.spec.saturation_argv(setup.url, self.saturation_script)
        else:
            argv = self.spec.fixed_rate_argv(setup.url, self.paced_script)
        await setup.ensure_open(session)
        await setup.settle(session)
        counters_before = await setup.counters(session)
        pids = setup.pids()
        cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        busy_before, total_before = machine.cpu_times()
        children_before = _children_cpu()
        load = await run_wrk(argv, self.options.duration + 30)
        wrk_cpu = _children_cpu() - children_before
        busy_after, total_after = machine.cpu_times()
        cpu = {role: cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
        await setup.settle(session)
        counters_after = await setup.counters(session)
        deltas = {
            name: value - counters_before.get(name, 0.0)
            for name, value in counters_after.items()
            if name.startswith(("http.gateway.", "zerohop.")) and value != counters_before.get(name, 0.0)
        }
        requests = max(load.requests, 1)
        cpu["wrk"] = wrk_cpu
        busy = busy_after - busy_before
        return Measurement(
            setup=key,
            round=round_,
            kind=kind,
            load=asdict(load),
            cpu_seconds={role: round(value, 3) for role, value in cpu.items()},
            cpu_us_per_request={role: round(value * 1e6 / requests, 2) for role, value in cpu.items()},
            counters=deltas,
            machine_busy_percent=round(100 * busy / max(total_after - total_before, 1e-9), 1),
            other_cpu_seconds=round(busy - sum(cpu.values()), 3),
            check=check(key, kind, load, deltas, self.spec),
        )

    async def paired(self, session: aiohttp.ClientSession, round_: int) -> dict[str, Any]:
        """One round of the paired low-rate load over every setup at once (see `bench.paired`)."""
        targets = [f"{key}=127.0.0.1:{setup.port}" for key, setup in self.setups.items()]
        argv = [
            sys.executable,
            "-m",
            "bench.paired",
            "--rate",
            str(self.options.paired_rate),
            "--duration",
            str(self.options.duration),
            "--seed",
            str(round_),
            *targets,
        ]
        argv = taskset(set(self.pinning.loadgen) if self.pinning.loadgen else None, argv)
        for setup in self.setups.values():
            await setup.ensure_open(session)
            await setup.settle(session)
        before = {key: await setup.counters(session) for key, setup in self.setups.items()}
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await asyncio.wait_for(process.communicate(), self.options.duration * 3 + 30)
        text = output.decode(errors="replace")
        lines = [line for line in text.splitlines() if line.startswith(paired_load.MARKER)]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"bench.paired failed (exit {process.returncode}):\n{text}")
        result: dict[str, Any] = json.loads(lines[-1][len(paired_load.MARKER) :])
        problems: list[str] = []
        for key, setup in self.setups.items():
            await setup.settle(session)
            after = await setup.counters(session)
            deltas = {name: value - before[key].get(name, 0.0) for name, value in after.items()}
            sent = len(result["latencies_us"][key])
            statuses = result["statuses"][key]
            if result["errors"][key] or set(statuses) != {"200"}:
                problems.append(f"{key}: statuses {statuses}, {result['errors'][key]} errors")
            if key in EXT_PROC_SETUPS:
                streams = deltas.get(EXT_PROC_STATS + "streams_started", 0.0)
                failed = sum(deltas.get(EXT_PROC_STATS + name, 0.0) for name in _EXT_PROC_FAILURES)
                if streams < sent or failed:
                    problems.append(f"{key}: {streams:.0f} ext_proc streams for {sent} requests, {failed:.0f} failed")
            if key in ZEROHOP_SETUPS and deltas.get("zerohop.target.requests", 0.0) != sent:
                problems.append(f"{key}: zerohop counted {deltas.get('zerohop.target.requests', 0.0):.0f} of {sent}")
            if key == "G" and deltas.get(EXT_PROC_STATS + "streams_started", 0.0) > MAX_OPEN_STREAMS:
                problems.append(
                    f"G: {deltas[EXT_PROC_STATS + 'streams_started']:.0f} ext_proc streams on the open path"
                )
        result["round"] = round_
        result["check"] = {"ok": not problems, "problems": problems}
        return result


async def run(options: Options, progress: Progress) -> dict[str, Any]:
    """Run the whole benchmark and return its document (see `report.py` for how it is read)."""
    workdir = Path(tempfile.mkdtemp(prefix="zerohop-bench-"))
    document: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "started": _now(),
        "command": options.command,
        "options": asdict(options),
        "machine": machine.facts(),
        "envoy_concurrency": ENVOY_CONCURRENCY,
        "app_body_bytes": len(APP_BODY.encode()),
        "setups": {key: {"title": title, "description": text} for key, (title, text) in SETUPS.items()},
        "workdir": str(workdir),
    }
    progress(f"work directory {workdir} (configs and logs of every process)")
    document["machine"]["busy_percent_before"] = await asyncio.to_thread(machine.busy_percent, 2.0)
    document["machine"]["load_average_before"] = machine.load_average()
    runs: list[Measurement] = []
    if "B" in options.setups and "E" in options.setups:
        progress("zerohop's own work per warm request, in-process, against the tuned floor's handler")
        document["hotpath"] = hotpath.measure()
    if options.setups:
        bench = Bench(options, workdir, progress)
        document["pinning"] = {
            "mode": bench.pinning.mode,
            "servers": sorted(bench.pinning.servers or []),
            "loadgen": sorted(bench.pinning.loadgen or []),
            "description": bench.pinning.describe(),
        }
        document["load"] = asdict(bench.spec) | {"cpus": sorted(bench.spec.cpus or [])}
        async with AsyncExitStack() as stack:
            await bench.start(stack)
            session = await stack.enter_async_context(aiohttp.ClientSession())
            progress(f"warm-up: {options.warmup}s of saturation per setup")
            document["warmup"] = await bench.warm_up()
            progress(f"idle CPU: {options.idle}s without traffic")
            document["idle_cpu_ms_per_s"] = await bench.idle_cpu()
            keys = list(bench.setups)
            for round_ in range(1, options.rounds + 1):
                # Rotated each round (A B C D E, B C D E A, ...) so no setup always runs right after the same
                # one or at the same point of a round.
                shift = (round_ - 1) % len(keys)
                for key in keys[shift:] + keys[:shift]:
                    for kind in ("saturation", "fixed_rate"):
                        runs += await bench.measure_until_clean(session, key, round_, kind)
            if len(bench.setups) > 1:
                progress(f"paired low-rate load: {options.rounds} x {options.duration}s, every setup in each tick")
                document["paired"] = {"rate": options.paired_rate, "rounds": []}
                for round_ in range(1, options.rounds + 1):
                    result = await bench.paired(session, round_)
                    document["paired"]["rounds"].append(result)
                    progress(_paired_line(result, options.rounds))
            document["final_counters"] = {key: await setup.counters(session) for key, setup in bench.setups.items()}
    document["runs"] = [
        asdict(measurement) | {"other_share": round(measurement.other_share, 3)} for measurement in runs
    ]
    document["disturbed_threshold"] = DISTURBED
    document["quiet"] = {"busy_below": QUIET_BUSY, "max_wait_s": QUIET_MAX_WAIT, "budget_s": QUIET_BUDGET}
    document["repeat_budget"] = REPEAT_BUDGET
    if options.cold_samples:
        progress(f"cold starts, admin-API path: {options.cold_samples} samples")
        document["cold_start"] = await _cold_path(coldstart.measure, workdir / "cold", options.cold_samples, progress)
        # Imported here: this path's world is built from the tests' Kubernetes API emulator and Istio gateway
        # pod (tests.kubeemu, tests.istio_gateway), which a report-only run does not need.
        from bench import coldstats

        progress(f"cold starts, gateway-pod-stats path: {options.cold_samples} samples")
        document["cold_start_stats"] = await _cold_path(
            coldstats.measure, workdir / "coldstats", options.cold_samples, progress
        )
    document["machine"]["load_average_after"] = machine.load_average()
    document["finished"] = _now()
    return document


ColdMeasure = Callable[[Path, int, Progress], Awaitable[dict[str, Any]]]


async def _cold_path(measure: ColdMeasure, workdir: Path, samples: int, progress: Progress) -> dict[str, Any]:
    """One cold-start path, started once the machine is quiet (or after QUIET_MAX_WAIT): its samples, how busy
    the machine was just before, and how long the path took in all (its processes' start and stop included)."""
    waited = await wait_quiet(QUIET_MAX_WAIT)
    before = {
        "quiet_wait_s": round(waited, 2),
        "busy_percent": await asyncio.to_thread(machine.busy_percent, QUIET_WINDOW),
        "load_average": machine.load_average(),
    }
    began = time.perf_counter()
    result = await measure(workdir, samples, progress)
    return result | {"machine_before": before, "seconds": round(time.perf_counter() - began, 1)}


def _paired_line(result: dict[str, Any], rounds: int) -> str:
    medians = "  ".join(
        f"{key} {statistics.median(values) / 1000:.3f}" for key, values in result["latencies_us"].items() if values
    )
    flag = "" if result["check"]["ok"] else "  CHECK FAILED: " + "; ".join(result["check"]["problems"])
    return f"paired {result['round']}/{rounds}: p50 ms {medians}{flag}"


def _line(measurement: Measurement, rounds: int) -> str:
    load = measurement.load
    extproc = measurement.cpu_us_per_request.get("extproc")
    cpu = f", ext_proc server {extproc:.0f} µs CPU/req" if extproc is not None else ""
    flag = "" if measurement.check["ok"] else "  CHECK FAILED: " + "; ".join(measurement.check["problems"])
    if measurement.attempt > 1:
        flag += f"  (attempt {measurement.attempt})"
    return (
        f"round {measurement.round}/{rounds} {measurement.setup} {measurement.kind:<10} "
        f"{load['rps']:>8.0f} req/s  p50 {load['p50_ms']:.3f} ms  p99 {load['p99_ms']:.3f} ms{cpu}{flag}"
    )


def merge_partial(base: dict[str, Any], partial: dict[str, Any]) -> dict[str, Any]:
    """`base` (a saved run) with the cold-start sections of `partial` (a `--only cold` run) in place of its
    own; `partial_runs` records what came from where, and keeps every figure replaced."""
    sections = [name for name in COLD_SECTIONS if name in partial]
    if not sections:
        raise ValueError("the partial run measured no cold start")
    started = datetime.datetime.fromisoformat(partial["started"])
    finished = datetime.datetime.fromisoformat(partial["finished"])
    merged = dict(base)
    merged["partial_runs"] = [
        *base.get("partial_runs", []),
        {
            "command": partial["command"],
            "started": partial["started"],
            "finished": partial["finished"],
            "seconds": round((finished - started).total_seconds()),
            "machine": partial["machine"],
            "options": partial["options"],
            "sections": sections,
            "replaced": {name: base.get(name) for name in sections},
        },
    ]
    for name in sections:
        merged[name] = partial[name]
    return merged
