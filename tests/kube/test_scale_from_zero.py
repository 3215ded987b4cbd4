"""`--scale-on-wake` (the default) against an API server that sends a Scale at zero replicas as `spec: {}`, as a
real one does: a cold request sent over ext_proc scales its workload to max(1, replicas.min) by itself and is
released once it is ready. Nothing here plays KEDA, so zerohop's own write is the only thing that can wake it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from extproc.app.server import ZerohopServer
from tests.helpers import wait_for
from tests.kube.harness import httpso, workload, zerohop
from tests.kubeemu import KubeEmulator
from tests.kubeemu.manifests import service, statefulset

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = pytest.mark.kube

Call = grpc.aio.StreamStreamCall[ep.ProcessingRequest, ep.ProcessingResponse]


@contextlib.asynccontextmanager
async def cold_request(server: ZerohopServer, host: str) -> AsyncIterator[Call]:
    """One request for `host` sent over ext_proc as the gateway sends it; yields the call once zerohop holds it."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.ext_proc_port}") as channel:
        call = ep_grpc.ExternalProcessorStub(channel).Process()
        headers = [(":authority", host), (":path", "/"), (":method", "GET")]
        header_map = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers])
        await call.write(ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=header_map)))
        held = await call.read()
        assert held.HasField("override_message_timeout"), held  # held, not answered at once
        try:
            yield call
        finally:
            call.cancel()


def scale_spec(emu: KubeEmulator, kind: str, name: str) -> object:
    """The `spec` of a workload's Scale as the emulator serves it."""
    return emu.api.get(emu.resource("apps/v1", kind), "default", name, "scale")["spec"]


async def released(call: Call) -> bool:
    """Whether zerohop's next answer lets the held request through (a headers response, not an error)."""
    answer: ep.ProcessingResponse = await asyncio.wait_for(call.read(), 10)
    assert answer is not grpc.aio.EOF, "the stream ended"
    return bool(answer.WhichOneof("response") == "request_headers")


@pytest.mark.parametrize(("min_replicas", "woken"), [(0, 1), (3, 3)])
async def test_a_cold_request_scales_a_deployment_at_zero(
    kube_emulator: KubeEmulator, min_replicas: int, woken: int
) -> None:
    emu = kube_emulator
    emu.enable_kubelet(ready_delay=0.1)
    workload(emu, "app")
    emu.create(httpso("app", replicas={"min": min_replicas, "max": 5}))
    assert scale_spec(emu, "Deployment", "app") == {}
    async with zerohop(emu) as server, cold_request(server, "app.test") as call:
        scaled = await emu.wait_for_object(
            "apps/v1", "Deployment", "app", predicate=lambda d: d["spec"]["replicas"] != 0
        )
        assert scaled["spec"]["replicas"] == woken
        assert await released(call)
        assert server.provider.scale_patches == 1  # type: ignore[attr-defined]


async def test_a_cold_request_scales_a_statefulset_at_zero(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    emu.enable_kubelet(ready_delay=0.1)
    emu.create(statefulset("db", replicas=0))
    emu.create(service("db", ports=[{"name": "http", "port": 8080, "targetPort": 18080, "protocol": "TCP"}]))
    ref = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "service": "db", "port": 8080}
    emu.create(httpso("db", scaleTargetRef=ref))
    assert scale_spec(emu, "StatefulSet", "db") == {}
    async with zerohop(emu) as server, cold_request(server, "db.test") as call:
        await emu.wait_for_object("apps/v1", "StatefulSet", "db", predicate=lambda s: s["spec"]["replicas"] == 1)
        assert await released(call)
        assert server.provider.scale_patches == 1  # type: ignore[attr-defined]


async def test_a_cold_request_leaves_a_workload_that_is_starting_alone(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    emu.enable_kubelet(ready_delay=None)  # two replicas wanted, none ready: cold, but not at zero
    workload(emu, "app")
    emu.patch("apps/v1", "Deployment", "app", {"spec": {"replicas": 2}})
    emu.create(httpso("app"))
    async with zerohop(emu) as server, cold_request(server, "app.test"):
        await wait_for(lambda: bool(emu.requests_matching(path_contains="/deployments/app/scale")), 5, what="wake")
        await asyncio.sleep(0.2)
        assert emu.requests_matching("PUT", path_contains="/deployments/app/scale") == []
        assert emu.get("apps/v1", "Deployment", "app")["spec"]["replicas"] == 2  # type: ignore[index]
        assert server.provider.scale_patches == 0  # type: ignore[attr-defined]
