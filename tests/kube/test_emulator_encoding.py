"""Zero values as a real API server writes them: `omitempty` fields absent, the others present, read as raw
JSON over HTTP so no client model fills the gaps."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client

from tests.kubeemu import DEFAULT_RESOURCES, KubeEmulator, ResourceType, ScalePaths
from tests.kubeemu.encoding import Tag, is_zero, write_fields
from tests.kubeemu.kubelet import STATEFULSETS
from tests.kubeemu.manifests import deployment, service, statefulset

pytest_plugins = ["tests.kubeemu.pytest_plugin"]

DEPLOYMENT_COUNTS = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas")


async def raw(emu: KubeEmulator, path: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(f"{emu.url}{path}") as response:
        assert response.status == 200, await response.text()
        return await response.json()


def deployment_path(name: str, subresource: str = "") -> str:
    return f"/apis/apps/v1/namespaces/default/deployments/{name}" + (f"/{subresource}" if subresource else "")


async def test_a_scale_at_zero_has_an_empty_spec_and_a_zero_status(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    scale = await raw(kube_emulator, deployment_path("web", "scale"))
    assert scale["spec"] == {}  # ScaleSpec.replicas is `omitempty`
    assert scale["status"] == {"replicas": 0, "selector": "app=web"}  # ScaleStatus.replicas is not


async def test_a_scale_above_zero_carries_its_replicas(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(deployment("web", replicas=2))
    scale = await raw(kube_emulator, deployment_path("web", "scale"))
    assert scale["spec"] == {"replicas": 2}


async def test_a_json_patch_test_of_zero_replicas_fails_as_on_a_real_server(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    guarded = [
        {"op": "test", "path": "/spec/replicas", "value": 0},
        {"op": "replace", "path": "/spec/replicas", "value": 1},
    ]
    with pytest.raises(client.ApiException) as failed:
        await client.AppsV1Api(kube_api).patch_namespaced_deployment_scale("web", "default", guarded)
    assert failed.value.status == 422
    assert kube_emulator.get("apps/v1", "Deployment", "web")["spec"]["replicas"] == 0  # type: ignore[index]


async def test_a_scale_with_no_selector_leaves_the_selector_out() -> None:
    widgets = ResourceType(
        "example.com",
        "v1",
        "widgets",
        "Widget",
        builtin=False,
        status=True,
        scale=ScalePaths(selector="status.selector"),
    )
    async with KubeEmulator(resources=(*DEFAULT_RESOURCES, widgets)) as emu:
        emu.create({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}})
        scale = await raw(emu, "/apis/example.com/v1/namespaces/default/widgets/w/scale")
        assert scale["spec"] == {}
        assert scale["status"] == {"replicas": 0}  # ScaleStatus.selector is `omitempty`


async def test_an_explicit_zero_in_a_deployment_spec_is_kept(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    stored = await raw(kube_emulator, deployment_path("web"))
    assert stored["spec"]["replicas"] == 0  # DeploymentSpec.replicas is *int32: only nil is left out


async def test_deployment_status_leaves_zero_counts_out(kube_emulator: KubeEmulator) -> None:
    kube_emulator.enable_kubelet(ready_delay=None)
    kube_emulator.create(deployment("web", replicas=1))
    await kube_emulator.wait_for_object(
        "apps/v1", "Deployment", "web", predicate=lambda d: d.get("status", {}).get("unavailableReplicas") == 1
    )
    status = (await raw(kube_emulator, deployment_path("web")))["status"]
    assert "readyReplicas" not in status
    assert "availableReplicas" not in status
    assert (status["replicas"], status["updatedReplicas"]) == (1, 1)

    kube_emulator.patch("apps/v1", "Deployment", "web", {"spec": {"replicas": 0}})
    await kube_emulator.wait_for_object(
        "apps/v1", "Deployment", "web", predicate=lambda d: "replicas" not in d.get("status", {})
    )
    status = (await raw(kube_emulator, deployment_path("web")))["status"]
    assert not set(DEPLOYMENT_COUNTS) & set(status), status
    assert status["observedGeneration"] == 2


async def test_statefulset_status_keeps_replicas_and_available_replicas_at_zero(kube_emulator: KubeEmulator) -> None:
    kube_emulator.enable_kubelet()
    kube_emulator.create(statefulset("db", replicas=0))
    stored = await kube_emulator.wait_for_object(
        "apps/v1", "StatefulSet", "db", predicate=lambda s: "observedGeneration" in s.get("status", {})
    )
    status = (await raw(kube_emulator, "/apis/apps/v1/namespaces/default/statefulsets/db"))["status"]
    assert status == stored["status"]
    assert (status["replicas"], status["availableReplicas"], status["collisionCount"]) == (0, 0, 0)
    assert not {"readyReplicas", "currentReplicas", "updatedReplicas"} & set(status)
    scale = await raw(kube_emulator, "/apis/apps/v1/namespaces/default/statefulsets/db/scale")
    assert (scale["spec"], scale["status"]) == ({}, {"replicas": 0, "selector": "app=db"})


async def test_statefulset_replicas_are_named_by_ordinal_and_become_endpoints(kube_emulator: KubeEmulator) -> None:
    kubelet = kube_emulator.enable_kubelet()
    kube_emulator.create(service("db"))
    kube_emulator.create(statefulset("db", replicas=2))
    await kube_emulator.wait_for_object(
        "apps/v1", "StatefulSet", "db", predicate=lambda s: s.get("status", {}).get("readyReplicas") == 2
    )
    assert [r.pod_name for r in kubelet.replicas("default", "db", resource=STATEFULSETS)] == ["db-0", "db-1"]
    [slice_] = kube_emulator.list("discovery.k8s.io/v1", "EndpointSlice", "default")
    assert [e["targetRef"]["name"] for e in slice_["endpoints"]] == ["db-0", "db-1"]


async def test_statefulsets_get_the_api_servers_defaults(kube_emulator: KubeEmulator) -> None:
    body = statefulset("db")
    del body["spec"]["replicas"]
    kube_emulator.create(body)
    spec = (await raw(kube_emulator, "/apis/apps/v1/namespaces/default/statefulsets/db"))["spec"]
    assert spec["replicas"] == 1
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}


def test_write_fields_follows_each_tag() -> None:
    tags = {"gone": Tag.OMITEMPTY, "kept": Tag.ALWAYS, "items": Tag.NULL_IF_EMPTY, "set": Tag.OMITEMPTY}
    target: dict[str, object] = {"gone": 5, "other": "untouched"}
    written = write_fields(target, {"gone": 0, "kept": 0, "items": [], "set": "x"}, tags)
    assert written is target
    assert target == {"other": "untouched", "kept": 0, "items": None, "set": "x"}
    zeros: list[object] = [0, "", False, None, [], {}]
    assert all(is_zero(v) for v in zeros)
    non_zeros: list[object] = [1, "0", True, [0], {"a": 0}]
    assert not any(is_zero(v) for v in non_zeros)
