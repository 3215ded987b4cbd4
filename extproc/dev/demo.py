"""`zerohop demo`: a real Envoy gateway, zerohop (`zerohop serve --warm-path open`, local provider) and a
sample app at zero replicas. It sends one cold request, a few warm ones, a burst, then goes idle, and prints a
timeline of what happened: how long the cold request was held, the warm path opening (warm requests skip
zerohop) and gated again when idle, how replicas followed the load, and the scale back to zero.

`zerohop demo --canary`: two versions of the app behind one host, split 80/20 by Envoy (`zerohop.dev/weight`),
both at zero; a burst wakes each by its own share, the timeline shows each version's replicas, and the summary
the split the clients saw. Both print the status page's URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from extproc.core.background import BackgroundTasks
from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy.config import GatewayPorts, local_bootstrap, max_message_timeout_for
from extproc.providers.local.replicas import port_is_free

HOST = "demo.localhost"
HOLD_TIMEOUT = 30.0
BURST_RATE = 40
BURST_SECONDS = 6
TARGET_PER_REPLICA = 10
MAX_REPLICAS = 3
SCALEDOWN_PERIOD = 5
# --warm-path open: short enough to see the host open within the demo's warm requests and burst.
OPEN_AFTER = 1.0
STATS_INTERVAL = 0.25
WARM_PATH_EVENTS = {
    "opening": "warm path: opening (zerohop writes the virtual host without ext_proc)",
    "open": "warm path: open (the gateway loaded it): warm requests now skip zerohop, counted from Envoy's stats",
    "closing": "warm path: closing: idle, so the host gets ext_proc back before any scale to zero",
    "gated": "warm path: gated (the gateway loaded it): the next cold request will be held",
}

CONFIG_HEADER = """\
# The demo's config for `zerohop serve --config`: one HTTPScaledObject, exactly as on Kubernetes,
# and a LocalWorkload saying how to run one replica of it as a local process.
"""
# One app (or one version of it) for `zerohop serve --config`: its HTTPScaledObject and its LocalWorkload.
# {annotations} is empty or the metadata line a canary's version adds; {app_args}, what else the app is told.
WORKLOAD = """\
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: {name}
  namespace: default
{annotations}spec:
  hosts: [{host}]
  scaleTargetRef: {{name: {name}, service: {name}, port: 8080}}
  replicas: {{min: 0, max: {max_replicas}}}
  scalingMetric:
    requestRate: {{targetValue: {target}, window: 5s, granularity: 1s}}
  scaledownPeriod: {scaledown}
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata:
  name: {name}
  namespace: default
spec:
  command: [{python}, -m, extproc.dev.demoapp, --port, "{{port}}", --startup-delay, "{startup_delay}"{app_args}]
  portRange: {first_port}-{last_port}
  readinessProbe: {{httpGet: {{path: /}}, periodSeconds: 0.02}}
"""


CANARY_HOST = "canary.localhost"
CANARY_VERSIONS = (("backend-v1", 80), ("backend-v2", 20))
CANARY_MAX_REPLICAS = 4
CANARY_HEADER = """\
# The canary demo's config for `zerohop serve --config`: two versions of one app, each its own HTTPScaledObject
# (exactly as on Kubernetes, plus a zerohop.dev/weight annotation) and LocalWorkload, behind one host.
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def free_port_range(count: int, start: int = 18080) -> int:
    for first in range(start, 60000, count):
        if all(port_is_free("127.0.0.1", port) for port in range(first, first + count)):
            return first
    raise RuntimeError("no free range of local ports for the demo app")


class Timeline:
    """Prints `t+ seconds  event` lines relative to the demo's start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.start

    def say(self, message: str) -> None:
        print(f"  {self.now():6.2f}s  {message}", flush=True)


@dataclass
class ReplicaWatch:
    """Follows every target's replicas and the warm path through zerohop's /status and reports each change
    (a line per target, named when there are several, as in the canary)."""

    status_url: str
    timeline: Timeline
    last: dict[str, tuple[int, int]] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    history: list[tuple[float, str, int, int]] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)  # what zerohop counted per target (what KEDA reads)
    at_zero: asyncio.Event = field(default_factory=asyncio.Event)
    path: str = "gated"
    path_history: list[tuple[float, str]] = field(default_factory=list)
    streams: int = 0  # ext_proc streams Envoy opened to zerohop, at the last read

    def _follow_path(self, status: dict[str, Any]) -> None:
        self.streams = int(status.get("extProc", {}).get("streams", 0))
        targets: dict[str, dict[str, Any]] = status.get("provider", {}).get("warmPath", {}).get("targets", {})
        path = str(next(iter(targets.values()), {}).get("state", "gated"))
        if path != self.path:
            self.path = path
            self.path_history.append((self.timeline.now(), path))
            self.timeline.say(WARM_PATH_EVENTS.get(path, f"warm path: {path}"))

    def opened_at(self) -> float | None:
        return next((t for t, path in self.path_history if path == "open"), None)

    def gated_again_at(self) -> float | None:
        opened = self.opened_at()
        if opened is None:
            return None
        return next((t for t, path in self.path_history if path == "gated" and t > opened), None)

    def all_at_zero(self) -> bool:
        return bool(self.last) and all(current == (0, 0) for current in self.last.values())

    def zero_at(self) -> float | None:
        """When the last target went back to zero (None: not all are at zero)."""
        if not self.all_at_zero():
            return None
        return max((t for t, _name, desired, _ready in self.history if desired == 0), default=None)

    def _follow_replicas(self, targets: list[dict[str, Any]]) -> None:
        for target in targets:
            name = str(target["name"]).removeprefix("default/")
            self.requests[name] = int(target.get("requests", 0))
            replicas = target["replicas"] or {"desired": 0, "ready": 0}
            current = (replicas["desired"], replicas["ready"])
            if current != self.last.get(name):
                self.last[name] = current
                self.peak[name] = max(self.peak.get(name, 0), current[1])
                self.history.append((self.timeline.now(), name, *current))
                label = f"{name} replicas" if len(targets) > 1 else "replicas"
                self.timeline.say(f"{label}: {current[0]} desired, {current[1]} ready")
        if self.all_at_zero() and all(self.peak.get(name) for name in self.last) and self.path == "gated":
            self.at_zero.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(self.status_url) as response:
                    status = await response.json()
                self._follow_path(status)
                self._follow_replicas(status["targets"])
            await asyncio.sleep(0.02)


async def _get(session: aiohttp.ClientSession, url: str, host: str) -> tuple[int, float, dict[str, str], str]:
    started = time.monotonic()
    async with session.get(url, headers={"Host": host}) as response:
        body = await response.text()
        return response.status, time.monotonic() - started, dict(response.headers), body.strip()


async def _wait_ready(session: aiohttp.ClientSession, url: str, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.returncode is not None:
            tail = await asyncio.to_thread(log.read_text)
            raise RuntimeError(f"zerohop exited with {process.returncode}:\n{tail[-2000:]}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.05)
    tail = await asyncio.to_thread(log.read_text)
    raise TimeoutError(f"zerohop not ready after 20s:\n{tail[-2000:]}")


async def run_demo(
    port: int = 10000, keep_running: bool = False, startup_delay: float = 0.5, canary: bool = False
) -> int:
    """`zerohop demo` (`canary`: `zerohop demo --canary`); the exit status says whether it went as told."""
    if not port_is_free("127.0.0.1", port):
        print(f"zerohop demo: port {port} is in use; pick another with --port", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="zerohop-demo-"))
    try:
        return await _run_in(workdir, port, keep_running, startup_delay, canary)
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


def _config(startup_delay: float, canary: bool) -> str:
    """The config file: the demo's one app, or (`canary`) each version with its weight; a version also tells
    its app its name, so its answers say which version answered."""
    versions: tuple[tuple[str, int | None], ...] = CANARY_VERSIONS if canary else (("demo", None),)
    max_replicas = CANARY_MAX_REPLICAS if canary else MAX_REPLICAS
    documents = []
    start = 18080
    for name, weight in versions:
        first = free_port_range(max_replicas, start)
        start = first + max_replicas
        documents.append(
            WORKLOAD.format(
                name=name,
                annotations="" if weight is None else f'  annotations: {{zerohop.dev/weight: "{weight}"}}\n',
                host=CANARY_HOST if canary else HOST,
                max_replicas=max_replicas,
                target=TARGET_PER_REPLICA,
                scaledown=SCALEDOWN_PERIOD,
                python=sys.executable,
                startup_delay=startup_delay,
                app_args="" if weight is None else f", --name, {name}",
                first_port=first,
                last_port=first + max_replicas - 1,
            )
        )
    return (CANARY_HEADER if canary else CONFIG_HEADER) + "---\n".join(documents)


async def _run_in(workdir: Path, port: int, keep_running: bool, startup_delay: float, canary: bool) -> int:
    envoy_admin, ext_proc, scaler, admin = free_port(), free_port(), free_port(), free_port()
    config = workdir / "config.yaml"
    config.write_text(_config(startup_delay, canary))
    xds_dir = workdir / "xds"
    zerohop_log = workdir / "zerohop.log"
    command = [
        sys.executable, "-m", "extproc", "serve",
        "--config", str(config),
        "--state-dir", str(workdir),
        "--xds-dir", str(xds_dir),
        "--envoy-admin", f"http://127.0.0.1:{envoy_admin}",
        "--ext-proc-address", f"127.0.0.1:{ext_proc}",
        "--scaler-address", f"127.0.0.1:{scaler}",
        "--admin-address", f"127.0.0.1:{admin}",
        "--polling-interval", "0.25s",
        "--hold-timeout", f"{HOLD_TIMEOUT:g}s",
        "--warm-path", "open",
        "--open-after", f"{OPEN_AFTER:g}s",
        "--stats-interval", f"{STATS_INTERVAL:g}s",
    ]  # fmt: skip
    with zerohop_log.open("ab") as log_file:
        zerohop = await asyncio.create_subprocess_exec(*command, stdout=log_file, stderr=subprocess.STDOUT)
    bootstrap = local_bootstrap(
        GatewayPorts("127.0.0.1", port, envoy_admin, "127.0.0.1", ext_proc),
        xds_dir,
        max_message_timeout=max_message_timeout_for(HOLD_TIMEOUT),
    )
    envoy = EnvoyProcess(bootstrap, envoy_admin, workdir=workdir / "envoy", concurrency=2)
    timeout = aiohttp.ClientTimeout(total=HOLD_TIMEOUT + 10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await _wait_ready(session, f"http://127.0.0.1:{admin}/readyz", zerohop, zerohop_log)
            await envoy.start()
            scenario = _canary_scenario if canary else _scenario
            return await scenario(session, port, admin, startup_delay, workdir, keep_running)
    finally:
        await envoy.stop()
        if zerohop.returncode is None:
            zerohop.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(zerohop.wait(), 20)
            except TimeoutError:
                zerohop.kill()
                await zerohop.wait()


def _where(url: str, host: str, admin: int, workdir: Path) -> str:
    """The lines every demo starts with saying where things are: the gateway, the status page, the files."""
    return (
        f"  gateway      {url}  (Host: {host})\n"
        f"  status page  http://127.0.0.1:{admin}/  (open it in a browser while the demo runs; JSON: /status)\n"
        f"  files        {workdir} (config.yaml, zerohop.log, envoy/envoy.log, xds/; removed at exit)\n"
    )


async def _burst(session: aiohttp.ClientSession, url: str, host: str) -> tuple[dict[int, int], list[float], list[str]]:
    """BURST_RATE requests a second for BURST_SECONDS: each status's count, the latencies (ms) and bodies."""
    codes: dict[int, int] = {}
    latencies: list[float] = []
    bodies: list[str] = []

    async def one() -> None:
        code, took, _h, body = await _get(session, url, host)
        codes[code] = codes.get(code, 0) + 1
        latencies.append(took * 1000)
        bodies.append(body)

    tasks = []
    for _ in range(BURST_RATE * BURST_SECONDS):
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(1 / BURST_RATE)
    await asyncio.gather(*tasks)
    return codes, latencies, bodies


async def _scenario(
    session: aiohttp.ClientSession, port: int, admin: int, startup_delay: float, workdir: Path, keep_running: bool
) -> int:
    url = f"http://127.0.0.1:{port}/"
    print(
        "\nzerohop demo: a real Envoy gateway with zerohop's ext_proc filter (warm path open: a warm host skips "
        "it), and a sample app at zero replicas\n\n"
        + _where(url, HOST, admin, workdir)
        + f"  app          python -m extproc.dev.demoapp (boots in {startup_delay:g}s), 0..{MAX_REPLICAS} replicas, "
        f"scaled on request rate, target {TARGET_PER_REPLICA} req/s per replica\n"
    )
    timeline = Timeline()
    watch = ReplicaWatch(f"http://127.0.0.1:{admin}/status", timeline)
    background = BackgroundTasks()
    background.spawn(watch.run(session), name="demo replica watch")
    try:
        await asyncio.sleep(0.2)
        timeline.say(f"-> cold request GET {url}")
        status, elapsed, headers, body = await _get(session, url, HOST)
        cold = headers.get("x-zerohop-cold-start", "absent")
        timeline.say(
            f"<- {status} after {elapsed * 1000:.0f} ms held by zerohop (x-zerohop-cold-start: {cold}): {body}"
        )
        cold_ms = elapsed * 1000

        warm = []
        for _ in range(5):
            status, elapsed, headers, _body = await _get(session, url, HOST)
            warm.append(elapsed * 1000)
        timeline.say("-> 5 warm requests: " + ", ".join(f"{ms:.1f}" for ms in warm) + " ms (no hold, no extra hop)")

        timeline.say(f"-> burst: {BURST_RATE} req/s for {BURST_SECONDS}s")
        streams_before = watch.streams
        codes, latencies, _bodies = await _burst(session, url, HOST)
        p50 = statistics.median(latencies)
        await asyncio.sleep(0.1)  # the watch's next read of /status
        asked = watch.streams - streams_before
        timeline.say(
            f"<- burst done: {dict(sorted(codes.items()))}, p50 {p50:.1f} ms, {asked} of {len(latencies)} "
            "asked zerohop; now idle"
        )

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.at_zero.wait(), 60)
        opened, gated, zero_at = watch.opened_at(), watch.gated_again_at(), watch.zero_at()
        gated_first = opened is not None and gated is not None and zero_at is not None and gated < zero_at
        print(
            "\nsummary\n"
            f"  cold start: the first request was held {cold_ms:.0f} ms (app boot {startup_delay:g}s) and "
            "answered 200, not 503\n"
            f"  warm requests: median {statistics.median(warm):.1f} ms through the gateway\n"
            f"  burst: peak {max(watch.peak.values(), default=0)} replica(s) for {BURST_RATE} req/s at "
            f"{TARGET_PER_REPLICA} req/s each (max {MAX_REPLICAS}); {sum(codes.values())} requests, "
            f"{codes.get(200, 0)} x 200\n" + _path_line(watch, opened, gated, gated_first) + _zero_line(zero_at)
        )
        if keep_running:
            print(f"left running; try:  curl -i -H 'Host: {HOST}' {url}   (Ctrl-C to stop)\n")
            await _wait_forever()
        return 0 if codes.get(200, 0) == sum(codes.values()) and zero_at is not None and gated_first else 1
    finally:
        await background.close()


def _path_line(watch: ReplicaWatch, opened: float | None, gated: float | None, gated_first: bool) -> str:
    if gated_first and opened is not None and gated is not None:
        return f"  warm path: open at t+{opened:.1f}s, gated again at t+{gated:.1f}s, before the scale to zero\n"
    return "  warm path: did not open and close again before the scale to zero\n"


def _zero_line(zero_at: float | None) -> str:
    if zero_at is not None:
        return f"  idle: back to zero replicas at t+{zero_at:.1f}s\n"
    return "  idle: did not reach zero replicas within 60s\n"


async def _canary_scenario(
    session: aiohttp.ClientSession, port: int, admin: int, startup_delay: float, workdir: Path, keep_running: bool
) -> int:
    url = f"http://127.0.0.1:{port}/"
    split = " / ".join(f"{name} {weight}%" for name, weight in CANARY_VERSIONS)
    print(
        "\nzerohop demo --canary: a real Envoy gateway splitting one host between two versions of an app, "
        f"{split} (zerohop.dev/weight), both at zero replicas; Envoy picks the version, zerohop reads which it "
        "picked, so each version wakes and scales by its own share\n\n"
        + _where(url, CANARY_HOST, admin, workdir)
        + f"  versions     python -m extproc.dev.demoapp --name VERSION (boots in {startup_delay:g}s), "
        f"0..{CANARY_MAX_REPLICAS} replicas each, scaled on request rate, target {TARGET_PER_REPLICA} req/s "
        "per replica\n"
    )
    timeline = Timeline()
    watch = ReplicaWatch(f"http://127.0.0.1:{admin}/status", timeline)
    background = BackgroundTasks()
    background.spawn(watch.run(session), name="demo replica watch")
    names = [name for name, _weight in CANARY_VERSIONS]
    try:
        await asyncio.sleep(0.2)
        timeline.say(f"-> {BURST_RATE} req/s for {BURST_SECONDS}s to {CANARY_HOST}, both versions at zero")
        codes, latencies, bodies = await _burst(session, url, CANARY_HOST)
        answered = {name: sum(1 for body in bodies if body.startswith(f"hello from {name} ")) for name in names}
        total = max(1, sum(answered.values()))
        timeline.say(
            f"<- done: {dict(sorted(codes.items()))}, p50 {statistics.median(latencies):.1f} ms; answered by "
            + ", ".join(f"{name} {n} ({100 * n / total:.0f}%)" for name, n in answered.items())
            + "; now idle"
        )
        await asyncio.sleep(2 * STATS_INTERVAL + 0.1)  # the gateway's counts of warm requests reach zerohop
        timeline.say(
            "   zerohop counted (what KEDA reads): " + ", ".join(f"{n} {watch.requests.get(n, 0)}" for n in names)
        )
        peaks = dict(watch.peak)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.at_zero.wait(), 60)
        opened, gated, zero_at = watch.opened_at(), watch.gated_again_at(), watch.zero_at()
        gated_first = opened is not None and gated is not None and zero_at is not None and gated < zero_at
        woke = {name: watch.peak.get(name, 0) > 0 for name in names}
        print(
            "\nsummary\n"
            "  split: the clients saw "
            + " / ".join(f"{name} {100 * answered[name] / total:.1f}%" for name in names)
            + f" of {sum(codes.values())} requests ({codes.get(200, 0)} x 200); asked for {split}\n"
            + "".join(
                f"  {name}: {'woke from zero by its own requests' if woke[name] else 'never woke'}, peak "
                f"{peaks.get(name, 0)} replica(s) for its share (~{BURST_RATE * weight / 100:g} req/s)\n"
                for name, weight in CANARY_VERSIONS
            )
            + _path_line(watch, opened, gated, gated_first)
            + _zero_line(zero_at)
        )
        if keep_running:
            print(f"left running; try:  curl -H 'Host: {CANARY_HOST}' {url}   (Ctrl-C to stop)\n")
            await _wait_forever()
        ok = codes.get(200, 0) == sum(codes.values()) and all(woke.values()) and zero_at is not None and gated_first
        return 0 if ok else 1
    finally:
        await background.close()


async def _wait_forever() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
