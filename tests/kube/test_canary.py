"""A canary on Istio needs no change to the user's route: zerohop maps the cluster the gateway's weighted split
already chose to the target, so each version is woken by, counted for and scaled by its own share.

The world: the Kubernetes API emulator with its kubelet, zerohop with the Kubernetes provider (scaling from zero
itself, `--scale-on-wake`), two real Envoy gateway pods configured as Istio configures them
(tests/istio_gateway.py) whose route for `backend.test` is the weighted split istiod renders from a
VirtualService with weighted destinations or an HTTPRoute with two backendRefs, and `Istiod`
(tests/kube/istio_world.py), which plays istiod: each pod gets every cluster's ready endpoints and the route
configuration with zerohop's current EnvoyFilter applied, `lag` seconds after either changes.

Two Services (`backend-v1`, `backend-v2`, each its Deployment at zero and its HTTPScaledObject) split 80/20 by
the clusters `outbound|8080||backend-vN.default.svc.cluster.local`. The counts KEDA reads (GetMetrics, for the
metric GetMetricSpec names) must equal what each gateway pod's own `upstream_rq_total` says it sent to each
cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from extproc.core.httpso import TargetKey
from extproc.core.warmpath import PathState, WarmPathMode
from extproc.envoy.config import istio_cluster_name
from extproc.providers.kubernetes.endpoints import slice_port, slice_service
from tests.helpers import wait_for
from tests.istio_gateway import Routes, Split
from tests.kube.harness import httpso, workload
from tests.kube.istio_world import EndpointSource, GatewayWorld, gateway_world, service_endpoints
from tests.kube.test_gateway import app_process
from tests.kubeemu import KubeEmulator
from tests.kubeemu.manifests import deployment, service

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = [pytest.mark.kube, pytest.mark.envoy]

HOST = "backend.test"
POD_IPS = ("127.0.1.8", "127.0.1.9")
V1, V2 = "backend-v1", "backend-v2"  # the two versions, as two Services or two subsets of one
# One bucket of a day: GetMetrics' request rate is then every request counted so far (unless the test runs
# across a multiple of 24 h of the monotonic clock), which is what the gateway's counters are compared with.
WHOLE_RUN = {"requestRate": {"targetValue": 100, "window": "24h", "granularity": "24h"}}


@dataclass
class World(GatewayWorld):
    sent: int = 0

    async def get(self) -> tuple[int, str]:
        """One request through the gateway pods, round robin: (status, body)."""
        pod = self.pods[self.sent % len(self.pods)]
        self.sent += 1
        async with self.session.get(pod.gateway_url + "/", headers={"Host": HOST}) as reply:
            return reply.status, await reply.text()

    async def send(self, count: int, clients: int = 20) -> tuple[list[int], list[BaseException]]:
        statuses: list[int] = []
        errors: list[BaseException] = []
        remaining = iter(range(count))

        async def client() -> None:
            for _ in remaining:
                try:
                    statuses.append((await self.get())[0])
                except aiohttp.ClientError as exc:
                    errors.append(exc)

        await asyncio.gather(*(client() for _ in range(clients)))
        return statuses, errors

    async def active(self, name: str) -> bool:
        return bool((await self.scaler.IsActive(self.ref(name))).result)

    def replicas(self, name: str) -> int:
        deployment = self.emu.get("apps/v1", "Deployment", name) or {}
        return int(deployment.get("spec", {}).get("replicas") or 0)


@contextlib.asynccontextmanager
async def running_world(
    tmp_path: Path,
    emu: KubeEmulator,
    routes: Routes,
    clusters: dict[str, EndpointSource],
    *,
    warm_path: WarmPathMode = WarmPathMode.EXT_PROC,
    lag: float = 0.3,
) -> AsyncIterator[World]:
    options: dict[str, Any] = {"warm_path": warm_path}
    if warm_path is WarmPathMode.OPEN:
        options.update(open_after=0.5, stats_interval=0.1)
    async with gateway_world(tmp_path, emu, World, routes, clusters, POD_IPS, lag=lag, **options) as w:
        yield w


async def assert_counts_match_the_gateway(w: World, versions: dict[str, str]) -> dict[str, int]:
    """For each version (name -> cluster), GetMetrics equals the gateway pods' `upstream_rq_total`."""
    counts = {}
    for name, cluster in versions.items():
        sent = await w.upstream_requests(cluster)
        assert await w.metric(name) == sent, (name, cluster, sent)
        counts[name] = sent
    return counts


async def assert_only_v1_woken_and_counted(w: World, cluster_v1: str, sent: int) -> None:
    """After `sent` requests to a split that gives backend-v2 nothing: v2 is still at zero, inactive and counted
    nothing; v1 is counted exactly what the gateway pods sent to `cluster_v1`, every request."""
    assert w.replicas(V2) == 0
    assert not await w.active(V2)
    assert await w.metric(V2) == 0
    assert await w.metric(V1) == await w.upstream_requests(cluster_v1) == sent


async def assert_an_80_20_split_wakes_both_and_counts_each_share(w: World, versions: dict[str, str]) -> None:
    """What an 80/20 split of 1000 requests over versions (name -> cluster) both at zero must do, two Services
    or two subsets of one alike."""
    [v1, v2] = versions
    assert w.replicas(v1) == w.replicas(v2) == 0
    statuses, errors = await w.send(1000)
    assert not errors
    assert statuses.count(200) == 1000, {s: statuses.count(s) for s in set(statuses)}
    # Both woken from zero, each by its own share.
    assert w.replicas(v1) >= 1
    assert w.replicas(v2) >= 1
    counts = await assert_counts_match_the_gateway(w, versions)
    assert counts[v1] + counts[v2] == 1000
    assert 700 <= counts[v1] <= 900, counts  # the gateway's random 80/20 choice, far from its tails


async def assert_the_warm_path_opens_and_counts_each_version_from_the_gateways(
    w: World, versions: dict[str, str]
) -> None:
    """With the warm path open-able and versions (name -> cluster) split 80/20: the host opens once both are
    warm, and every request is counted for its version from the gateway pods' stats, warm ones included."""
    [v1, v2] = versions
    cold, errors = await w.send(100, clients=5)
    # The host opens only once both versions are warm (every target reachable through it).
    await wait_for(lambda: w.path_state(v1) is PathState.OPEN, 20, 0.02, what="v1 open")
    assert w.path_state(v2) is PathState.OPEN
    asks = w.server.processor.stats.streams
    warm, more_errors = await w.send(1000)
    await w.after_two_more_scrapes()
    assert not errors
    assert not more_errors
    assert set(cold + warm) == {200}
    counts = await assert_counts_match_the_gateway(w, versions)
    assert counts[v1] + counts[v2] == 1100
    # Warm requests went past zerohop: only the warm path's probes asked it meanwhile.
    assert w.server.processor.stats.streams - asks < 100


# --- two Services ---------------------------------------------------------------------------------------------

CLUSTER_V1 = istio_cluster_name(V1, "default", 8080)
CLUSTER_V2 = istio_cluster_name(V2, "default", 8080)


@contextlib.asynccontextmanager
async def two_services(
    tmp_path: Path, emu: KubeEmulator, weights: tuple[int, int], **kwargs: Any
) -> AsyncIterator[World]:
    """backend-v1 and backend-v2 at zero, each its own Deployment, Service and HTTPScaledObject for the same
    host; the gateway's route for the host splits by `weights` between their clusters."""
    emu.enable_kubelet(ready_delay=0.2, address_for=lambda *_: "127.0.0.1")
    async with app_process() as port_v1, app_process() as port_v2:
        for name, port in ((V1, port_v1), (V2, port_v2)):
            workload(emu, name, target_port=port)
            emu.create(httpso(name, hosts=[HOST], scalingMetric=WHOLE_RUN))
        routes = {HOST: Split(((CLUSTER_V1, weights[0]), (CLUSTER_V2, weights[1])))}
        clusters = {CLUSTER_V1: service_endpoints(emu, V1), CLUSTER_V2: service_endpoints(emu, V2)}
        async with running_world(tmp_path, emu, routes, clusters, **kwargs) as w:
            yield w


async def test_an_80_20_split_between_two_services_wakes_both_and_counts_each_share_exactly(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    async with two_services(tmp_path, kube_emulator, (80, 20)) as w:
        await assert_an_80_20_split_wakes_both_and_counts_each_share(w, {V1: CLUSTER_V1, V2: CLUSTER_V2})
        assert w.server.processor.stats.probes == 0  # ext_proc mode: every request asked zerohop


async def test_a_version_the_split_sends_nothing_stays_at_zero(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    # Weight 0: istiod leaves v2 out of the weighted clusters; v2's host is the same, its Service is there.
    async with two_services(tmp_path, kube_emulator, (100, 0)) as w:
        statuses, errors = await w.send(100, clients=5)
        assert not errors
        assert set(statuses) == {200}
        assert w.replicas(V1) >= 1
        await assert_only_v1_woken_and_counted(w, CLUSTER_V1, 100)


async def test_the_warm_path_opens_the_split_host_and_counts_each_version_from_the_gateways(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    async with two_services(tmp_path, kube_emulator, (80, 20), warm_path=WarmPathMode.OPEN) as w:
        await assert_the_warm_path_opens_and_counts_each_version_from_the_gateways(w, {V1: CLUSTER_V1, V2: CLUSTER_V2})


# --- subsets of one Service -------------------------------------------------------------------------------------

SERVICE = "backend"
SUBSET_V1 = f"outbound|8080|v1|{SERVICE}.default.svc.cluster.local"
SUBSET_V2 = f"outbound|8080|v2|{SERVICE}.default.svc.cluster.local"
DR_VERSIONS = ("v1alpha3", "v1beta1", "v1")


def destination_rule(api_version: str = "networking.istio.io/v1") -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": "DestinationRule",
        "metadata": {"name": SERVICE, "namespace": "default"},
        "spec": {
            "host": SERVICE,
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
        },
    }


def subset_endpoints_of(emu: KubeEmulator, labels: dict[str, str]) -> EndpointSource:
    """What istiod gives a subset's cluster: the Service's ready endpoints whose Pod carries the labels."""

    def read() -> list[tuple[str, int]]:
        pods = {
            pod["metadata"]["name"]
            for pod in emu.list("v1", "Pod", "default")
            if labels.items() <= (pod["metadata"].get("labels") or {}).items()
        }
        found = []
        for endpoint_slice in emu.list("discovery.k8s.io/v1", "EndpointSlice", "default"):
            port = slice_port(endpoint_slice)
            if slice_service(endpoint_slice) != ("default", SERVICE) or port is None:
                continue
            for endpoint in endpoint_slice.get("endpoints") or []:
                ready = (endpoint.get("conditions") or {}).get("ready") is not False
                if ready and (endpoint.get("targetRef") or {}).get("name") in pods:
                    found.extend((address, port) for address in endpoint["addresses"])
        return sorted(found)

    return read


@contextlib.asynccontextmanager
async def subsets(
    tmp_path: Path,
    emu: KubeEmulator,
    weights: tuple[int, int],
    *,
    running_v1: int = 0,
    served: tuple[str, ...] = DR_VERSIONS,
    **kwargs: Any,
) -> AsyncIterator[World]:
    """One Service `backend` over two Deployments (backend-v1, backend-v2: pods labelled `version: v1` / `v2`),
    a DestinationRule with subsets v1 and v2, two HTTPScaledObjects naming the Service and each its Deployment,
    and a route splitting by `weights` between the subset clusters. `served`: the DestinationRule versions the
    API server serves."""
    emu.enable_kubelet(ready_delay=0.2, address_for=lambda *_: "127.0.0.1", pods=True)
    if served != DR_VERSIONS:
        stored = [emu.resource(f"networking.istio.io/{v}", "DestinationRule") for v in DR_VERSIONS]
        emu.registry.unregister("networking.istio.io", "destinationrules")
        for resource in stored:
            if resource.version in served:
                emu.registry.register(resource)
    async with app_process() as port_v1, app_process() as port_v2:
        for name, version, port in ((V1, "v1", port_v1), (V2, "v2", port_v2)):
            container = {
                "name": "app",
                "image": "example/backend:1",
                "ports": [{"name": "http", "containerPort": port}],
            }
            labels = {"app": SERVICE, "version": version}
            emu.create(
                deployment(name, replicas=running_v1 if name == V1 else 0, labels=labels, containers=[container])
            )
            target = {"name": name, "kind": "Deployment", "apiVersion": "apps/v1", "service": SERVICE, "port": 8080}
            emu.create(httpso(name, hosts=[HOST], scaleTargetRef=target, scalingMetric=WHOLE_RUN))
        ports = [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
        emu.create(service(SERVICE, selector={"app": SERVICE}, ports=ports))
        emu.create(destination_rule(f"networking.istio.io/{served[-1]}"))
        routes = {HOST: Split(((SUBSET_V1, weights[0]), (SUBSET_V2, weights[1])))}
        clusters = {
            SUBSET_V1: subset_endpoints_of(emu, {"version": "v1"}),
            SUBSET_V2: subset_endpoints_of(emu, {"version": "v2"}),
        }
        async with running_world(tmp_path, emu, routes, clusters, **kwargs) as w:
            if running_v1:
                await wait_for(lambda: bool(clusters[SUBSET_V1]()), 10, 0.02, what="v1 running")
            yield w


@pytest.mark.parametrize("served", [DR_VERSIONS, ("v1alpha3", "v1beta1")], ids=["v1", "v1beta1"])
async def test_an_80_20_split_between_subsets_wakes_both_and_counts_each_share_exactly(
    tmp_path: Path, kube_emulator: KubeEmulator, served: tuple[str, ...]
) -> None:
    async with subsets(tmp_path, kube_emulator, (80, 20), served=served) as w:
        await assert_an_80_20_split_wakes_both_and_counts_each_share(w, {V1: SUBSET_V1, V2: SUBSET_V2})
        # Each version's replicas are its own subset's pods, not the whole Service's.
        for name in (V1, V2):
            counted = w.provider.replicas(TargetKey("default", name))
            assert counted is not None
            assert counted.ready == w.replicas(name)


async def test_a_subset_scaled_to_zero_while_its_sibling_stays_up_is_woken_again_not_failed(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    # The Service keeps ready endpoints (v1's) all along; only v2's own pods make v2 routable.
    async with subsets(tmp_path, kube_emulator, (50, 50), running_v1=1) as w:
        first, errors = await w.send(40, clients=4)
        assert w.replicas(V2) >= 1
        kube_emulator.patch("apps/v1", "Deployment", V2, {"spec": {"replicas": 0}})  # as KEDA does after a cooldown
        gone = subset_endpoints_of(kube_emulator, {"version": "v2"})
        await wait_for(lambda: not gone(), 10, 0.02, what="v2's pods gone")
        key = TargetKey("default", V2)
        await wait_for(lambda: not w.server.core.cold_gate.for_target(key).routable, 10, 0.02, what="v2 cold")
        again, more_errors = await w.send(200, clients=10)
        assert not errors
        assert not more_errors
        statuses = first + again
        assert statuses.count(200) == 240, {s: statuses.count(s) for s in set(statuses)}
        assert w.replicas(V2) >= 1  # woken again by its own share
        await assert_counts_match_the_gateway(w, {V1: SUBSET_V1, V2: SUBSET_V2})


async def test_a_subset_the_split_sends_nothing_stays_at_zero_and_keeps_the_host_gated(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    async with subsets(tmp_path, kube_emulator, (100, 0), running_v1=1, warm_path=WarmPathMode.OPEN) as w:
        statuses, errors = await w.send(300, clients=5)
        assert not errors
        assert set(statuses) == {200}
        await asyncio.sleep(1.0)  # open_after (0.5 s) and more: v1 alone would have opened by now
        # v2 is reachable through the same virtual host and cold: the host stays gated, every request asks.
        assert w.path_state(V1) is PathState.GATED
        await assert_only_v1_woken_and_counted(w, SUBSET_V1, 300)


async def test_the_warm_path_opens_a_subset_split_and_counts_each_subset_from_the_gateways(
    tmp_path: Path, kube_emulator: KubeEmulator
) -> None:
    async with subsets(tmp_path, kube_emulator, (80, 20), warm_path=WarmPathMode.OPEN) as w:
        await assert_the_warm_path_opens_and_counts_each_version_from_the_gateways(w, {V1: SUBSET_V1, V2: SUBSET_V2})


async def test_status_lists_the_watches_a_subset_canary_adds(tmp_path: Path, kube_emulator: KubeEmulator) -> None:
    async with subsets(tmp_path, kube_emulator, (80, 20)) as w:
        await wait_for(
            lambda: bool(w.provider._subsets and w.provider._subsets.pods(TargetKey("default", V2)) is not None),
            10,
            0.02,
            what="subsets resolved",
        )
        names = {informer["resource"] for informer in w.server.status()["provider"]["informers"]}
        assert {
            "destinationrules (all namespaces)",
            f"deployments (default, metadata.name={V1})",
            f"deployments (default, metadata.name={V2})",
            "pods (default, version=v1)",
            "pods (default, version=v2)",
        } <= names
