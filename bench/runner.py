"""One benchmark run: start the setups, load them interleaved round by round (A B C D E, A B C D E, ...),
measure each process's CPU time and the gateways' counters around every load, then the cold starts.
Returns the whole run as one JSON-ready document; nothing here formats a report."""

from __future__ import annotations

import asyncio
import datetime
import os
import resource
import tempfile
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import coldstart, machine
from bench.envoys import APP_BODY
from bench.load import LoadResult, LoadSpec, run_wrk, write_scripts
from bench.procs import affinity, cpu_seconds
from bench.setups import ALL_SETUPS, ENVOY_CONCURRENCY, EXT_PROC_SETUPS, SETUPS, Setup, start_app, start_setup

Progress = Callable[[str], None]
EXT_PROC_STATS = "http.gateway.ext_proc.zerohop."
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Options:
    """What to run; the defaults are the documented full run (about six minutes)."""

    rounds: int = 3
    duration: int = 8
    warmup: int = 2
    idle: int = 3
    threads: int = 1
    connections: int = 32
    rate: int = 200
    setups: tuple[str, ...] = ALL_SETUPS
    cold_samples: int = 20
    pin: str = "split"
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
        result.update(ext_proc_streams=streams, failure_mode_allowed=fail_open, message_timeouts=timeouts)
        if streams < load.requests:
            problems.append(f"only {streams:.0f} ext_proc streams for {load.requests} requests")
        if fail_open or timeouts or failed:
            problems.append(f"ext_proc failed open {fail_open:.0f}x, timed out {timeouts:.0f}x, failed {failed:.0f}x")
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
        self.app_pid = 0

    async def start(self, stack: AsyncExitStack) -> None:
        servers = set(self.pinning.servers) if self.pinning.servers else None
        with affinity(servers):
            app, app_port = await start_app(stack, self.workdir)
            assert app.process is not None
            self.app_pid = app.process.pid
            for key in self.options.setups:
                self.progress(f"starting {key}: {SETUPS[key][0]}")
                self.setups[key] = await start_setup(key, stack, self.workdir, app_port)

    async def warm_up(self) -> dict[str, dict[str, Any]]:
        results = {}
        for key, setup in self.setups.items():
            argv = self.spec.saturation_argv(setup.url, self.saturation_script, self.options.warmup)
            results[key] = asdict(await run_wrk(argv, self.options.warmup + 30))
        return results

    async def idle_cpu(self) -> dict[str, dict[str, float]]:
        """CPU milliseconds per second each process burns with no traffic at all (timers, polling)."""
        pids = {key: {**setup.pids(), "app": self.app_pid} for key, setup in self.setups.items()}
        before = {key: {role: cpu_seconds(pid) for role, pid in roles.items()} for key, roles in pids.items()}
        await asyncio.sleep(self.options.idle)
        return {
            key: {
                role: round((cpu_seconds(pid) - before[key][role]) * 1000 / self.options.idle, 2)
                for role, pid in roles.items()
            }
            for key, roles in pids.items()
        }

    async def measure(self, session: aiohttp.ClientSession, key: str, round_: int, kind: str) -> Measurement:
        setup = self.setups[key]
        if kind == "saturation":
            argv = self.spec.saturation_argv(setup.url, self.saturation_script)
        else:
            argv = self.spec.fixed_rate_argv(setup.url, self.paced_script)
        counters_before = await setup.counters(session)
        pids = {**setup.pids(), "app": self.app_pid}
        cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        busy_before, total_before = machine.cpu_times()
        children_before = _children_cpu()
        load = await run_wrk(argv, self.options.duration + 30)
        wrk_cpu = _children_cpu() - children_before
        busy_after, total_after = machine.cpu_times()
        cpu = {role: cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
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
            for round_ in range(1, options.rounds + 1):
                for key in bench.setups:
                    for kind in ("saturation", "fixed_rate"):
                        measurement = await bench.measure(session, key, round_, kind)
                        runs.append(measurement)
                        progress(_line(measurement, options.rounds))
            document["final_counters"] = {key: await setup.counters(session) for key, setup in bench.setups.items()}
    document["runs"] = [asdict(measurement) for measurement in runs]
    if options.cold_samples:
        progress(f"cold starts: {options.cold_samples} samples")
        document["cold_start"] = await coldstart.measure(workdir / "cold", options.cold_samples, progress)
    document["machine"]["load_average_after"] = machine.load_average()
    document["finished"] = _now()
    return document


def _line(measurement: Measurement, rounds: int) -> str:
    load = measurement.load
    extproc = measurement.cpu_us_per_request.get("extproc")
    cpu = f", ext_proc server {extproc:.0f} µs CPU/req" if extproc is not None else ""
    flag = "" if measurement.check["ok"] else "  CHECK FAILED: " + "; ".join(measurement.check["problems"])
    return (
        f"round {measurement.round}/{rounds} {measurement.setup} {measurement.kind:<10} "
        f"{load['rps']:>8.0f} req/s  p50 {load['p50_ms']:.3f} ms  p99 {load['p99_ms']:.3f} ms{cpu}{flag}"
    )
