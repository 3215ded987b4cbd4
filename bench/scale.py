"""`python -m bench.scale --targets N`: zerohop on the Kubernetes provider with N targets, and what it costs.

Three processes: the API emulator filled with N targets (`bench.scale_emulator`), `zerohop serve --provider
kubernetes` against it (leader, ScaledObject management on, the defaults), and this one, which times
ext_proc calls to zerohop's one warm target at a steady rate (an open loop: a stall shows as latency, never
as fewer calls) while things happen:

- start -> ready: the process started -> its admin server answers (imports) -> `/readyz` 200 (synced),
  zerohop run from compiled bytecode as an installed package is (see `_compile_zerohop`);
- memory per target: (RSS at ready - RSS when the admin server first answered, before any list) / N;
- sync: from ready until every ScaledObject exists and every HTTPScaledObject has a status (or
  `--sync-timeout`), the leader's first job; the statuses are counted from a watch opened before zerohop
  starts, so the count costs neither the emulator nor this process a list of every object;
- quiet: a few seconds in which the bench does nothing (the baseline, unless the leader is still syncing);
- burst: 100 EndpointSlice updates sent at once (endpoints added, none ready);
- routable: event -> routable, one cold target at a time (20 of them): a request for it held by zerohop, then
  its EndpointSlice given a ready endpoint; from that write until the held request is released (zerohop
  sees the slice, marks the target routable and, with no gateway pod to read, lets the request go
  `--propagation-delay` 0.05 s later), p50 / p90 / max;
- scrape: `/metrics` fetched 3 times, one after another; status: `/status` fetched 3 times.

For each window: calls, failed calls (no CONTINUE within the deadline: an error, a hold, a timeout), the
first answer's latency p50 / p99 / max, how many answers took longer than the shipped filter's 1 s
`message_timeout` (behind a gateway those requests would have gone on uncounted), and the CPU seconds each
process used in it (`cpu_s`: zerohop, the emulator, this process, and the whole machine, every other
program included): with two CPUs, a window whose processes want more than two leaves zerohop waiting for a
CPU, which shows as latency however short its own steps are. `--calls FILE` keeps every call (start, latency,
outcome) for a timeline. Not part of the test suite (tests/unit/test_bench.py runs it once with N = 10).
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

import extproc
from bench.machine import cpu_times
from bench.procs import Child, cpu_seconds, free_port
from bench.scale_emulator import NAMESPACE, PROBE, SLICES, endpoint_slice, target_name
from bench.scale_report import render, render_section, replace_section

CALL_DEADLINE = 10.0
ENVOY_MESSAGE_TIMEOUT = 1.0  # the shipped EnvoyFilter's message_timeout
BURST = 100
ROUTABLE_SAMPLES = 20
PROPAGATION_DELAY = 0.05  # zerohop's --propagation-delay here: no gateway pod for it to read


@dataclass
class Options:
    targets: int = 1000
    rate: float = 100.0  # ext_proc calls per second
    sync_timeout: float = 300.0
    quiet: float = 3.0
    settle: float = 2.0  # seconds of calls kept in a window after its event, for the stall to show
    workdir: Path | None = None
    calls: Path | None = None  # every call written here (a timeline)


@dataclass
class Call:
    started: float
    latency: float
    outcome: str  # "ok", or why the call did not get a CONTINUE


@dataclass
class Window:
    name: str
    start: float
    end: float
    extra: dict[str, Any] = field(default_factory=dict)


class CpuMeter:
    """CPU seconds used by zerohop (and its main thread, the event loop's), the emulator, this process and the
    whole machine between two readings."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = {**pids, "bench": os.getpid()}
        self._zerohop = pids["zerohop"]
        self._before = self._read()

    def _read(self) -> dict[str, float]:
        readings = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        readings["zerohop_loop"] = _thread_cpu_seconds(self._zerohop, self._zerohop)
        readings["machine"] = cpu_times()[0]
        return readings

    def lap(self) -> dict[str, float]:
        """The seconds used since the last lap (or the start)."""
        now = self._read()
        used = {name: round(now[name] - self._before[name], 2) for name in now}
        self._before = now
        return used


def _thread_cpu_seconds(pid: int, tid: int) -> float:
    """utime + stime of one thread (the main thread's id is the process's)."""
    text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _headers_request(host: str) -> bytes:
    headers = ep.HttpHeaders()
    for key, value in ((":method", b"GET"), (":path", b"/"), (":authority", host.encode()), (":scheme", b"http")):
        headers.headers.headers.append(base_pb2.HeaderValue(key=key, raw_value=value))
    return ep.ProcessingRequest(request_headers=headers).SerializeToString()


class Load:
    """Open-loop ext_proc calls to one host at `rate` per second; every call recorded."""

    def __init__(self, address: str, host: str, rate: float) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = ep_grpc.ExternalProcessorStub(self._channel)
        self._request = ep.ProcessingRequest.FromString(_headers_request(host))
        self._interval = 1.0 / rate
        self.calls: list[Call] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._lagger: asyncio.Task[None] | None = None
        self.lags: list[tuple[float, float]] = []  # (when, seconds late) of this process's own loop

    async def one(self) -> Call:
        started = time.monotonic()
        call = self._stub.Process(iter([self._request]), timeout=CALL_DEADLINE)
        try:
            response = await call.read()
        except grpc.aio.AioRpcError as exc:
            return Call(started, time.monotonic() - started, exc.code().name)
        latency = time.monotonic() - started
        if response is grpc.aio.EOF:
            return Call(started, latency, "EOF")
        if not response.HasField("request_headers"):
            call.cancel()  # held: nothing more to learn from this one
            return Call(started, latency, "held")
        await call.code()  # zerohop ends a warm stream itself; a cancel here would race its status
        return Call(started, latency, "ok")

    async def _lag(self) -> None:
        """This process's own event loop lag, for telling its stalls from zerohop's."""
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.005)
            self.lags.append((before, time.monotonic() - before - 0.005))

    async def _record(self) -> None:
        self.calls.append(await self.one())

    async def _tick(self) -> None:
        next_at = time.monotonic()
        while True:
            task = asyncio.ensure_future(self._record())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            next_at += self._interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self._ticker = asyncio.ensure_future(self._tick())
        self._lagger = asyncio.ensure_future(self._lag())

    async def stop(self) -> None:
        for task in (self._ticker, self._lagger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self._channel.close()

    def summary(self, window: Window) -> dict[str, Any]:
        calls = [c for c in self.calls if window.start <= c.started < window.end]
        ok = sorted(c.latency for c in calls if c.outcome == "ok")
        failed: dict[str, int] = {}
        for c in calls:
            if c.outcome != "ok":
                failed[c.outcome] = failed.get(c.outcome, 0) + 1
        out: dict[str, Any] = {"seconds": round(window.end - window.start, 2), "calls": len(calls), "failed": failed}
        # Behind the shipped filter (message_timeout 1s, failure_mode_allow) these would go on uncounted.
        out["over_1s"] = sum(1 for latency in ok if latency > ENVOY_MESSAGE_TIMEOUT)
        if ok:
            out["p50_ms"] = round(1000 * statistics.median(ok), 2)
            out["p99_ms"] = round(1000 * ok[min(len(ok) - 1, int(len(ok) * 0.99))], 2)
            out["max_ms"] = round(1000 * ok[-1], 2)
        lags = [lag for at, lag in self.lags if window.start <= at < window.end]
        if lags:  # the bench's own loop: a call it started late or read late looks slow without zerohop's doing
            out["bench_lag_max_ms"] = round(1000 * max(lags), 1)
        return {**out, **window.extra}


async def _count(session: aiohttp.ClientSession, base: str, path: str) -> int:
    """How many objects a list holds, from one item and `remainingItemCount` (a paged list's count)."""
    async with session.get(f"{base}{path}", params={"limit": "1"}) as response:
        response.raise_for_status()
        body = await response.json()
    return len(body["items"]) + int(body["metadata"].get("remainingItemCount") or 0)


class StatusWatch:
    """The HTTPScaledObjects that have a `Ready` condition, from one watch opened before zerohop starts
    (the emulator starts them all without a status)."""

    def __init__(self, session: aiohttp.ClientSession, api: str) -> None:
        self._session = session
        self._path = f"{api}/apis/http.keda.sh/v1alpha1/namespaces/{NAMESPACE}/httpscaledobjects"
        self.written: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self._session.get(self._path, params={"limit": "1"}) as response:
            response.raise_for_status()
            version = (await response.json())["metadata"]["resourceVersion"]
        self._task = asyncio.ensure_future(self._watch(version))

    async def _watch(self, version: str) -> None:
        params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "3600"}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self._session.get(self._path, params=params, timeout=timeout) as response:
            response.raise_for_status()
            async for line in response.content:
                if not line.strip():
                    continue
                obj = json.loads(line).get("object") or {}
                conditions = (obj.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Ready" for c in conditions):
                    self.written.add(obj["metadata"]["name"])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# What zerohop's first sync lists (every namespace), as its informers ask: pages of 500.
_FIRST_SYNC_LISTS = (
    ("/apis/http.keda.sh/v1alpha1/httpscaledobjects", {}),
    ("/api/v1/services", {}),
    ("/apis/discovery.k8s.io/v1/endpointslices", {"labelSelector": "kubernetes.io/service-name"}),
    ("/apis/keda.sh/v1alpha1/scaledobjects", {}),
)


_CONTINUE = re.compile(r'"continue":\s*"([^"]*)"')


def continue_token(body: bytes) -> str:
    """A list page's continue token, read from the metadata near the start without parsing the items. (The
    emulator writes `"continue": "..."`, with a space: a marker without one found no token, so the floor
    below once read the first page of each list only.)"""
    found = _CONTINUE.search(body[:2000].decode(errors="replace"))
    return found.group(1) if found else ""


async def _list_floor(session: aiohttp.ClientSession, api: str) -> float:
    """Seconds the emulator takes to serve every list of zerohop's first sync, read (not parsed) by a client
    that does nothing else, all lists at once as zerohop's informers ask: the part of start -> ready that
    is the emulator's, not zerohop's."""

    async def pages(path: str, query: dict[str, str]) -> None:
        token = ""
        while True:
            params = {"limit": "500", **query, **({"continue": token} if token else {})}
            async with session.get(f"{api}{path}", params=params) as response:
                response.raise_for_status()
                body = await response.read()
            token = continue_token(body)
            if not token:
                return

    started = time.monotonic()
    await asyncio.gather(*(pages(path, query) for path, query in _FIRST_SYNC_LISTS))
    return round(time.monotonic() - started, 2)


async def _until_warm(load: Load, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (await load.one()).outcome != "ok":
        if time.monotonic() > deadline:
            raise TimeoutError(f"the probe target was not warm after {timeout:g}s")
        await asyncio.sleep(0.1)


def _compile_zerohop() -> None:
    """Compile extproc/ to bytecode once, before zerohop is timed. Deployed, zerohop runs from the bytecode
    `pip install` wrote (the image installs it so); this checkout is an editable install, and with
    PYTHONDONTWRITEBYTECODE (set on this machine and in CI) every start would compile every module again
    (0.1-0.2 s of start -> ready at 10k targets, the compiler's and no part of zerohop's)."""
    compileall.compile_dir(Path(extproc.__file__).parent, quiet=1)


@contextlib.asynccontextmanager
async def _children(options: Options, workdir: Path) -> AsyncIterator[tuple[Child, Child, dict[str, Any]]]:
    emu_port = free_port()
    kubeconfig = workdir / "kubeconfig"
    emulator = Child(
        "kubeemu",
        ["-m", "bench.scale_emulator", "--targets", str(options.targets), "--port", str(emu_port),
         "--kubeconfig", str(kubeconfig)],
        workdir / "kubeemu.log",
    )  # fmt: skip
    ports = {name: free_port() for name in ("ext_proc", "scaler", "admin", "peer")}
    _compile_zerohop()
    zerohop = Child(
        "zerohop",
        ["-m", "extproc", "serve", "--provider", "kubernetes", "--kubeconfig", str(kubeconfig),
         "--pod-name", "zerohop-0", "--pod-namespace", NAMESPACE, "--pod-ip", "127.0.0.1",
         "--propagation-delay", str(PROPAGATION_DELAY), "--log-level", "warning",
         "--ext-proc-address", f"127.0.0.1:{ports['ext_proc']}", "--scaler-address", f"127.0.0.1:{ports['scaler']}",
         "--admin-address", f"127.0.0.1:{ports['admin']}", "--peer-address", f"127.0.0.1:{ports['peer']}"],
        workdir / "zerohop.log",
    )  # fmt: skip
    info: dict[str, Any] = {"emulator": f"http://127.0.0.1:{emu_port}", **ports}
    try:
        populate_started = time.monotonic()
        await emulator.start()
        await emulator.wait_tcp(emu_port, timeout=60 + options.targets / 20)
        info["populate_s"] = round(time.monotonic() - populate_started, 2)
        yield emulator, zerohop, info
    finally:
        await zerohop.stop()
        await emulator.stop()


async def run(options: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="zerohop-scale-") as tmp:
        workdir = options.workdir or Path(tmp)
        async with _children(options, workdir) as (emulator, zerohop, info):
            info["emulator_pid"] = emulator.pid
            return await _measure(options, zerohop, info)


async def _measure(options: Options, zerohop: Child, info: dict[str, Any]) -> dict[str, Any]:
    api = str(info["emulator"])
    result: dict[str, Any] = {"targets": options.targets, "rate": options.rate, "populate_s": info["populate_s"]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        statuses = StatusWatch(session, api)
        await statuses.start()
        try:
            await _run_zerohop(options, zerohop, info, session, statuses, result)
        finally:
            await statuses.stop()
    return result


async def _run_zerohop(
    options: Options,
    zerohop: Child,
    info: dict[str, Any],
    session: aiohttp.ClientSession,
    statuses: StatusWatch,
    result: dict[str, Any],
) -> None:
    admin = f"http://127.0.0.1:{info['admin']}"
    api = str(info["emulator"])
    result["emulator_lists_s"] = await _list_floor(session, api)
    started = time.monotonic()
    await zerohop.start()
    await zerohop.wait_http_ok(f"{admin}/healthz", timeout=60)
    admin_up = time.monotonic()
    rss_before = _rss_kib(zerohop.pid)
    await zerohop.wait_http_ok(f"{admin}/readyz", timeout=60 + options.targets / 100)
    ready = time.monotonic()
    rss_ready = _rss_kib(zerohop.pid)
    result["cpu_to_ready_s"] = round(cpu_seconds(zerohop.pid), 2)
    result["admin_up_s"] = round(admin_up - started, 2)
    result["ready_s"] = round(ready - started, 2)
    result["sync_to_ready_s"] = round(ready - admin_up, 2)
    result["rss_ready_mib"] = round(rss_ready / 1024, 1)
    result["kib_per_target"] = round((rss_ready - rss_before) / max(1, options.targets), 2)

    load = Load(f"127.0.0.1:{info['ext_proc']}", f"{PROBE}.scale.test", options.rate)
    windows: list[Window] = []
    await _until_warm(load)
    result["probe_warm_s"] = round(time.monotonic() - ready, 2)
    load.start()
    cpu = CpuMeter({"zerohop": zerohop.pid, "emulator": int(info["emulator_pid"])})
    try:
        steps: list[Callable[[], Awaitable[Window]]] = [
            lambda: _sync(options, session, api, statuses, started),
            lambda: _quiet(options),
            lambda: _burst(options, session, api),
            lambda: _routable(options, session, api, f"127.0.0.1:{info['ext_proc']}"),
            lambda: _fetch(options, session, admin, "/metrics", "scrape"),
            lambda: _fetch(options, session, admin, "/status", "status"),
        ]
        for step in steps:
            window = await step()
            window.extra["cpu_s"] = cpu.lap()
            windows.append(window)
        result["rss_end_mib"] = round(_rss_kib(zerohop.pid) / 1024, 1)
    finally:
        await load.stop()
    result["windows"] = {window.name: load.summary(window) for window in windows}
    if options.calls is not None:
        timeline = {
            "windows": [asdict(w) for w in windows],
            "calls": [{"t": round(c.started - started, 4), "ms": round(1000 * c.latency, 2), "outcome": c.outcome}
                      for c in load.calls],
            "bench_lags": [(round(at - started, 3), round(1000 * lag, 1)) for at, lag in load.lags if lag > 0.01],
        }  # fmt: skip
        options.calls.write_text(json.dumps(timeline) + "\n")


async def _sync(
    options: Options, session: aiohttp.ClientSession, api: str, statuses: StatusWatch, zerohop_started: float
) -> Window:
    start = time.monotonic()
    path = f"/apis/keda.sh/v1alpha1/namespaces/{NAMESPACE}/scaledobjects"
    want = options.targets + 1
    count = 0
    extra: dict[str, Any] = {}
    while time.monotonic() - start < options.sync_timeout:
        if count < want:
            count = await _count(session, api, path)
            if count >= want:
                extra["scaledobjects_s_after_start"] = round(time.monotonic() - zerohop_started, 2)
        if "statuses_s_after_start" not in extra and len(statuses.written) >= want:
            extra["statuses_s_after_start"] = round(time.monotonic() - zerohop_started, 2)
        if len(extra) == 2:
            break
        await asyncio.sleep(0.5)
    end = time.monotonic()
    done = count >= want and len(statuses.written) >= want
    extra.update({"scaledobjects": count, "statuses": len(statuses.written), "of": want, "done": done})
    if done:
        extra["all_written_s_after_start"] = round(end - zerohop_started, 2)
    return Window("sync", start, end, extra)


async def _quiet(options: Options) -> Window:
    start = time.monotonic()
    await asyncio.sleep(options.quiet)
    return Window("quiet", start, time.monotonic())


async def _burst(options: Options, session: aiohttp.ClientSession, api: str) -> Window:
    count = min(BURST, options.targets)
    path = f"{api}/apis/{SLICES}/namespaces/{NAMESPACE}/endpointslices"

    async def update(index: int) -> None:
        name = target_name(index)
        body = endpoint_slice(name, [], not_ready_ips=[f"10.1.{index // 250}.{index % 250 + 1}"])
        async with session.put(f"{path}/{name}-abcde", json=body) as response:
            response.raise_for_status()

    start = time.monotonic()
    await asyncio.gather(*(update(i) for i in range(count)))
    sent = time.monotonic()
    await asyncio.sleep(options.settle)
    return Window("burst", start, time.monotonic(), {"updates": count, "send_ms": round(1000 * (sent - start), 1)})


async def _routable(options: Options, session: aiohttp.ClientSession, api: str, address: str) -> Window:
    """Event -> routable: for one cold target at a time, a request held, then its EndpointSlice made ready;
    from the write until the held request is let go."""
    path = f"{api}/apis/{SLICES}/namespaces/{NAMESPACE}/endpointslices"
    released: list[float] = []
    start = time.monotonic()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ep_grpc.ExternalProcessorStub(channel)
        for sample in range(min(ROUTABLE_SAMPLES, options.targets)):
            name = target_name(options.targets - 1 - sample)  # the burst took the first ones
            request = ep.ProcessingRequest.FromString(_headers_request(f"{name}.scale.test"))
            call = stub.Process(iter([request]), timeout=CALL_DEADLINE)
            first = await call.read()  # a held request's first answer extends Envoy's message timeout
            if first is grpc.aio.EOF or not first.HasField("override_message_timeout"):
                raise RuntimeError(f"{name}: not held: {first}")
            written = time.monotonic()
            body = endpoint_slice(name, [f"10.2.{sample // 250}.{sample % 250 + 1}"])
            async with session.put(f"{path}/{name}-abcde", json=body) as response:
                response.raise_for_status()
            answer = await call.read()
            released.append(time.monotonic() - written)
            if answer is grpc.aio.EOF or not answer.HasField("request_headers"):
                raise RuntimeError(f"{name}: the held request was not let go: {answer}")
            await call.code()
    ordered = sorted(released)
    extra = {
        "samples": len(ordered),
        "released_p50_ms": round(1000 * statistics.median(ordered), 1),
        "released_p90_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 1),
        "released_max_ms": round(1000 * ordered[-1], 1),
        "propagation_delay_ms": round(1000 * PROPAGATION_DELAY),
    }
    return Window("routable", start, time.monotonic(), extra)


async def _fetch(options: Options, session: aiohttp.ClientSession, admin: str, path: str, name: str) -> Window:
    timings: list[float] = []
    size = 0
    start = time.monotonic()
    for _ in range(3):
        began = time.monotonic()
        async with session.get(f"{admin}{path}") as response:
            size = len(await response.read())
        timings.append(1000 * (time.monotonic() - began))
        await asyncio.sleep(0.5)
    await asyncio.sleep(options.settle - 0.5)
    extra = {"fetch_ms": [round(t, 1) for t in timings], "bytes": size}
    return Window(name, start, time.monotonic(), extra)


def main(argv: list[str] | None = None) -> None:
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=defaults.targets)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="ext_proc calls per second")
    parser.add_argument(
        "--sync-timeout", type=float, default=defaults.sync_timeout, help="seconds to wait for the leader's sync"
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--workdir", type=Path, help="keep the kubeconfig and the children's logs here")
    parser.add_argument("--calls", type=Path, help="also write every ext_proc call (start, latency, outcome) here")
    parser.add_argument(
        "--report",
        type=Path,
        metavar="PAGE",
        help="measure nothing: write the scale section of PAGE (docs/performance.md) from the RESULTS files",
    )
    parser.add_argument("results", nargs="*", type=Path, help="with --report: --json files, smallest N first")
    parser.add_argument(
        "--before", type=Path, help="with --report: an earlier --json file of the largest N, shown beside it"
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        results = [json.loads(path.read_text()) for path in args.results]
        before = (json.loads(args.before.read_text()), str(args.before)) if args.before is not None else None
        section = render_section(results, [str(path) for path in args.results], before)
        page = args.report.read_text() if args.report.exists() else ""
        args.report.write_text(replace_section(page, section))
        return
    options = Options(
        targets=args.targets, rate=args.rate, sync_timeout=args.sync_timeout, workdir=args.workdir, calls=args.calls
    )
    result = asyncio.run(run(options))
    result["options"] = {k: str(v) for k, v in asdict(options).items()}
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
