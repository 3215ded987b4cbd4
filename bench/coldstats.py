"""Cold-start overhead on Istio's path: zerohop confirms that the gateway can route from each gateway pod's own
Envoy stats (`POD_IP:15090/stats/prometheus`, `envoy_cluster_membership_healthy`), not from an admin API.

End to end, as on a cluster but on one machine:
- the Kubernetes API is the emulator of the tests (`tests.kubeemu`, in the bench process), with its fake
  kubelet: a Deployment scaled 0 -> 1 gets a replica that turns ready after `READY_DELAY` seconds, and the
  Service's EndpointSlice follows. The replica's address is a demo app process that runs throughout;
- zerohop is a real `zerohop serve --provider kubernetes` process reading that API through a kubeconfig, with
  the shipped defaults for this path (stats on each Ready gateway pod's stats port, `--propagation-delay` only
  as the fallback) and scale-on-wake: its own scale patch is what wakes the Deployment;
- the gateway is one real Envoy configured as Istio configures a gateway pod (`tests.istio_gateway`: Istio's
  stats tags and inclusion list plus the shipped `proxyStatsMatcher`, the stats listener on the pod IP, the
  EnvoyFilter zerohop ships, an EDS cluster read from a file), run with `--concurrency 1` like every Envoy of
  the bench; a Pod object in the API (Ready, `istio=ingressgateway`, that IP) is how zerohop finds it;
- the bench plays istiod: `ISTIOD_LAG` after the Service's ready endpoints change it writes them into the
  pod's EDS file (`push`), the known instant the measurement starts from.

For each sample the bench waits until the target is cold everywhere, sends one request through the gateway
pod, and from the push on polls the pod's stats back to back (as the admin-API row polls `/clusters`): the
first answer showing `membership_healthy` 1 is "loaded". Between samples it plays KEDA's scale-down
(`spec.replicas: 0`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import Child, free_port
from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy import istio
from extproc.envoy.config import istio_cluster_name
from extproc.envoy.stats import MEMBERSHIP_HEALTHY, StatsClient, StatsEndpoint, cluster_filter, parse_cluster_stats
from extproc.providers.kubernetes.endpoints import ready_addresses, slice_port, slice_service
from tests.istio_gateway import GatewayPod, istio_gateway_pod_bootstrap, prepare_endpoints
from tests.kube.harness import gateway_pod_object, httpso, workload
from tests.kubeemu import KubeEmulator

HOLD_TIMEOUT = 30.0
# The replica's readiness delay, as the admin-API row's demo app boots in 0.3 s.
READY_DELAY = 0.3
# istiod pushes an endpoint change after its debounce (PILOT_DEBOUNCE_AFTER, 100 ms by default); zerohop, which
# watches the same EndpointSlices, is then already polling the pod's stats when the push lands.
ISTIOD_LAG = 0.1
ISTIOD_WATCH = 0.002
WARM_FOLLOW_UPS = 3
NAME = "cold"
HOST = "cold.bench"
SERVICE = (NAME, "default", 8080)
CLUSTER = istio_cluster_name(*SERVICE)
POD_NAME = "istio-ingressgateway-0"
# A loopback address of its own, as a pod has its own IP (the stats port is then the same on every pod).
POD_IP = "127.0.9.2"
ZEROHOP_FLAGS = ["--hold-timeout", f"{HOLD_TIMEOUT:g}s", "--rewake-interval", "0.5s"]


@dataclass(frozen=True, slots=True)
class StatsSample:
    """One cold start on the gateway-pod-stats path, in milliseconds from the request being sent.
    `overhead_ms` counts from the first stats answer showing `membership_healthy` >= 1 (a lower bound: the pod
    loaded the endpoint before that answer); `overhead_push_ms` counts from istiod's push, the EDS file renamed
    into place (an upper bound: Envoy cannot load the endpoint before it is written)."""

    status: int
    cold_header: str
    total_ms: float
    pushed_at_ms: float
    loaded_at_ms: float
    overhead_ms: float
    overhead_push_ms: float
    load_ms: float
    poll_gap_ms: float
    polls: int
    warm_ms: list[float]
    wakes: int


@dataclass
class Istiod:
    """Pushes the Service's ready endpoints into the pod's EDS file `ISTIOD_LAG` after they change, and says
    when it last pushed a non-empty set (`perf_counter`)."""

    emu: KubeEmulator
    pod: GatewayPod
    pushed: list[tuple[float, list[tuple[str, int]]]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def endpoints(self) -> list[tuple[str, int]]:
        found = []
        for endpoint_slice in self.emu.list("discovery.k8s.io/v1", "EndpointSlice", "default"):
            port = slice_port(endpoint_slice)
            if slice_service(endpoint_slice) == ("default", NAME) and port is not None:
                found.extend((address, port) for address in ready_addresses(endpoint_slice)[0])
        return sorted(found)

    async def _push(self, endpoints: list[tuple[str, int]]) -> None:
        await asyncio.sleep(ISTIOD_LAG)
        self.pod.push(CLUSTER, endpoints)
        self.pushed.append((time.perf_counter(), endpoints))
        self.changed.set()
        self.changed = asyncio.Event()

    async def run(self) -> None:
        last: list[tuple[str, int]] = []
        pushes: set[asyncio.Task[None]] = set()
        try:
            while True:
                current = self.endpoints()
                if current != last:
                    last = current
                    push = asyncio.create_task(self._push(current))
                    pushes.add(push)
                    push.add_done_callback(pushes.discard)
                await asyncio.sleep(ISTIOD_WATCH)
        finally:
            for push in pushes:
                push.cancel()

    def current(self) -> list[tuple[str, int]]:
        return self.pushed[-1][1] if self.pushed else []

    async def next_push(self, after: int) -> float:
        """When the first push of a non-empty endpoint set after the `after` first pushes happened."""
        while True:
            for when, endpoints in self.pushed[after:]:
                if endpoints:
                    return when
            await self.changed.wait()


@dataclass(frozen=True, slots=True)
class Loaded:
    sent: float
    received: float
    previous_received: float
    polls: int


async def _healthy_members(client: StatsClient, endpoint: StatsEndpoint) -> float:
    text = await client.fetch_text(endpoint, cluster_filter([CLUSTER], [MEMBERSHIP_HEALTHY]))
    return parse_cluster_stats(text, [MEMBERSHIP_HEALTHY]).get((MEMBERSHIP_HEALTHY, CLUSTER), 0.0)


async def _first_loaded(client: StatsClient, endpoint: StatsEndpoint, pushed: asyncio.Future[float]) -> Loaded:
    # The pod cannot load the endpoint before istiod has written it, so its stats are only polled from then on
    # (spinning on them during the replica's start would only load the two CPUs).
    previous = await pushed
    polls = 0
    while True:
        sent = time.perf_counter()
        healthy = await _healthy_members(client, endpoint)
        received = time.perf_counter()
        polls += 1
        if healthy >= 1:
            return Loaded(sent, received, previous, polls)
        previous = received


class World:
    """The emulated API, zerohop, the gateway pod, the app and istiod, started in `running`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stats_port = free_port()
        self.ext_proc_port, self.admin_port = free_port(), free_port()
        self.app_port = free_port()
        gateway_port, gateway_admin = free_port(), free_port()
        self.pod = GatewayPod(POD_IP, self.stats_port, gateway_port, gateway_admin, workdir / "gateway" / "xds")
        self.stats = StatsEndpoint(POD_IP, self.stats_port)
        self.emu = KubeEmulator(bookmark_interval=1.0)
        self.istiod = Istiod(self.emu, self.pod)
        self.zerohop: Child | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def url(self) -> str:
        return self.pod.gateway_url + "/"

    def zerohop_argv(self, kubeconfig: Path) -> list[str]:
        return [
            "-m", "extproc", "serve",
            "--provider", "kubernetes",
            "--kubeconfig", str(kubeconfig),
            "--pod-name", "zerohop-0",
            "--ext-proc-address", f"127.0.0.1:{self.ext_proc_port}",
            "--scaler-address", f"127.0.0.1:{free_port()}",
            "--admin-address", f"127.0.0.1:{self.admin_port}",
            "--peer-address", f"127.0.0.1:{free_port()}",
            "--gateway-stats-port", str(self.stats_port),
            "--log-level", "warning",
            *ZEROHOP_FLAGS,
        ]  # fmt: skip

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[World]:
        async with contextlib.AsyncExitStack() as stack:
            app = Child(
                "app",
                ["-m", "extproc.dev.demoapp", "--port", str(self.app_port), "--startup-delay", "0"],
                self.workdir / "app.log",
            )
            stack.push_async_callback(app.stop)
            await app.start()
            await app.wait_http_ok(f"http://127.0.0.1:{self.app_port}/")

            emu = await stack.enter_async_context(self.emu)
            emu.enable_kubelet(ready_delay=READY_DELAY, address_for=lambda *_: "127.0.0.1")
            workload(emu, NAME, target_port=self.app_port)
            emu.create(httpso(NAME, hosts=[HOST], replicas={"min": 0, "max": 1}))
            emu.create(gateway_pod_object(POD_NAME, POD_IP))
            kubeconfig = emu.kubeconfig(self.workdir / "kubeconfig")

            self.zerohop = Child("zerohop", self.zerohop_argv(kubeconfig), self.workdir / "zerohop.log")
            stack.push_async_callback(self.zerohop.stop)
            await self.zerohop.start()
            await self.zerohop.wait_http_ok(self.admin_url + "/readyz")

            prepare_endpoints(self.pod.xds_dir, {HOST: SERVICE})
            bootstrap = istio_gateway_pod_bootstrap(
                istio.envoyfilter(hold_timeout=HOLD_TIMEOUT),
                {HOST: SERVICE},
                pod_ip=POD_IP,
                xds_dir=self.pod.xds_dir,
                ext_proc_port=self.ext_proc_port,
                admin_port=self.pod.admin_port,
                listen_port=self.pod.listen_port,
                stats_port=self.stats_port,
            )
            gateway = EnvoyProcess(bootstrap, self.pod.admin_port, workdir=self.workdir / "gateway", concurrency=1)
            stack.push_async_callback(gateway.stop)
            await gateway.start()

            istiod = asyncio.create_task(self.istiod.run())
            stack.push_async_callback(_cancel, istiod)
            yield self


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _status(session: aiohttp.ClientSession, admin_url: str) -> dict[str, Any]:
    async with session.get(admin_url + "/status") as response:
        response.raise_for_status()
        document: dict[str, Any] = await response.json()
        return document


async def _target(session: aiohttp.ClientSession, admin_url: str) -> dict[str, Any]:
    targets: list[dict[str, Any]] = (await _status(session, admin_url))["targets"]
    [target] = [t for t in targets if t["name"] == f"default/{NAME}"]
    return target


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, float]:
    started = time.perf_counter()
    async with session.get(url, headers={"Host": HOST}) as response:
        await response.read()
        return response.status, response.headers.get("x-zerohop-cold-start", ""), time.perf_counter() - started


async def _wait_cold(
    world: World, client: StatsClient, session: aiohttp.ClientSession, timeout: float = 30.0
) -> dict[str, Any]:
    """Scale the Deployment to zero (KEDA's part) and wait until zerohop, the API, istiod and the gateway pod
    all say the target is cold; returns zerohop's view of the target."""
    world.emu.patch("apps/v1", "Deployment", NAME, {"spec": {"replicas": 0}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        target = await _target(session, world.admin_url)
        replicas = target["replicas"] or {"desired": 0, "ready": 0}
        if (
            not target["routable"]
            and replicas["desired"] == 0
            and replicas["ready"] == 0
            and not world.istiod.endpoints()
            and not world.istiod.current()
            and await _healthy_members(client, world.stats) == 0
        ):
            return target
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the cold target did not scale back to zero within {timeout:g}s")


async def _sample(world: World, client: StatsClient, session: aiohttp.ClientSession) -> StatsSample:
    wakes_before = (await _wait_cold(world, client, session))["wakes"]
    pushes_before = len(world.istiod.pushed)
    push = asyncio.ensure_future(world.istiod.next_push(pushes_before))
    poller = asyncio.ensure_future(_first_loaded(client, world.stats, push))
    try:
        started = time.perf_counter()
        status, cold_header, _elapsed = await _get(session, world.url)
        answered = time.perf_counter()
        loaded = await asyncio.wait_for(poller, HOLD_TIMEOUT)
        pushed = push.result()
    finally:
        poller.cancel()
        push.cancel()
    warm = [(await _get(session, world.url))[2] * 1000 for _ in range(WARM_FOLLOW_UPS)]
    target = await _target(session, world.admin_url)
    return StatsSample(
        status=status,
        cold_header=cold_header,
        total_ms=(answered - started) * 1000,
        pushed_at_ms=(pushed - started) * 1000,
        loaded_at_ms=(loaded.received - started) * 1000,
        overhead_ms=(answered - loaded.received) * 1000,
        overhead_push_ms=(answered - pushed) * 1000,
        load_ms=(loaded.received - pushed) * 1000,
        poll_gap_ms=(loaded.received - loaded.previous_received) * 1000,
        polls=loaded.polls,
        warm_ms=warm,
        wakes=target["wakes"] - wakes_before,
    )


async def measure(workdir: Path, samples: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Start the world, take `samples` cold starts through the gateway pod, stop everything."""
    world = World(workdir)
    results: list[StatsSample] = []
    client = StatsClient()
    try:
        async with world.running(), aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for index in range(samples):
                sample = await _sample(world, client, session)
                results.append(sample)
                progress(
                    f"cold start (gateway pod stats) {index + 1}/{samples}: HTTP {sample.status} after "
                    f"{sample.total_ms:.0f} ms, {sample.overhead_push_ms:.1f} ms after the push, "
                    f"{sample.overhead_ms:.1f} ms after the pod's stats showed the endpoint"
                )
            final_status = await _status(session, world.admin_url)
    finally:
        await client.close()
    gateway = final_status["provider"].get("gateway") or {}
    return {
        "zerohop_flags": ZEROHOP_FLAGS,
        "ready_delay": READY_DELAY,
        "istiod_lag": ISTIOD_LAG,
        "cluster": CLUSTER,
        "samples": [asdict(sample) for sample in results],
        "zerohop_ext_proc": final_status["extProc"],
        "gateway": {
            "confirmations": gateway.get("confirmations", {}),
            "pods": [{"name": pod["name"], "stats": pod["stats"]} for pod in gateway.get("pods", [])],
        },
    }
