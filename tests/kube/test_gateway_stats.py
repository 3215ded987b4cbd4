"""On Istio, held requests go when every gateway pod can route, as each pod's own Envoy stats say.

The world: the Kubernetes API emulator with its kubelet (the app turns ready 0.2 s after it is scaled),
zerohop with the Kubernetes provider and the shipped defaults (`--propagation-delay 0.5s`, stats on the
gateway pods' stats port, no `--envoy-admin`), and one or two real Envoy gateway pods configured as Istio
configures them (tests/istio_gateway.py: Istio's stats tags and inclusion list plus the shipped
`proxyStatsMatcher`, the stats listener on POD_IP, zerohop's EnvoyFilter). `Istiod` (tests/kube/istio_world.py)
plays istiod: it pushes the Service's ready endpoints into each pod's EDS file, each pod after its own lag. No
KEDA acts on the push; zerohop scales the Deployment from zero itself (`--scale-on-wake`).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from extproc.app.server import ZerohopServer
from extproc.envoy import istio
from extproc.envoy.config import istio_cluster_name
from tests.helpers import free_port
from tests.istio_gateway import GatewayPod
from tests.kube.harness import gateway_pod_object, httpso, ready_condition, workload, zerohop
from tests.kube.istio_world import Istiod, gateway_pods, service_endpoints
from tests.kube.test_gateway import app_process
from tests.kubeemu import KubeEmulator

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = [pytest.mark.kube, pytest.mark.envoy]

HOST = "app.test"
CLUSTER = istio_cluster_name("app", "default", 8080)
ROUTES = {HOST: ("app", "default", 8080)}
POD_IPS = ("127.0.1.2", "127.0.1.3")


@dataclass
class World:
    server: ZerohopServer
    pods: list[GatewayPod]
    istiod: Istiod
    session: aiohttp.ClientSession

    async def get(self, pod: GatewayPod | None = None) -> tuple[int, float, float]:
        """One request through a gateway pod: (status, sent, answered) on the loop's clock."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        async with self.session.get((pod or self.pods[0]).gateway_url + "/", headers={"Host": HOST}) as reply:
            await reply.read()
            return reply.status, sent, loop.time()


@contextlib.asynccontextmanager
async def world(
    tmp_path: Path,
    emu: KubeEmulator,
    lags: Sequence[float],
    *,
    stats_inclusion: bool = True,
    **settings: Any,
) -> AsyncIterator[World]:
    emu.enable_kubelet(ready_delay=0.2, address_for=lambda *_: "127.0.0.1")
    stats_port = free_port()
    async with app_process() as app_port:
        workload(emu, "app", target_port=app_port)
        emu.create(httpso("app", replicas={"min": 0, "max": 1}))
        for index, ip in enumerate(POD_IPS[: len(lags)]):
            emu.create(gateway_pod_object(f"istio-ingressgateway-{index}", ip))
        options = {"propagation_delay": 0.5, "gateway_stats_port": stats_port, "hold_timeout": 15.0, **settings}
        async with zerohop(emu, **options) as server, contextlib.AsyncExitStack() as stack:
            pods = await gateway_pods(
                stack,
                tmp_path,
                istio.envoyfilter(),
                ROUTES,
                POD_IPS[: len(lags)],
                ext_proc_port=server.ext_proc_port,
                stats_port=stats_port,
                stats_inclusion=stats_inclusion,
            )
            istiod = Istiod(emu, list(zip(pods, lags, strict=True)), {CLUSTER: service_endpoints(emu, "app")})
            session = await stack.enter_async_context(aiohttp.ClientSession())
            async with istiod.running():
                yield World(server, pods, istiod, session)


def added_after_push(results: list[tuple[int, float, float]], pushed: float) -> list[float]:
    return [answered - pushed for _status, _sent, answered in results]


@pytest.mark.parametrize("lag", [0.3, 0.8, 2.0])
async def test_cold_requests_wait_for_the_gateway_pods_stats(
    tmp_path: Path, kube_emulator: KubeEmulator, lag: float
) -> None:
    async with world(tmp_path, kube_emulator, [lag]) as w:
        results = await asyncio.gather(*(w.get() for _ in range(5)))
        statuses = Counter(status for status, _, _ in results)
        assert statuses == {200: 5}, statuses
        pushed = w.istiod.pushed_at[POD_IPS[0]]
        added = added_after_push(results, pushed)
        assert min(added) >= 0, "released before the gateway pod had the endpoint"
        assert statistics.median(added) <= 0.05, added
        assert w.server.provider.scale_patches == 1  # type: ignore[attr-defined]
        print(f"lag {lag}s: zerohop added {statistics.median(added) * 1000:.1f} ms p50 after the push")


async def test_two_gateway_pods_release_only_when_both_have_the_endpoint(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    async with world(tmp_path, kube_emulator, [0.3, 1.5]) as w:
        fast, slow = w.pods
        results = await asyncio.gather(*(w.get(pod) for pod in (fast, slow, fast, slow)))
        assert Counter(status for status, _, _ in results) == {200: 4}
        slow_push = w.istiod.pushed_at[slow.pod_ip]
        assert w.istiod.pushed_at[fast.pod_ip] < slow_push
        assert min(answered for _, _, answered in results) >= slow_push


async def load(w: World, total: int, concurrency: int) -> Counter[int]:
    """`total` requests from `concurrency` clients, as `hey -n total -c concurrency` would send them."""
    statuses: Counter[int] = Counter()
    remaining = iter(range(total))

    async def client() -> None:
        for _ in remaining:
            status, _, _ = await w.get()
            statuses[status] += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


async def test_the_journeys_load_through_a_cold_start_has_no_error(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    async with world(tmp_path, kube_emulator, [0.8]) as w:
        statuses = await load(w, 3000, 50)
        assert statuses == {200: 3000}, statuses
        assert w.server.processor.stats.not_routed == 0


async def test_without_the_stats_inclusion_only_the_first_release_fails(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    """No inclusion: zerohop falls back to --propagation-delay (0.5 s) with istiod at 1.0 s. The first
    release (ready + 0.5 s) meets the gateway's own 503; then new requests are held again, and the next
    guess waits twice as long (ready + 1.5 s) and lets one request go first. Both sides have 0.5 s of margin
    against a busy machine."""
    async with world(tmp_path, kube_emulator, [1.0], stats_inclusion=False) as w:
        first = await asyncio.gather(*(w.get() for _ in range(5)))
        statuses = await load(w, 1000, 50)
        failed_first = sum(status == 503 for status, _, _ in first)
        assert failed_first == 5, first  # released at ready + 0.5 s, pushed at ready + 1.0 s
        assert statuses == {200: 1000}, statuses
        # Every one seen and counted as the gateway's own 503, though Envoy ends each stream as soon as it has
        # zerohop's answer to the response headers (the servicer judges before answering).
        assert w.server.processor.stats.not_routed == failed_first
        stats = w.server.provider.gateway_stats  # type: ignore[attr-defined]
        assert stats is not None
        assert stats.blind_pods() == ["istio-ingressgateway-0"]
        assert w.server.core.cold_gate.release_failures >= 1
        gateway = w.server.status()["provider"]["gateway"]
        assert gateway["pods"][0]["stats"] == "no-stats"


async def test_blind_gateway_pods_show_in_the_httpscaledobject_status(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    async with world(tmp_path, kube_emulator, [0.3], stats_inclusion=False) as w:
        [(status, _, _)] = [await w.get()]
        assert status == 200  # istiod (0.3 s) is faster than the fallback delay (0.5 s)

        def condition() -> dict[str, Any] | None:
            obj = kube_emulator.get("http.keda.sh/v1alpha1", "HTTPScaledObject", "app") or {}
            found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "GatewayVisible"]
            return found[0] if found and found[0]["status"] == "False" else None

        visible = await kube_emulator.wait_until(condition, 5.0, message="GatewayVisible False")
        assert visible["reason"] == "GatewayStatsUnavailable"
        assert "istio-ingressgateway-0" in visible["message"]
        ready = ready_condition(kube_emulator, "app")
        assert ready is not None
        assert ready["status"] == "True"
