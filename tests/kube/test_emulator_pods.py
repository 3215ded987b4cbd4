"""The emulator's Pod objects (`enable_kubelet(pods=True)`) and DestinationRules, through the real client."""

from __future__ import annotations

from kubernetes.aio import client

from tests.kubeemu import KubeEmulator, wait_for
from tests.kubeemu.manifests import deployment, service

pytest_plugins = ["tests.kubeemu.pytest_plugin"]


async def test_each_replica_is_a_pod_with_the_template_labels_named_as_its_endpoint(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    kube_emulator.enable_kubelet(ready_delay=0.2, pods=True)
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_service("default", service("web"))
    labels = {"app": "web", "version": "v2"}
    await client.AppsV1Api(kube_api).create_namespaced_deployment(
        "default", deployment("web", replicas=2, labels=labels)
    )

    async def ready_pods() -> list[client.V1Pod]:
        pods = (await core.list_namespaced_pod("default", label_selector="version=v2")).items
        ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions)]
        return ready if len(ready) == 2 else []

    pods = await wait_for(ready_pods, 5)
    for pod in pods:
        assert labels.items() <= pod.metadata.labels.items()
        assert pod.metadata.labels["pod-template-hash"]
        assert pod.metadata.name.startswith(f"web-{pod.metadata.labels['pod-template-hash']}-")
        assert pod.status.phase == "Running"
        assert pod.status.pod_ip
    slices = (await client.DiscoveryV1Api(kube_api).list_namespaced_endpoint_slice("default")).items
    named = {e.target_ref.name for s in slices for e in s.endpoints or []}
    assert named == {p.metadata.name for p in pods}

    kube_emulator.patch("apps/v1", "Deployment", "web", {"spec": {"replicas": 1}})

    async def one_left() -> bool:
        return len((await core.list_namespaced_pod("default")).items) == 1

    await wait_for(one_left, 5)


async def test_destinationrules_are_served_in_istios_three_versions(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube_api)
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "backend"},
        "spec": {"host": "backend", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]},
    }
    await custom.create_namespaced_custom_object("networking.istio.io", "v1", "default", "destinationrules", body)
    for version in ("v1alpha3", "v1beta1", "v1"):
        found = await custom.get_namespaced_custom_object(
            "networking.istio.io", version, "default", "destinationrules", "backend"
        )
        assert found["apiVersion"] == f"networking.istio.io/{version}"
        assert found["spec"]["subsets"] == body["spec"]["subsets"]
