"""The setups measured side by side (A to G), each a gateway Envoy in front of its own copy of the same app
Envoy, and the counters that show what each gateway really did (ext_proc streams, fail-open, zerohop's own counts).

Each setup has its own upstream so that, in the paired low-rate load, every upstream receives the same request
rate: one app shared by six setups wakes six times as often as G's replica and answers faster for it (measured:
about 0.1 ms of p50 at 100 requests a second, between two identical plain gateways, one in front of the shared
app and one in front of an app of its own)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench.envoys import app_bootstrap, app_replica_command, proxy_bootstrap
from bench.procs import Child, free_port
from bench.zerohop import Target, Zerohop
from extproc.app import grpcenv
from extproc.dev.envoyproc import EnvoyProcess, envoy_binary
from extproc.envoy.config import DEFAULT_HOLD_TIMEOUT, GatewayPorts, local_bootstrap, max_message_timeout_for

SETUPS: dict[str, tuple[str, str]] = {
    "A": ("plain gateway", "client -> gateway Envoy -> app. No ext_proc."),
    "B": (
        "gateway + zerohop (warm)",
        "the gateway's ext_proc filter (as `ext_proc_http_filter` builds it) asks a real `zerohop serve` about "
        "each request; the target is warm (min = max = 1 replica, requestRate metric), so zerohop answers "
        "CONTINUE at once. The gateway routes to its app Envoy through a static cluster named like the "
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
    "G": (
        "gateway + zerohop, warm target open",
        "the gateway as `zerohop envoy-bootstrap` builds it (routes, clusters and endpoints from the files "
        "zerohop writes, the ext_proc filter before the router) and `zerohop serve --warm-path open`: once the "
        "target has been warm for `--open-after`, its virtual host skips the ext_proc filter (route "
        "`FilterConfig{disabled}`: Envoy does not create the filter for its requests), so warm requests "
        "never reach zerohop, which counts them from the "
        "gateway's stats (`--stats-interval`, default 1 s). The target's replica is an Envoy with the "
        "app's configuration (its CPU is this setup's `app`), so the gateway routes to it through zerohop's "
        "EDS cluster; its rate window (10 minutes) keeps the host open through the run.",
    ),
}
ALL_SETUPS = tuple(SETUPS)
# The setups whose every request asks a Python ext_proc server (G's warm requests skip it).
EXT_PROC_SETUPS = ("B", "D", "E", "F")
# The setups running `zerohop serve`.
ZEROHOP_SETUPS = ("B", "G")
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


# Setup G's target: as B's, but its replica serves the traffic and its window outlasts a run's idle gaps, so
# the warm path, once open, stays open (a closing would show in the ext_proc stream check).
WARM_OPEN_WINDOW = "600s"
OPEN_AFTER = "0.5s"


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
    # The upstream's pid: the setup's own app Envoy, or G's replica (started by zerohop).
    app_pid: int = 0

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
        found = {"gateway": _pid(self.gateway), "app": self.app_pid}
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
            warm_path = status.get("provider", {}).get("warmPath")
            if warm_path is not None:
                found["zerohop.warm_path.open"] = float(_open(warm_path))
                found["zerohop.warm_path.stats_scrapes"] = float(warm_path["statsScrapes"])
                found["zerohop.warm_path.stats_failures"] = float(warm_path["statsFailures"])
        return found

    async def settle(self, session: aiohttp.ClientSession) -> None:
        """G counts from the gateway's stats every `--stats-interval`: wait for two reads to finish, so
        every request answered before this call is in zerohop's count. Nothing to wait for elsewhere."""
        if self.key != "G" or self.zerohop is None:
            return
        first = await self._scrapes(session)
        deadline = time.monotonic() + 10.0
        while await self._scrapes(session) < first + 2:
            if time.monotonic() > deadline:
                raise TimeoutError("setup G: zerohop read no gateway stats for 10s")
            await asyncio.sleep(0.05)

    async def _scrapes(self, session: aiohttp.ClientSession) -> int:
        assert self.zerohop is not None
        status = await self.zerohop.status(session)
        return int(status["provider"]["warmPath"]["statsScrapes"])

    async def ensure_open(self, session: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        """G's target host must be open (ext_proc disabled, confirmed by the gateway) before it is measured:
        a trickle of requests keeps the target active until zerohop opens it. Nothing to do elsewhere."""
        if self.key != "G" or self.zerohop is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            assert self.zerohop.child is not None
            self.zerohop.child.check_alive()
            status = await self.zerohop.status(session)
            if _open(status["provider"]["warmPath"]):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"setup G: the warm path not open after {timeout:g}s: {status['provider']}")
            async with session.get(self.url) as response:
                await response.read()
            await asyncio.sleep(0.05)


def _open(warm_path: dict[str, Any]) -> bool:
    """Every target's host open, as zerohop's /status reports it (`provider.warmPath`)."""
    targets = warm_path.get("targets", {})
    return bool(targets) and all(target["state"] == "open" for target in targets.values())


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


async def start_app(stack: AsyncExitStack, directory: Path) -> tuple[int, int]:
    """The app Envoy of one setup: (its port, its pid)."""
    port, admin = free_port(), free_port()
    app = envoy(app_bootstrap(port, admin), admin, directory)
    await app.start()
    stack.push_async_callback(app.stop)
    return port, _pid(app)


async def start_setup(key: str, stack: AsyncExitStack, workdir: Path) -> Setup:
    """Start setup `key` in front of an app Envoy of its own; `stack` stops everything it started."""
    directory = workdir / key
    port, admin = free_port(), free_port()
    if key == "G":
        return await _start_open(stack, directory, port, admin)
    app_port, app_pid = await start_app(stack, directory / "app")
    setup = await _start_in_front_of(key, stack, directory, port, admin, app_port)
    setup.app_pid = app_pid
    return setup


async def _start_in_front_of(
    key: str, stack: AsyncExitStack, directory: Path, port: int, admin: int, app_port: int
) -> Setup:
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


async def _start_open(stack: AsyncExitStack, directory: Path, port: int, admin: int) -> Setup:
    """Setup G: `zerohop serve --warm-path open` confirming against this gateway, the gateway reading
    zerohop's xDS files, the target's replica an Envoy serving what every setup's app serves."""
    replica_log = directory / "replica-envoy.log"
    target = replace(
        WARM_TARGET,
        hosts=(),
        metric={"requestRate": {"targetValue": 1_000_000, "window": WARM_OPEN_WINDOW, "granularity": "1s"}},
        command=app_replica_command(str(envoy_binary()), str(replica_log)),
    )
    gateway_admin = f"http://127.0.0.1:{admin}"
    flags = ["--warm-path", "open", "--envoy-admin", gateway_admin, "--open-after", OPEN_AFTER]
    zerohop = Zerohop(target, directory / "zerohop", extra_args=flags)
    stack.push_async_callback(zerohop.stop)
    await zerohop.start()
    ports = GatewayPorts("127.0.0.1", port, admin, "127.0.0.1", zerohop.ext_proc_port)
    bootstrap = local_bootstrap(
        ports, zerohop.xds_dir, max_message_timeout=max_message_timeout_for(DEFAULT_HOLD_TIMEOUT)
    )
    gateway = envoy(bootstrap, admin, directory / "gateway")
    await gateway.start()
    stack.push_async_callback(gateway.stop)
    await _wait_routable(zerohop)
    setup = Setup("G", port, gateway, zerohop=zerohop, app_pid=_pid_of(replica_log))
    async with aiohttp.ClientSession() as session:
        await setup.ensure_open(session)
    return setup


def _pid_of(marker: Path) -> int:
    """The pid of the one process whose command line names `marker` (G's replica, started by zerohop)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(marker).encode() in cmdline.split(b"\0"):
            found.append(int(entry.name))
    if len(found) != 1:
        raise RuntimeError(f"expected one process started with {marker}, found {found}")
    return found[0]


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
