"""The setups measured side by side (A to E), each a gateway Envoy in front of the same app Envoy, and the
counters that show what each gateway really did (ext_proc streams, fail-open, zerohop's own counts)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.envoys import app_bootstrap, proxy_bootstrap
from bench.procs import Child, free_port
from bench.zerohop import Target, Zerohop
from extproc.app import grpcenv
from extproc.dev.envoyproc import EnvoyProcess

SETUPS: dict[str, tuple[str, str]] = {
    "A": ("plain gateway", "client -> gateway Envoy -> app. No ext_proc."),
    "B": (
        "gateway + zerohop (warm)",
        "the gateway's ext_proc filter (as `ext_proc_http_filter` builds it) asks a real `zerohop serve` about "
        "each request; the target is warm (min = max = 1 replica, requestRate metric), so zerohop answers "
        "CONTINUE at once. The gateway routes to the shared app Envoy through a static cluster named like the "
        "target's cluster (`outbound|8080||app.default.svc.cluster.local`), which is how zerohop recognises the "
        "request; the target's own replica (a demo app process that keeps it warm) takes no traffic.",
    ),
    "C": (
        "gateway + extra Envoy hop",
        "client -> gateway Envoy -> interceptor Envoy (plain proxy) -> app: the shape of the KEDA HTTP "
        "add-on's interceptor or a scale-to-zero proxy.",
    ),
    "D": (
        "gateway + bare ext_proc, naive",
        "same ext_proc filter, pointing at a minimal grpc.aio servicer (generated stubs, a message built per "
        "request, default asyncio loop): the floor as most people would write it.",
    ),
    "E": (
        "gateway + bare ext_proc, tuned",
        "same ext_proc filter, pointing at a minimal grpc.aio server with zerohop's tricks (uvloop, "
        "pre-serialised CONTINUE, generic handler, read/write, stream ended after the answer, gRPC core on its "
        "own polling rather than EventEngine threads: `extproc.app.grpcenv`).",
    ),
    "F": (
        "gateway + bare ext_proc, tuned, gRPC defaults",
        "E's server with gRPC core's own defaults (EventEngine threads): E against F is what zerohop's gRPC "
        "settings (`extproc.app.grpcenv`) save.",
    ),
}
ALL_SETUPS = tuple(SETUPS)
EXT_PROC_SETUPS = ("B", "D", "E", "F")
# gRPC core settings of the bare servers: E runs with zerohop's (`zerohop serve` sets them itself), F with
# gRPC's own defaults, so E against F is what `extproc.app.grpcenv` buys; D inherits the bench's environment.
_BARE_ENV: dict[str, dict[str, str]] = {
    "E": grpcenv.DEFAULTS,
    "F": {"GRPC_ENABLE_FORK_SUPPORT": "false", "GRPC_EXPERIMENTS": ""},
}
ENVOY_CONCURRENCY = 1
# The warm target of setup B: one replica always up (min = max = 1), counted on request rate so zerohop
# answers each request with a single message, as it would for most targets.
WARM_TARGET = Target(
    name="app",
    min_replicas=1,
    max_replicas=1,
    metric={"requestRate": {"targetValue": 1_000_000, "window": "60s", "granularity": "1s"}},
    startup_delay=0.0,
)


def envoy(bootstrap: dict[str, Any], admin_port: int, workdir: Path) -> EnvoyProcess:
    return EnvoyProcess(bootstrap, admin_port, workdir=workdir, concurrency=ENVOY_CONCURRENCY)


@dataclass
class Setup:
    """One running setup: its gateway, any interceptor, and the Python ext_proc server if it has one."""

    key: str
    port: int
    gateway: EnvoyProcess
    interceptor: EnvoyProcess | None = None
    zerohop: Zerohop | None = None
    bare: Child | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return SETUPS[self.key][0]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def extproc_pid(self) -> int | None:
        if self.zerohop is not None:
            return self.zerohop.pid
        if self.bare is not None:
            return self.bare.pid
        return None

    def pids(self) -> dict[str, int]:
        """The processes whose CPU time is measured, by role."""
        found = {"gateway": _pid(self.gateway)}
        if self.interceptor is not None:
            found["interceptor"] = _pid(self.interceptor)
        if self.extproc_pid is not None:
            found["extproc"] = self.extproc_pid
        return found

    async def counters(self, session: aiohttp.ClientSession) -> dict[str, float]:
        """The gateway's request and ext_proc counters, plus zerohop's own for setup B."""
        found = await envoy_counters(session, self.gateway.admin_url)
        if self.zerohop is not None:
            status = await self.zerohop.status(session)
            target = status["targets"][0]
            for name, value in status["extProc"].items():
                found[f"zerohop.{name}"] = value
            found["zerohop.target.requests"] = target["requests"]
            found["zerohop.target.routable"] = float(target["routable"])
        return found


def _pid(process: EnvoyProcess) -> int:
    assert process.process is not None
    return process.process.pid


async def envoy_counters(session: aiohttp.ClientSession, admin_url: str) -> dict[str, float]:
    """Counters of interest from an Envoy's admin API: downstream requests and ext_proc stream outcomes."""
    url = admin_url + "/stats?format=json&filter=(downstream_rq_|ext_proc)"
    async with session.get(url) as response:
        response.raise_for_status()
        document = await response.json(content_type=None)
    return {
        stat["name"]: float(stat["value"])
        for stat in document.get("stats", [])
        if "name" in stat and isinstance(stat.get("value"), int | float)
    }


async def start_app(stack: AsyncExitStack, workdir: Path) -> tuple[EnvoyProcess, int]:
    port, admin = free_port(), free_port()
    app = envoy(app_bootstrap(port, admin), admin, workdir / "app")
    await app.start()
    stack.push_async_callback(app.stop)
    return app, port


async def start_setup(key: str, stack: AsyncExitStack, workdir: Path, app_port: int) -> Setup:
    """Start setup `key` in front of the app on `app_port`; `stack` stops everything it started."""
    directory = workdir / key
    port, admin = free_port(), free_port()
    if key in ("A", "C"):
        upstream = app_port
        interceptor = None
        if key == "C":
            hop_port, hop_admin = free_port(), free_port()
            interceptor = envoy(
                proxy_bootstrap("interceptor", hop_port, hop_admin, app_port), hop_admin, directory / "hop"
            )
            await interceptor.start()
            stack.push_async_callback(interceptor.stop)
            upstream = hop_port
        gateway = envoy(proxy_bootstrap("gateway", port, admin, upstream), admin, directory / "gateway")
        await gateway.start()
        stack.push_async_callback(gateway.stop)
        return Setup(key, port, gateway, interceptor=interceptor)
    if key == "B":
        zerohop = Zerohop(WARM_TARGET, directory / "zerohop")
        stack.push_async_callback(zerohop.stop)
        await zerohop.start()
        await _wait_routable(zerohop)
        bootstrap = proxy_bootstrap("gateway", port, admin, app_port, ext_proc_port=zerohop.ext_proc_port)
        gateway = envoy(bootstrap, admin, directory / "gateway")
        await gateway.start()
        stack.push_async_callback(gateway.stop)
        return Setup(key, port, gateway, zerohop=zerohop)
    mode = {"D": "naive", "E": "tuned", "F": "tuned"}[key]
    ext_proc_port = free_port()
    bare = Child(
        f"bare ext_proc ({mode})",
        ["-m", "bench.bare_extproc", "--mode", mode, "--port", str(ext_proc_port)],
        directory / "extproc.log",
        env=_BARE_ENV.get(key),
    )
    stack.push_async_callback(bare.stop)
    await bare.start()
    await bare.wait_tcp(ext_proc_port)
    gateway = envoy(
        proxy_bootstrap("gateway", port, admin, app_port, ext_proc_port=ext_proc_port), admin, directory / "gateway"
    )
    await gateway.start()
    stack.push_async_callback(gateway.stop)
    return Setup(key, port, gateway, bare=bare)


async def _wait_routable(zerohop: Zerohop, timeout: float = 30.0) -> None:
    """Setup B's target must be warm before its gateway takes traffic: one replica ready and routable."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert zerohop.child is not None
            zerohop.child.check_alive()
            target = await zerohop.target_status(session)
            if target["routable"]:
                return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"zerohop's target not routable after {timeout:g}s")
