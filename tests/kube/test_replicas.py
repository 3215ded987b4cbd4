"""Three zerohop replicas in one test process (on 127.0.0.1, .2 and .3, as three pods), one answer to KEDA:
counts summed over peers, a cold request on any replica pushed on the KEDA stream held by any other, a silent
peer's last counts used for a bounded time, and exactly one leader writing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from extproc._proto import externalscaler_pb2 as pb
from extproc._proto import externalscaler_pb2_grpc as pb_grpc
from extproc.app.server import ZerohopServer
from tests.helpers import free_port, wait_for
from tests.kube.harness import KEDA, httpso, key, workload, zerohop
from tests.kubeemu import KubeEmulator

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = pytest.mark.kube

NAMESPACE = "zerohop-system"


def own_endpoints(peer_port: int, addresses: list[str]) -> dict[str, object]:
    """What the EndpointSlice controller writes for zerohop's own Service."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "zerohop-abcde",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": "zerohop"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "peers", "port": peer_port, "protocol": "TCP"}, {"name": "scaler", "port": 9090}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


@contextlib.asynccontextmanager
async def replicas(emu: KubeEmulator, count: int = 3, **settings: object) -> AsyncIterator[list[ZerohopServer]]:
    peer_port = free_port()
    addresses = [f"127.0.0.{i + 1}" for i in range(count)]
    emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    emu.create(own_endpoints(peer_port, addresses))
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                zerohop(
                    emu,
                    pod_name=f"zerohop-{i}",
                    pod_ip=address,
                    peer_address=f"{address}:{peer_port}",
                    **settings,
                )
            )
            for i, address in enumerate(addresses)
        ]
        for server in servers:
            await wait_for(lambda s=server: len(s.peers.addresses) == count - 1, 5, what="peers discovered")  # type: ignore[union-attr]
        yield servers


def ref() -> pb.ScaledObjectRef:
    return pb.ScaledObjectRef(name="app", namespace="default", scalerMetadata={"httpScaledObject": "app"})


@contextlib.asynccontextmanager
async def scaler(server: ZerohopServer) -> AsyncIterator[pb_grpc.ExternalScalerAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.scaler_port}") as channel:
        yield pb_grpc.ExternalScalerStub(channel)


class HeldRequests:
    """Cold requests held on one replica, sent over ext_proc as the gateway sends them."""

    def __init__(self, server: ZerohopServer) -> None:
        self.server = server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.ext_proc_port}")
        self.calls: list[object] = []

    async def hold(self, count: int) -> None:
        stub = ep_grpc.ExternalProcessorStub(self.channel)
        headers = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":authority", raw_value=b"app.test")])
        before = self.server.core.cold_gate.held_total
        for _ in range(count):
            call = stub.Process()
            await call.write(ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=headers)))
            await call.read()  # the override_message_timeout zerohop sends when it holds a request
            self.calls.append(call)
        await wait_for(lambda: self.server.core.cold_gate.held_total == before + count, 5, what="held")

    async def release(self) -> None:
        for call in self.calls:
            call.cancel()  # type: ignore[attr-defined]
        await self.channel.close()


async def test_keda_gets_the_sum_over_all_replicas(kube_emulator: KubeEmulator) -> None:
    workload(kube_emulator, "app")
    kube_emulator.create(httpso("app", scalingMetric={"concurrency": {"targetValue": 10}}))
    async with replicas(kube_emulator) as servers:
        first, second = HeldRequests(servers[0]), HeldRequests(servers[1])
        await first.hold(2)
        await second.hold(3)
        for index in range(3):
            async with scaler(servers[index]) as stub:
                spec = await stub.GetMetricSpec(ref())
                request = pb.GetMetricsRequest(scaledObjectRef=ref(), metricName=spec.metricSpecs[0].metricName)
                [value] = (await stub.GetMetrics(request)).metricValues
                assert (value.metricValue, value.metricValueFloat) == (5, 5.0), f"asked replica {index}"
                assert (await stub.IsActive(ref())).result
                # The status document shows what KEDA was told: this replica's counts plus its peers'.
                [target] = servers[index].status()["targets"]
                assert target["allReplicas"]["metricValue"] == 5
                assert target["allReplicas"]["peersCounted"] == 2
        await first.release()
        await second.release()
        await wait_for(lambda: all(s.core.cold_gate.held_total == 0 for s in servers), 5, what="released")
        async with scaler(servers[2]) as stub:
            await asyncio.sleep(0.15)  # past the window in which concurrent KEDA calls share one fetch
            [value] = (await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref()))).metricValues
            assert value.metricValue == 0


async def test_a_target_kept_active_by_the_leaders_warm_path_is_active_on_every_replica(
    kube_emulator: KubeEmulator,
) -> None:
    workload(kube_emulator, "app")
    kube_emulator.create(httpso("app"))
    async with replicas(kube_emulator) as servers:
        for index in range(3):
            async with scaler(servers[index]) as stub:
                assert not (await stub.IsActive(ref())).result, f"asked replica {index}"
        # The warm path of the replica that switches it has the host open: requests may bypass every replica.
        state = servers[0].core.registry.get(key("app"))
        assert state is not None
        state.forced_active = True
        for index in range(3):
            async with scaler(servers[index]) as stub:
                await asyncio.sleep(0.15)  # past the window in which concurrent KEDA calls share one fetch
                assert (await stub.IsActive(ref())).result, f"asked replica {index}"
        state.forced_active = False
        async with scaler(servers[2]) as stub:
            await asyncio.sleep(0.15)
            assert not (await stub.IsActive(ref())).result


async def test_a_cold_request_on_one_replica_pushes_on_the_stream_held_by_another(kube_emulator: KubeEmulator) -> None:
    workload(kube_emulator, "app")
    kube_emulator.create(httpso("app"))
    async with replicas(kube_emulator) as servers, scaler(servers[1]) as stub:
        stream = stub.StreamIsActive(ref())
        pushed: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def listen() -> None:
            async for message in stream:
                if message.result and not pushed.done():
                    pushed.set_result(time.monotonic())

        listener = asyncio.create_task(listen())
        await wait_for(lambda: servers[1].core.bus.subscribers(key("app")) == 1, 5, what="KEDA stream open")
        held = HeldRequests(servers[2])
        sent = time.monotonic()
        await held.hold(1)
        latency = await asyncio.wait_for(pushed, 2) - sent
        print(f"pushed {latency * 1000:.1f} ms after the cold request on another replica")  # -s shows it
        assert latency < 0.05, f"pushed {latency * 1000:.1f} ms after the cold request on another replica"
        await held.release()
        stream.cancel()
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_a_silent_peer_counts_with_its_last_counts_then_not_at_all(kube_emulator: KubeEmulator) -> None:
    workload(kube_emulator, "app")
    kube_emulator.create(httpso("app", scalingMetric={"concurrency": {}}))
    async with replicas(kube_emulator, peer_stale_after=1.0) as servers, scaler(servers[0]) as stub:
        held = HeldRequests(servers[2])
        await held.hold(4)
        [value] = (await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref()))).metricValues
        assert value.metricValue == 4
        assert servers[2]._peer_server is not None
        await servers[2]._peer_server.stop(0)  # replica 2 stops answering its peers
        await asyncio.sleep(0.15)
        [value] = (await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref()))).metricValues
        assert value.metricValue == 4  # its last known counts, within the age limit
        peers = servers[0].peers
        assert peers is not None
        assert peers.answered == 1
        assert peers.fetch_errors >= 1
        await asyncio.sleep(1.1)
        [value] = (await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref()))).metricValues
        assert value.metricValue == 0  # too old to count
        status = servers[0].status()["peers"]
        assert any(p["failures"] >= 1 for p in status["peers"])
        await held.release()


async def test_exactly_one_replica_leads_and_writes(kube_emulator: KubeEmulator) -> None:
    workload(kube_emulator, "app")
    kube_emulator.create(httpso("app"))
    async with replicas(kube_emulator) as servers:
        electors = [s.provider.elector for s in servers]  # type: ignore[attr-defined]
        await wait_for(lambda: sum(e.leading for e in electors) == 1, 10, what="one leader")
        await kube_emulator.wait_for_object(KEDA, "ScaledObject", "app")
        leader = next(i for i, e in enumerate(electors) if e.leading)
        reconcilers = [s.provider.reconciler for s in servers]  # type: ignore[attr-defined]
        # The ScaledObject and the status: the status write may land just after the ScaledObject is seen.
        await wait_for(lambda: reconcilers[leader].writes >= 2, 5, what="the leader's status write")
        writes = [r.writes for r in reconcilers]
        assert [w for i, w in enumerate(writes) if i != leader] == [0, 0]
        lease = kube_emulator.get("coordination.k8s.io/v1", "Lease", "zerohop-leader", NAMESPACE)
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == f"zerohop-{leader}"
        # Followers learn the holder on their next campaign (every retry interval).
        await wait_for(
            lambda: [e.holder for e in electors if not e.leading] == [f"zerohop-{leader}"] * 2,
            5,
            what="followers see it",
        )
