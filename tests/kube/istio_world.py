"""The Istio gateway world the kube tests share: real Envoy gateway pods (tests/istio_gateway.py), `Istiod`
playing istiod for them from what the API emulator holds, and `gateway_world`, which runs zerohop with the
Kubernetes provider (leader, managing the EnvoyFilter, scaling from zero itself) in front of two such pods.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import grpc

from extproc._proto import externalscaler_pb2 as pb
from extproc._proto import externalscaler_pb2_grpc as pb_grpc
from extproc.app.server import ZerohopServer
from extproc.core.httpso import TargetKey
from extproc.core.warmpath import PathState
from extproc.envoy import istio
from extproc.providers.kubernetes.endpoints import ready_addresses, slice_port, slice_service
from extproc.providers.kubernetes.provider import KubernetesProvider
from tests.helpers import free_port, wait_for
from tests.istio_gateway import GatewayPod, Routes, gateway_pod
from tests.kube.harness import gateway_pod_object, zerohop
from tests.kubeemu import KubeEmulator

ENVOYFILTER = ("networking.istio.io/v1alpha3", "EnvoyFilter", istio.ENVOYFILTER_NAME)

EndpointSource = Callable[[], list[tuple[str, int]]]


def current_envoyfilter(emu: KubeEmulator) -> dict[str, Any] | None:
    """zerohop's EnvoyFilter for the gateways, as the API server holds it now."""
    return emu.get(*ENVOYFILTER, namespace=istio.GATEWAY_NAMESPACE)


def service_endpoints(emu: KubeEmulator, service: str, namespace: str = "default") -> EndpointSource:
    """The ready endpoints of a Service, from its EndpointSlices (what istiod gives the Service's cluster)."""

    def read() -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        for endpoint_slice in emu.list("discovery.k8s.io/v1", "EndpointSlice", namespace):
            port = slice_port(endpoint_slice)
            if slice_service(endpoint_slice) == (namespace, service) and port is not None:
                found.extend((address, port) for address in ready_addresses(endpoint_slice)[0])
        return sorted(found)

    return read


@dataclass
class Istiod:
    """Pushes each cluster's endpoints (from `clusters`) to each gateway pod, each pod `lag` seconds after they
    change (its own lag: `pods` pairs a pod with it); with `envoyfilters`, also each pod's route configuration
    with zerohop's current EnvoyFilter applied (the pods run with dynamic routes)."""

    emu: KubeEmulator
    pods: Sequence[tuple[GatewayPod, float]]
    clusters: Mapping[str, EndpointSource]
    envoyfilters: bool = False
    pushed_at: dict[str, float] = field(default_factory=dict)  # pod IP -> when it first got any endpoint
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _run(self) -> None:
        last: dict[str, list[tuple[str, int]]] = {}
        spec: Any = None
        while True:
            for cluster, source in self.clusters.items():
                current = source()
                if current != last.get(cluster):
                    last[cluster] = current
                    for pod, lag in self.pods:
                        self._spawn(self._push(pod, lag, cluster, current))
            document = current_envoyfilter(self.emu) if self.envoyfilters else None
            if document is not None and document["spec"] != spec:
                spec = document["spec"]
                for pod, lag in self.pods:
                    self._spawn(self._push_routes(pod, lag, document))
            await asyncio.sleep(0.002)

    async def _push(self, pod: GatewayPod, lag: float, cluster: str, endpoints: list[tuple[str, int]]) -> None:
        await asyncio.sleep(lag)
        pod.push(cluster, endpoints)
        if endpoints:
            self.pushed_at.setdefault(pod.pod_ip, asyncio.get_running_loop().time())

    async def _push_routes(self, pod: GatewayPod, lag: float, envoyfilter: dict[str, Any]) -> None:
        await asyncio.sleep(lag)
        pod.push_routes(envoyfilter)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Istiod]:
        self._spawn(self._run())
        try:
            yield self
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass
class GatewayWorld:
    """What `gateway_world` runs, and what the tests read of it: the gateway pods' own counters, what KEDA reads
    from the scaler API, the warm path's state."""

    emu: KubeEmulator
    server: ZerohopServer
    pods: list[GatewayPod]
    session: aiohttp.ClientSession
    scaler: pb_grpc.ExternalScalerStub

    @property
    def provider(self) -> KubernetesProvider:
        assert isinstance(self.server.provider, KubernetesProvider)
        return self.server.provider

    async def upstream_requests(self, cluster: str, *, on_every_pod: bool = False) -> int:
        """Requests the gateway pods sent to `cluster`: the sum of their own `upstream_rq_total` (`on_every_pod`:
        each pod must have that counter)."""
        total = 0
        for pod in self.pods:
            async with self.session.get(pod.stats_url("upstream_rq_total")) as reply:
                text = await reply.text()
            lines = [line for line in text.splitlines() if f'cluster_name="{cluster}"' in line]
            assert (len(lines) == 1) if on_every_pod else (len(lines) <= 1), f"{pod.pod_ip}'s {cluster}: {lines}"
            total += int(float(lines[0].rsplit(" ", 1)[1])) if lines else 0
        return total

    @staticmethod
    def ref(name: str) -> pb.ScaledObjectRef:
        return pb.ScaledObjectRef(name=name, namespace="default", scalerMetadata={"httpScaledObject": name})

    async def metric(self, name: str) -> float:
        """What KEDA reads for `name`: the metric GetMetricSpec names, from GetMetrics."""
        [spec] = (await self.scaler.GetMetricSpec(self.ref(name))).metricSpecs
        request = pb.GetMetricsRequest(scaledObjectRef=self.ref(name), metricName=spec.metricName)
        return float((await self.scaler.GetMetrics(request)).metricValues[0].metricValueFloat)

    def path_state(self, name: str) -> PathState:
        switch = self.provider.warm_switch
        assert switch is not None
        return switch.warm.target_state(TargetKey("default", name))

    async def after_two_more_scrapes(self) -> None:
        """Returns once zerohop has read the gateway pods' stats twice more (all they counted so far is in)."""
        switch = self.provider.warm_switch
        assert switch is not None
        target = switch.health.scrapes + 2
        await wait_for(lambda: switch.health.scrapes >= target, 10, 0.02, what="two more stats reads")


World = TypeVar("World", bound=GatewayWorld)


async def gateway_pods(
    stack: contextlib.AsyncExitStack,
    tmp_path: Path,
    envoyfilter: Mapping[str, Any],
    routes: Routes,
    pod_ips: Sequence[str],
    **options: Any,
) -> list[GatewayPod]:
    """A gateway pod at each of `pod_ips` (`gateway_pod` with `options`), each in its own directory under
    `tmp_path`, stopped when `stack` closes."""
    return [
        await stack.enter_async_context(gateway_pod(envoyfilter, routes, pod_ip=ip, workdir=tmp_path / ip, **options))
        for ip in pod_ips
    ]


@contextlib.asynccontextmanager
async def gateway_world(
    tmp_path: Path,
    emu: KubeEmulator,
    world: type[World],
    routes: Routes,
    clusters: Mapping[str, EndpointSource],
    pod_ips: Sequence[str],
    *,
    lag: float = 0.3,
    **settings: Any,
) -> AsyncIterator[World]:
    """zerohop and a gateway pod on dynamic routes at each of `pod_ips` (`routes`: their route configuration
    before zerohop's EnvoyFilter), `Istiod` pushing `clusters` and the EnvoyFilter to them `lag` seconds after
    each change. `settings` go over zerohop's (the shipped propagation delay, stats on the pods' stats port,
    probes on their listener, a 15 s hold)."""
    stats_port, listen_port = free_port(), free_port()
    for index, ip in enumerate(pod_ips):
        emu.create(gateway_pod_object(f"istio-ingressgateway-{index}", ip))
    options: dict[str, Any] = {
        "gateway_stats_port": stats_port,
        "gateway_probe_port": listen_port,
        "gateway_ports": (80,),
        "manage_envoyfilters": True,
        "manage_scaledobjects": False,
        "leader_election": False,
        "scale_on_wake": True,
        "hold_timeout": 15.0,
        "propagation_delay": 0.5,
        **settings,
    }
    async with zerohop(emu, **options) as server, contextlib.AsyncExitStack() as stack:
        envoyfilter = await emu.wait_for_object(*ENVOYFILTER, namespace=istio.GATEWAY_NAMESPACE)
        pods = await gateway_pods(
            stack,
            tmp_path,
            envoyfilter,
            routes,
            pod_ips,
            ext_proc_port=server.ext_proc_port,
            stats_port=stats_port,
            listen_port=listen_port,
            dynamic_routes=True,
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{server.scaler_port}"))
        istiod = Istiod(emu, [(pod, lag) for pod in pods], clusters, envoyfilters=True)
        await stack.enter_async_context(istiod.running())
        yield world(emu, server, pods, session, pb_grpc.ExternalScalerStub(channel))
