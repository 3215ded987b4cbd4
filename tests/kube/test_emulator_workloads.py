"""The fake kubelet + EndpointSlice controller, observed through the real client."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes.aio import client

from tests.kubeemu import READY_DELAY_ANNOTATION, KubeEmulator, wait_for
from tests.kubeemu.manifests import deployment, service

pytest_plugins = ["tests.kubeemu.pytest_plugin"]

SLICE_LABEL = "kubernetes.io/service-name"


async def slices_for(api: client.ApiClient, svc: str) -> list[client.V1EndpointSlice]:
    result = await client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        "default", label_selector=f"{SLICE_LABEL}={svc}"
    )
    return list(result.items)


def ready_addresses(slices: list[client.V1EndpointSlice]) -> list[str]:
    return [a for s in slices for e in s.endpoints or [] if e.conditions.ready for a in e.addresses]


async def test_endpointslice_turns_ready_after_the_delay(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    kube_emulator.enable_kubelet(ready_delay=0.3)
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_service("default", service("web"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await apps.create_namespaced_deployment("default", deployment("web", replicas=2))

    async def slice_present() -> list[client.V1EndpointSlice]:
        return await slices_for(kube_api, "web")

    [slice_] = await wait_for(slice_present, message="endpointslice")
    assert slice_.address_type == "IPv4"
    assert slice_.metadata.name.startswith("web-")
    assert [(p.name, p.port, p.protocol) for p in slice_.ports] == [("http", 8080, "TCP")]
    assert slice_.metadata.owner_references[0].kind == "Service"
    assert len(slice_.endpoints) == 2
    assert not any(e.conditions.ready for e in slice_.endpoints)
    assert all(e.target_ref.kind == "Pod" and e.target_ref.name.startswith("web-") for e in slice_.endpoints)

    async def both_ready() -> list[str]:
        addresses = ready_addresses(await slices_for(kube_api, "web"))
        return addresses if len(addresses) == 2 else []

    addresses = await wait_for(both_ready, message="ready endpoints")
    assert loop.time() - started >= 0.3
    assert sorted(addresses) == ["127.0.0.1", "127.0.0.2"]

    dep = await kube_emulator.wait_for_object(
        "apps/v1", "Deployment", "web", predicate=lambda d: d.get("status", {}).get("readyReplicas") == 2
    )
    status = (await apps.read_namespaced_deployment_status("web", "default")).status
    assert (status.replicas, status.ready_replicas, status.available_replicas) == (2, 2, 2)
    assert status.observed_generation == dep["metadata"]["generation"]


async def test_scaling_adds_and_removes_endpoints(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    kubelet = kube_emulator.enable_kubelet(ready_delay=0.0)
    apps = client.AppsV1Api(kube_api)
    kube_emulator.create(service("web"))
    kube_emulator.create(deployment("web", replicas=0))

    def endpoints() -> list[dict[str, Any]]:
        slices = kube_emulator.list(
            "discovery.k8s.io/v1", "EndpointSlice", "default", label_selector=f"{SLICE_LABEL}=web"
        )
        return [e for s in slices for e in s["endpoints"] or []]

    [placeholder] = await kube_emulator.wait_until(
        lambda: kube_emulator.list("discovery.k8s.io/v1", "EndpointSlice", "default"), message="empty slice"
    )
    # No pods behind it: the nil lists of the real server's placeholder slice, not [].
    assert (placeholder["endpoints"], placeholder["ports"]) == (None, None)

    await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    await kube_emulator.wait_until(
        lambda: len(endpoints()) == 3 and all(e["conditions"]["ready"] for e in endpoints()),
        message="three ready endpoints",
    )
    assert len(kubelet.replicas("default", "web")) == 3

    await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 0}})
    await kube_emulator.wait_until(
        lambda: (
            [s["endpoints"] for s in kube_emulator.list("discovery.k8s.io/v1", "EndpointSlice", "default")] == [None]
        ),
        message="endpoints removed",
    )
    await kube_emulator.wait_for_object(
        "apps/v1",
        "Deployment",
        "web",
        predicate=lambda d: "readyReplicas" not in d.get("status", {}) and "replicas" not in d.get("status", {}),
    )


async def test_address_hook_named_ports_and_manual_readiness(kube_emulator: KubeEmulator) -> None:
    kubelet = kube_emulator.enable_kubelet(ready_delay=None, address_for=lambda ns, name, i: f"10.1.0.{10 + i}")
    kube_emulator.create(
        service(
            "api",
            selector={"tier": "api"},
            ports=[{"name": "grpc", "port": 9000, "targetPort": "grpc", "appProtocol": "grpc"}],
        )
    )
    containers = [{"name": "srv", "image": "x", "ports": [{"name": "grpc", "containerPort": 50051}]}]
    kube_emulator.create(deployment("api", labels={"tier": "api"}, containers=containers))

    def the_slice() -> dict[str, Any] | None:
        slices = kube_emulator.list("discovery.k8s.io/v1", "EndpointSlice", "default")
        return slices[0] if slices and slices[0]["endpoints"] else None

    slice_ = await kube_emulator.wait_until(the_slice, message="slice with an endpoint")
    assert slice_["ports"] == [{"name": "grpc", "port": 50051, "protocol": "TCP", "appProtocol": "grpc"}]
    assert slice_["endpoints"][0]["addresses"] == ["10.1.0.10"]
    assert slice_["endpoints"][0]["conditions"]["ready"] is False

    kubelet.set_ready("default", "api", 0, True)
    await kube_emulator.wait_until(
        lambda: (s := the_slice()) and s["endpoints"][0]["conditions"]["ready"], message="manual readiness"
    )


async def test_ready_delay_per_deployment_annotation(kube_emulator: KubeEmulator) -> None:
    kube_emulator.enable_kubelet(ready_delay=None)
    quick = deployment("quick")
    quick["metadata"]["annotations"] = {READY_DELAY_ANNOTATION: "0"}
    kube_emulator.create(quick)
    await kube_emulator.wait_for_object(
        "apps/v1", "Deployment", "quick", predicate=lambda d: d.get("status", {}).get("readyReplicas") == 1
    )


async def test_deleting_the_service_removes_its_slices(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    kube_emulator.enable_kubelet()
    kube_emulator.create(service("web"))
    kube_emulator.create(deployment("web"))
    await kube_emulator.wait_until(lambda: kube_emulator.list("discovery.k8s.io/v1", "EndpointSlice"), message="slice")
    await client.CoreV1Api(kube_api).delete_namespaced_service("web", "default")
    await kube_emulator.wait_until(
        lambda: not kube_emulator.list("discovery.k8s.io/v1", "EndpointSlice"), message="slice removal"
    )
