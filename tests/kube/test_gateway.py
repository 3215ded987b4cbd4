"""Kubernetes provider + the real Envoy: a cold request scales the Deployment from zero (scale subresource),
the emulated kubelet marks the endpoint ready, and the request is released through the gateway.

The gateway learns endpoints the way an Istio gateway does, from a control plane: `FakeIstiod` turns the
emulator's EndpointSlices into the gateway's EDS file after `push_delay`, like istiod's debounced push.
That reproduces the propagation gap, so these tests show when held requests get 200 and when they would
get Envoy's `503 no healthy upstream`.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from extproc.core.httpso import parse
from extproc.dev.envoyproc import EnvoyProcess
from extproc.envoy.config import (
    GatewayPorts,
    local_bootstrap,
    route_configuration,
    target_cluster_name,
    target_clusters,
)
from extproc.providers.local.xds_files import XdsFiles
from tests.helpers import free_port, wait_for
from tests.kube.harness import httpso, workload, zerohop
from tests.kube.istio_world import service_endpoints
from tests.kubeemu import KubeEmulator

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = [pytest.mark.kube, pytest.mark.envoy]


class FakeIstiod:
    """Pushes the ready endpoints of one Service to the gateway's EDS file, `push_delay` after they change."""

    def __init__(self, emu: KubeEmulator, files: XdsFiles, cluster: str, service: tuple[str, str], push_delay: float):
        self.emu = emu
        self.files = files
        self.cluster = cluster
        self.service = service
        self.push_delay = push_delay
        self._last: list[tuple[str, int]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._pushes: set[asyncio.Task[None]] = set()

    def endpoints(self) -> list[tuple[str, int]]:
        namespace, name = self.service
        return service_endpoints(self.emu, name, namespace)()

    async def _run(self) -> None:
        while True:
            current = self.endpoints()
            if current != self._last:
                self._last = current
                push = asyncio.create_task(self._push(current))
                self._pushes.add(push)
                push.add_done_callback(self._pushes.discard)
            await asyncio.sleep(0.005)

    async def _push(self, endpoints: list[tuple[str, int]]) -> None:
        await asyncio.sleep(self.push_delay)
        self.files.write_endpoints(self.cluster, endpoints)

    def start(self) -> None:
        self.files.write_endpoints(self.cluster, [])
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in [self._task, *self._pushes]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@contextlib.asynccontextmanager
async def app_process(work: float = 0.0) -> AsyncIterator[int]:
    """The app's pod: always running here; whether the gateway may use it is what EndpointSlices decide.
    Each request takes `work` seconds."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "extproc.dev.demoapp", "--port", str(port), "--startup-delay", "0", "--work", str(work),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(up, 10, 0.02, what="app listening")
        yield port
    finally:
        process.terminate()
        await process.wait()


async def run_cold_requests(
    tmp_path: Path, emu: KubeEmulator, *, push_delay: float, count: int = 10, **zerohop_settings: object
) -> tuple[Counter[int], list[float], int]:
    """Send `count` concurrent cold requests through the gateway; returns statuses, latencies, scale patches."""
    emu.enable_kubelet(ready_delay=0.2)
    document = httpso("app")
    target = parse(document)
    files = XdsFiles(tmp_path / "xds")
    files.write_clusters(target_clusters([target], files.directory))
    files.write_routes(route_configuration([target]))
    cluster = target_cluster_name(target)
    async with app_process() as app_port:
        workload(emu, "app", target_port=app_port)
        emu.create(document)
        istiod = FakeIstiod(emu, files, cluster, ("default", "app"), push_delay)
        istiod.start()
        admin_port, listen_port = free_port(), free_port()
        settings = dict(zerohop_settings)
        if settings.pop("confirm_with_gateway", False):
            settings["envoy_admin"] = (f"http://127.0.0.1:{admin_port}",)
        try:
            async with zerohop(emu, **settings) as server:
                bootstrap = local_bootstrap(
                    GatewayPorts("127.0.0.1", listen_port, admin_port, "127.0.0.1", server.ext_proc_port),
                    files.directory,
                    max_message_timeout=server.settings.max_message_timeout,
                )
                async with (
                    EnvoyProcess(bootstrap, admin_port, workdir=tmp_path / "envoy"),
                    aiohttp.ClientSession() as session,
                ):

                    async def one() -> tuple[int, float]:
                        loop = asyncio.get_running_loop()
                        started = loop.time()
                        async with session.get(
                            f"http://127.0.0.1:{listen_port}/", headers={"Host": "app.test"}
                        ) as reply:
                            await reply.read()
                            return reply.status, loop.time() - started

                    results = await asyncio.gather(*(one() for _ in range(count)))
                    patches = server.provider.scale_patches  # type: ignore[attr-defined]
        finally:
            await istiod.stop()
    return Counter(status for status, _ in results), [t for _, t in results], patches


async def test_cold_request_through_the_gateway_waits_for_the_gateways_own_endpoints(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    statuses, latencies, patches = await run_cold_requests(
        tmp_path, kube_emulator, push_delay=1.0, confirm_with_gateway=True
    )
    assert statuses == {200: 10}
    assert patches == 1
    assert min(latencies) >= 0.2 + 1.0  # the pod's readiness, then istiod's late push


async def test_propagation_delay_covers_a_push_faster_than_it(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    statuses, _latencies, _patches = await run_cold_requests(
        tmp_path, kube_emulator, push_delay=0.1, propagation_delay=0.5
    )
    assert statuses == {200: 10}


async def test_control_a_push_slower_than_the_propagation_delay_gives_503(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    """The gap the gateway check closes: released on EndpointSlice readiness + 0.1 s, pushed after 1 s."""
    statuses, _latencies, _patches = await run_cold_requests(
        tmp_path, kube_emulator, push_delay=1.0, propagation_delay=0.1
    )
    assert statuses[503] > 0, statuses
