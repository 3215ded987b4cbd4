"""East-west: a client pod calls a Service at zero through its own sidecar, which zerohop's sidecar EnvoyFilter
(`zerohop envoyfilter --sidecar --workload-selector app=frontend`) has given the ext_proc filter.

The world: the Kubernetes API emulator with its kubelet; zerohop with the Kubernetes provider; a real Envoy
configured as Istio configures the frontend pod's sidecar (tests/istio_sidecar.py: `virtualOutbound` handing
each connection to `0.0.0.0_8080`, route configuration `8080` with one virtual host per Service port) with the
rendered EnvoyFilter applied as istiod would; `FakeIstiod` pushes the backend's ready endpoints to the sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from extproc.app.server import ZerohopServer
from extproc.core.httpso import parse
from extproc.envoy import istio
from extproc.envoy.config import eds_cluster
from extproc.providers.local.xds_files import XdsFiles
from tests.helpers import wait_for
from tests.istio_sidecar import MeshService, Sidecar, sidecar, static_cluster
from tests.kube.harness import httpso, workload, zerohop
from tests.kube.test_gateway import FakeIstiod, app_process
from tests.kubeemu import KubeEmulator

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = [pytest.mark.kube, pytest.mark.envoy]

FRONTEND = {"app": "frontend"}
BACKEND = MeshService("backend", "default", 8080, "10.96.0.10")
OTHER = MeshService("other", "default", 8080, "10.96.0.11")  # a Service zerohop does not manage


@dataclass
class EastWest:
    emu: KubeEmulator
    server: ZerohopServer
    sidecar: Sidecar

    def requests(self, name: str = "backend") -> int:
        """The requests zerohop counted for target default/NAME."""
        return sum(s.traffic.requests for s in self.server.core.registry if str(s.key) == f"default/{name}")

    def mesh_requests(self, name: str = "backend") -> int:
        """... of which zerohop knew they came through a client's sidecar (not a gateway)."""
        return sum(s.traffic.mesh_requests for s in self.server.core.registry if str(s.key) == f"default/{name}")

    @property
    def streams(self) -> int:
        return self.server.processor.stats.streams

    def replicas(self, name: str = "backend") -> int:
        spec = (self.emu.get("apps/v1", "Deployment", name) or {}).get("spec") or {}
        replicas: int = spec.get("replicas", 0)
        return replicas


@contextlib.asynccontextmanager
async def plain_pod(body: bytes = b"", seen: list[str] | None = None) -> AsyncIterator[int]:
    """A pod zerohop does not manage: a plain HTTP server answering 200 with `body`, and noting the Host of
    each request in `seen` (when given)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        if seen is not None:
            seen.extend(
                line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("host:")
            )
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def east_west(
    tmp_path: Path,
    emu: KubeEmulator,
    envoyfilter: dict[str, Any],
    *,
    labels: dict[str, str] = FRONTEND,
    route_config: dict[str, Any] | None = None,
    services: Sequence[MeshService] = (BACKEND, OTHER),
    clusters: Sequence[dict[str, Any]] = (),
    at_zero: Sequence[MeshService] = (),
    push_delay: float = 0.05,
    propagation_delay: float = 0.5,
    backend: dict[str, Any] | None = None,
) -> AsyncIterator[EastWest]:
    """The world; a test may give the sidecar its own `route_config` (a mirror, a fault) and more `clusters`,
    and add managed Services `at_zero` (each a Deployment at zero, a target, a cluster without endpoints);
    `backend`: the backend's HTTPScaledObject, if not the plain one."""
    emu.enable_kubelet(ready_delay=0.2)
    files = XdsFiles(tmp_path / "xds")
    async with app_process() as app_port, plain_pod(b"other") as other_port:
        workload(emu, "backend", target_port=app_port)
        emu.create(backend or httpso("backend"))
        for service in at_zero:
            workload(emu, service.name, target_port=app_port)
            emu.create(httpso(service.name))
            files.write_endpoints(service.cluster, [])
        istiod = FakeIstiod(emu, files, BACKEND.cluster, ("default", "backend"), push_delay)
        istiod.start()
        all_clusters = [
            eds_cluster(BACKEND.cluster, files.directory),
            static_cluster(OTHER.cluster, [("127.0.0.1", other_port)]),
            *(eds_cluster(service.cluster, files.directory) for service in at_zero),
            *clusters,
        ]
        targets = 1 + len(at_zero)
        try:
            async with (
                zerohop(emu, propagation_delay=propagation_delay) as server,
                sidecar(
                    [envoyfilter],
                    services,
                    labels=labels,
                    ext_proc_port=server.ext_proc_port,
                    clusters=all_clusters,
                    workdir=tmp_path / "envoy",
                    route_config=route_config,
                ) as pod,
            ):
                await wait_for(lambda: sum(1 for _ in server.core.registry) == targets, 10, 0.02, what="targets loaded")
                yield EastWest(emu, server, pod)
        finally:
            await istiod.stop()


def scoped_envoyfilter() -> dict[str, Any]:
    """What `zerohop envoyfilter --sidecar --workload-selector app=frontend backend-httpso.yaml` prints."""
    virtual_hosts, unresolved = istio.sidecar_virtual_hosts([parse(httpso("backend"))])
    assert not unresolved
    assert virtual_hosts == [BACKEND.virtual_host]
    return istio.sidecar_envoyfilter(FRONTEND, virtual_hosts=virtual_hosts)


async def test_a_call_to_a_backend_at_zero_is_held_through_the_sidecar_and_answered(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    async with east_west(tmp_path, kube_emulator, scoped_envoyfilter()) as world:
        assert world.replicas() == 0
        for state in world.server.core.registry:
            state.traffic.mesh_apart = True  # as while the warm path counts it: east-west calls told apart
        # The names a pod in the same namespace may use; all are one virtual host and one cluster.
        hosts = ["backend:8080", "backend", "backend.default", "backend.default.svc.cluster.local:8080"]
        results = await asyncio.gather(*(world.sidecar.call(BACKEND, host=hosts[i % 4]) for i in range(8)))
        assert [status for status, _, _ in results] == [200] * 8
        assert any(headers.get("x-zerohop-cold-start") == "true" for _, headers, _ in results)
        assert world.server.provider.scale_patches == 1  # type: ignore[attr-defined]
        assert world.replicas() == 1
        assert world.requests() == 8
        assert world.mesh_requests() == 8  # Envoy sent the sidecar filter's mesh attribute
        # Warm now: answered at once, still counted.
        status, headers, _ = await world.sidecar.call(BACKEND)
        assert status == 200
        assert "x-zerohop-cold-start" not in headers
        assert world.requests() == 9


async def test_calls_to_an_unmanaged_service_never_reach_zerohop(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    async with east_west(tmp_path, kube_emulator, scoped_envoyfilter()) as world:
        for host in ("other:8080", "other.default.svc.cluster.local"):
            status, _, body = await world.sidecar.call(OTHER, host=host)
            assert (status, body) == (200, b"other")
        assert world.streams == 0
        assert world.replicas() == 0


async def test_control_the_unscoped_sidecar_filter_asks_zerohop_about_every_call(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    """What the scoping saves: without files the filter runs for every outbound call, `other` included."""
    envoyfilter = istio.sidecar_envoyfilter(FRONTEND)
    async with east_west(tmp_path, kube_emulator, envoyfilter) as world:
        status, _, body = await world.sidecar.call(OTHER)
        assert (status, body) == (200, b"other")
        assert world.streams == 1
        assert world.server.processor.stats.unmatched == 1


async def test_a_workload_the_selector_does_not_pick_gets_no_filter(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    """Another client's sidecar (app=checkout) keeps Istio's config: its call to the backend at zero gets
    Envoy's own 503 at once, and nothing wakes the backend."""
    async with east_west(tmp_path, kube_emulator, scoped_envoyfilter(), labels={"app": "checkout"}) as world:
        status, _, _ = await world.sidecar.call(BACKEND)
        assert status == 503
        assert world.streams == 0
        assert world.replicas() == 0


async def test_control_released_before_istiod_pushes_to_the_sidecar_the_call_gets_503(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    """The propagation gap, east-west: zerohop sees no client sidecar's endpoints (no gateway pod or Envoy
    admin to ask here), so it releases after `--propagation-delay`; a push slower than that reaches the
    sidecar too late, and Envoy answers 503 itself (no healthy upstream; Istio's retry policy does not retry
    it). The delay must cover istiod's push to the client sidecars (docs/istio.md)."""
    async with east_west(tmp_path, kube_emulator, scoped_envoyfilter(), push_delay=1.0, propagation_delay=0.1) as world:
        status, headers, _ = await world.sidecar.call(BACKEND)
        assert status == 503
        assert headers.get("x-zerohop-cold-start") == "true"


def with_fallback() -> dict[str, Any]:
    """The backend's HTTPScaledObject with a fallback: Service `other`, after a 1 s hold."""
    return httpso("backend", coldStartTimeoutFailoverRef={"service": "other", "port": 8080, "timeoutSeconds": 1})


@pytest.mark.parametrize("routed", [True, False], ids=["with the failover route", "control: without it"])
async def test_a_call_held_past_its_fallback_timeout_goes_to_the_fallback(
    tmp_path: Path, kube_emulator: KubeEmulator, routed: bool
) -> None:
    """The sidecar filter carries the failover route, first in the backend's virtual host; without it the
    call released to the fallback meets the backend's empty cluster and zerohop answers the 504."""
    target = parse(with_fallback())
    virtual_hosts, _ = istio.sidecar_virtual_hosts([target])
    failovers = istio.sidecar_failover_routes([target]) if routed else []
    envoyfilter = istio.sidecar_envoyfilter(FRONTEND, virtual_hosts=virtual_hosts, failovers=failovers)
    kube_emulator.enable_kubelet(ready_delay=0.2).set_ready_delay("default", "backend", None)  # never ready
    async with east_west(tmp_path, kube_emulator, envoyfilter, backend=with_fallback()) as world:
        status, headers, body = await world.sidecar.call(BACKEND)
        if routed:
            assert (status, body) == (200, b"other")
            assert headers.get("x-zerohop-failover") == "true"
        else:
            assert status == 504
        assert world.server.processor.stats.failovers == 1
