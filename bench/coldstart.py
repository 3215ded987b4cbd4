"""Cold-start overhead: how long after the gateway Envoy can route to a new replica does the held request
get its response? zerohop's part of a cold start, with the app's own boot time taken out.

zerohop runs a target at zero replicas behind a gateway built by `local_bootstrap` from zerohop's xDS files,
with `--envoy-admin` pointing at that gateway. For each sample the bench sends one request to the cold
target and meanwhile polls the gateway's admin API (`/clusters`) back to back from the moment zerohop's EDS
file holds the new endpoint; "loaded" is when a poll first shows it, and the overhead is the response time
minus that. Between samples the autoscaler takes the target back to zero (concurrency metric,
`scaledownPeriod: 1`, `--polling-interval 0.2s`), and the bench waits until zerohop, the gateway and the
replica's port all say it is cold again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import free_port
from bench.zerohop import Target, Zerohop
from extproc.core.httpso import parse as parse_httpso
from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy.adminapi import EnvoyAdmin
from extproc.envoy.config import (
    GatewayPorts,
    eds_file_name,
    local_bootstrap,
    max_message_timeout_for,
    target_cluster_name,
)
from extproc.providers.local.replicas import port_is_free

HOLD_TIMEOUT = 30.0
APP_STARTUP_DELAY = 0.3
WARM_FOLLOW_UPS = 3
EDS_WATCH = 0.0005
COLD_TARGET = Target(
    name="cold",
    min_replicas=0,
    max_replicas=1,
    metric={"concurrency": {"targetValue": 100}},
    startup_delay=APP_STARTUP_DELAY,
    scaledown_period=1,
    probe_period=0.02,
)
# Each sample's cold request must be a first wake, as after a real idle period; zerohop's default (2s)
# would make back-to-back samples wait for the autoscaler's next poll instead of its push.
ZEROHOP_FLAGS = ["--polling-interval", "0.2s", "--hold-timeout", f"{HOLD_TIMEOUT:g}s", "--rewake-interval", "0.5s"]


@dataclass(frozen=True, slots=True)
class Loaded:
    """The first admin poll that showed the endpoint (when it was sent and answered), when the poll before it
    was answered, and when the EDS file was first seen holding the endpoint. The load happened after the
    file was written and before the first poll that showed it was answered."""

    sent: float
    received: float
    previous_received: float
    file_seen: float
    polls: int


@dataclass(frozen=True, slots=True)
class ColdSample:
    """One cold start, in milliseconds. `overhead_ms` counts from the admin poll that first showed the
    endpoint (a lower bound: the load happened before that poll was answered); `overhead_upper_ms` counts
    from when the bench saw the EDS file holding it (an upper bound but for the <= EDS_WATCH it takes the
    bench to notice the file: Envoy cannot load the endpoint before zerohop has written it)."""

    status: int
    cold_header: str
    total_ms: float
    loaded_at_ms: float
    overhead_ms: float
    overhead_upper_ms: float
    poll_gap_ms: float
    polls: int
    warm_ms: list[float]
    wakes: int


def cluster_name() -> str:
    return target_cluster_name(parse_httpso(COLD_TARGET.documents(0)[0]))


def _version(path: Path) -> tuple[int, int] | None:
    """Changes whenever zerohop replaces the file (it renames a new one into place: a new inode)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _has_endpoints(path: Path) -> bool:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return any(group.get("lb_endpoints") for group in document["resources"][0].get("endpoints", []))


async def _first_loaded(admin: EnvoyAdmin, cluster: str, eds_path: Path) -> Loaded:
    # Envoy cannot load the endpoint before zerohop has written it to the EDS file, so the admin API is only
    # polled back to back from then on: spinning on it during the app's boot would slow the boot down on two
    # cores and inflate the total cold latency. Watching the file is a cheap stat() every EDS_WATCH seconds.
    seen: tuple[int, int] | None = None
    while True:
        version = _version(eds_path)
        if version != seen:
            seen = version
            if _has_endpoints(eds_path):
                break
        await asyncio.sleep(EDS_WATCH)
    polls = 0
    file_seen = previous = time.perf_counter()
    while True:
        sent = time.perf_counter()
        hosts = (await admin.cluster_hosts()).get(cluster, [])
        received = time.perf_counter()
        polls += 1
        if any(host.healthy for host in hosts):
            return Loaded(sent, received, previous, file_seen, polls)
        previous = received


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, float]:
    started = time.perf_counter()
    async with session.get(url, headers={"Host": "cold.bench"}) as response:
        await response.read()
        return response.status, response.headers.get("x-zerohop-cold-start", ""), time.perf_counter() - started


async def _wait_cold(
    zerohop: Zerohop, admin: EnvoyAdmin, session: aiohttp.ClientSession, cluster: str, timeout: float = 30.0
) -> int:
    """Wait until the target is back at zero everywhere; returns its wake count."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        target = await zerohop.target_status(session)
        replicas = target["replicas"] or {"desired": 0, "ready": 0}
        if (
            not target["routable"]
            and replicas["desired"] == 0
            and replicas["ready"] == 0
            and not (await admin.cluster_hosts()).get(cluster)
            and port_is_free("127.0.0.1", zerohop.app_port)
        ):
            wakes: int = target["wakes"]
            return wakes
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the cold target did not scale back to zero within {timeout:g}s")


async def _sample(
    zerohop: Zerohop, admin: EnvoyAdmin, session: aiohttp.ClientSession, url: str, cluster: str
) -> ColdSample:
    wakes_before = await _wait_cold(zerohop, admin, session, cluster)
    poller = asyncio.create_task(_first_loaded(admin, cluster, zerohop.xds_dir / eds_file_name(cluster)))
    try:
        started = time.perf_counter()
        status, cold_header, _elapsed = await _get(session, url)
        answered = time.perf_counter()
        loaded = await asyncio.wait_for(poller, HOLD_TIMEOUT)
    finally:
        poller.cancel()
    warm = [(await _get(session, url))[2] * 1000 for _ in range(WARM_FOLLOW_UPS)]
    target = await zerohop.target_status(session)
    return ColdSample(
        status=status,
        cold_header=cold_header,
        total_ms=(answered - started) * 1000,
        loaded_at_ms=(loaded.received - started) * 1000,
        overhead_ms=(answered - loaded.received) * 1000,
        overhead_upper_ms=(answered - loaded.file_seen) * 1000,
        poll_gap_ms=(loaded.received - loaded.previous_received) * 1000,
        polls=loaded.polls,
        warm_ms=warm,
        wakes=target["wakes"] - wakes_before,
    )


async def measure(workdir: Path, samples: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Start zerohop and its gateway, take `samples` cold starts, stop everything; the raw samples and setup."""
    gateway_port, gateway_admin = free_port(), free_port()
    admin_url = f"http://127.0.0.1:{gateway_admin}"
    zerohop = Zerohop(COLD_TARGET, workdir / "zerohop", extra_args=["--envoy-admin", admin_url, *ZEROHOP_FLAGS])
    ports = GatewayPorts("127.0.0.1", gateway_port, gateway_admin, "127.0.0.1", zerohop.ext_proc_port)
    bootstrap = local_bootstrap(ports, zerohop.xds_dir, max_message_timeout=max_message_timeout_for(HOLD_TIMEOUT))
    gateway = EnvoyProcess(bootstrap, gateway_admin, workdir=workdir / "gateway", concurrency=1)
    cluster = cluster_name()
    url = f"http://127.0.0.1:{gateway_port}/"
    results: list[ColdSample] = []
    async with AsyncExitStack() as stack:
        stack.push_async_callback(zerohop.stop)
        await zerohop.start()
        stack.push_async_callback(gateway.stop)
        await gateway.start()
        admin = await stack.enter_async_context(EnvoyAdmin(admin_url))
        session = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)))
        for index in range(samples):
            sample = await _sample(zerohop, admin, session, url, cluster)
            results.append(sample)
            progress(
                f"cold start {index + 1}/{samples}: HTTP {sample.status} after {sample.total_ms:.0f} ms, "
                f"{sample.overhead_ms:.1f} ms after the gateway loaded the replica"
            )
        final_status = await zerohop.status(session)
    return {
        "target": COLD_TARGET.documents(zerohop.app_port),
        "zerohop_flags": ZEROHOP_FLAGS,
        "app_startup_delay": APP_STARTUP_DELAY,
        "samples": [asdict(sample) for sample in results],
        "zerohop_ext_proc": final_status["extProc"],
    }
