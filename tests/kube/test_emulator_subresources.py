"""Scale and status subresources, generation, finalizers and garbage collection."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes.aio import client

from tests.kubeemu import KubeEmulator
from tests.kubeemu.manifests import configmap, deployment, http_scaled_object, owner_reference

pytest_plugins = ["tests.kubeemu.pytest_plugin"]

HSO = ("http.keda.sh", "v1alpha1", "default", "httpscaledobjects")


async def test_scale_subresource_read_and_patch(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_api)
    created = await apps.create_namespaced_deployment("default", deployment("web", replicas=0))
    scale = await apps.read_namespaced_deployment_scale("web", "default")
    assert scale.kind == "Scale"
    assert scale.api_version == "autoscaling/v1"
    assert scale.spec.replicas is None  # `replicas,omitempty`: a real server sends `spec: {}` at 0
    assert scale.status.selector == "app=web"
    assert scale.metadata.resource_version == created.metadata.resource_version

    patched = await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})
    assert patched.spec.replicas == 3
    sent = kube_emulator.requests_matching("PATCH", path_contains="/deployments/web/scale")
    assert len(sent) == 1
    assert sent[0].body == {"spec": {"replicas": 3}}
    stored = kube_emulator.get("apps/v1", "Deployment", "web")
    assert stored is not None
    assert stored["spec"]["replicas"] == 3
    assert stored["metadata"]["generation"] == 2

    with pytest.raises(client.ApiException) as conflict:
        await apps.replace_namespaced_deployment_scale("web", "default", scale)  # stale
    assert conflict.value.status == 409
    scale.metadata.resource_version = patched.metadata.resource_version
    scale.spec.replicas = 1
    replaced = await apps.replace_namespaced_deployment_scale("web", "default", scale)
    assert replaced.spec.replicas == 1

    with pytest.raises(client.ApiException) as negative:
        await apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": -1}})
    assert negative.value.status == 422


async def test_custom_resource_status_subresource(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    crd = client.CustomObjectsApi(kube_api)
    body = http_scaled_object("shop") | {"status": {"conditions": [{"type": "Smuggled"}]}}
    created = await crd.create_namespaced_custom_object(*HSO, body)
    assert "status" not in created  # dropped on create, as for any status subresource

    status = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}, "spec": {"hosts": ["ignored.example"]}}
    updated = await crd.patch_namespaced_custom_object_status(*HSO, "shop", status)
    assert updated["status"] == status["status"]
    assert updated["spec"] == created["spec"]
    assert updated["metadata"]["generation"] == 1
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    # Writes to the main resource leave status alone.
    main = await crd.patch_namespaced_custom_object(
        *HSO, "shop", {"spec": {"hosts": ["new.example"]}, "status": {"conditions": []}}
    )
    assert main["status"] == status["status"]
    assert main["spec"]["hosts"] == ["new.example"]
    assert main["metadata"]["generation"] == 2

    read = await crd.get_namespaced_custom_object_status(*HSO, "shop")
    assert read["status"] == status["status"]


async def test_custom_resource_generation_moves_with_the_spec_only(kube_api: client.ApiClient) -> None:
    # As a real API server does for a CRD with the status subresource: metadata and status writes keep
    # metadata.generation, any spec change bumps it (what zerohop tells status-only updates apart by).
    crd = client.CustomObjectsApi(kube_api)
    await crd.create_namespaced_custom_object(*HSO, http_scaled_object("shop"))
    labelled = await crd.patch_namespaced_custom_object(
        *HSO, "shop", {"metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}}}
    )
    assert labelled["metadata"]["generation"] == 1
    status = await crd.patch_namespaced_custom_object_status(*HSO, "shop", {"status": {"conditions": []}})
    assert status["metadata"]["generation"] == 1
    unchanged = await crd.patch_namespaced_custom_object(*HSO, "shop", {"spec": {"hosts": labelled["spec"]["hosts"]}})
    assert unchanged["metadata"]["generation"] == 1
    changed = await crd.patch_namespaced_custom_object(*HSO, "shop", {"spec": {"hosts": ["other.example"]}})
    assert changed["metadata"]["generation"] == 2


async def test_deployment_status_writes_do_not_bump_generation(kube_api: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_api)
    await apps.create_namespaced_deployment("default", deployment("web"))
    updated = await apps.patch_namespaced_deployment_status(
        "web", "default", {"status": {"readyReplicas": 1, "replicas": 1}}
    )
    assert updated.status.ready_replicas == 1
    assert updated.metadata.generation == 1
    labelled = await apps.patch_namespaced_deployment("web", "default", {"metadata": {"labels": {"extra": "yes"}}})
    assert labelled.metadata.generation == 1  # metadata-only change
    assert labelled.status.ready_replicas == 1


async def test_unchanged_update_is_a_no_op(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    created = await core.create_namespaced_config_map("default", configmap("cfg"))
    before = kube_emulator.resource_version
    same = await core.replace_namespaced_config_map("cfg", "default", created)
    assert same.metadata.resource_version == created.metadata.resource_version
    assert kube_emulator.resource_version == before


async def test_owner_references_are_garbage_collected(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    owner = kube_emulator.create(configmap("owner"))
    child = configmap("child")
    child["metadata"]["ownerReferences"] = [owner_reference(owner)]
    await core.create_namespaced_config_map("default", child)
    grandchild = configmap("grandchild")
    grandchild["metadata"]["ownerReferences"] = [owner_reference(kube_emulator.get("v1", "ConfigMap", "child") or {})]
    kube_emulator.create(grandchild)
    bystander = kube_emulator.create(configmap("bystander"))

    await core.delete_namespaced_config_map("owner", "default")
    await kube_emulator.wait_until(
        lambda: (
            not {"child", "grandchild"}
            & {c["metadata"]["name"] for c in kube_emulator.list("v1", "ConfigMap", "default")}
        ),
        message="dependents to be collected",
    )
    assert kube_emulator.get("v1", "ConfigMap", "bystander") == bystander


async def test_orphan_propagation_keeps_dependents(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    owner = kube_emulator.create(configmap("owner"))
    child = configmap("child")
    child["metadata"]["ownerReferences"] = [owner_reference(owner)]
    kube_emulator.create(child)
    await client.CoreV1Api(kube_api).delete_namespaced_config_map("owner", "default", propagation_policy="Orphan")
    await kube_emulator.wait_until(lambda: kube_emulator.get("v1", "ConfigMap", "owner") is None)
    orphan = kube_emulator.get("v1", "ConfigMap", "child")
    assert orphan is not None
    assert "ownerReferences" not in orphan["metadata"]


async def test_foreground_deletion_removes_dependents_first(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    owner = kube_emulator.create(configmap("owner"))
    child = configmap("child")
    child["metadata"]["ownerReferences"] = [owner_reference(owner)]
    child["metadata"]["finalizers"] = ["example.com/hold"]
    kube_emulator.create(child)

    response = await client.CoreV1Api(kube_api).delete_namespaced_config_map(
        "owner", "default", body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    # Delete is typed V1Status; an object body comes back as a plain dict.
    assert response["metadata"]["deletionTimestamp"]
    held = await kube_emulator.wait_for_object(
        "v1", "ConfigMap", "child", predicate=lambda o: "deletionTimestamp" in o["metadata"]
    )
    assert kube_emulator.get("v1", "ConfigMap", "owner") is not None  # waits for the child

    held["metadata"]["finalizers"] = []
    kube_emulator.update(held)
    await kube_emulator.wait_until(
        lambda: kube_emulator.get("v1", "ConfigMap", "owner") is None, message="owner to go after its dependent"
    )
    assert kube_emulator.get("v1", "ConfigMap", "child") is None


async def test_finalizers_delay_deletion(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await core.create_namespaced_config_map("default", body)
    deleted = await core.delete_namespaced_config_map("held", "default")
    pending = await core.read_namespaced_config_map("held", "default")
    assert pending.metadata.deletion_timestamp is not None
    assert deleted["metadata"]["deletionTimestamp"] == pending.metadata.deletion_timestamp.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    await core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(client.ApiException) as gone:
        await core.read_namespaced_config_map("held", "default")
    assert gone.value.status == 404


async def test_delete_preconditions(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    created = await core.create_namespaced_config_map("default", configmap("cfg"))
    stale = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    with pytest.raises(client.ApiException) as conflict:
        await core.delete_namespaced_config_map("cfg", "default", body=stale)
    assert conflict.value.status == 409
    current = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=created.metadata.uid))
    await core.delete_namespaced_config_map("cfg", "default", body=current)


async def test_namespace_deletion_removes_its_content(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    held = configmap("held", namespace="doomed")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    kube_emulator.create(held)
    kube_emulator.create(configmap("cfg", namespace="doomed"))
    kube_emulator.create(configmap("cfg", namespace="kept"))
    terminating = await core.delete_namespace("doomed")
    assert terminating["status"]["phase"] == "Terminating"
    await kube_emulator.wait_until(
        lambda: kube_emulator.get("v1", "ConfigMap", "cfg", "doomed") is None, message="content removal"
    )
    with pytest.raises(client.ApiException) as forbidden:
        await core.create_namespaced_config_map("doomed", configmap("late", namespace="doomed"))
    assert forbidden.value.status == 403

    kube_emulator.patch("v1", "ConfigMap", "held", {"metadata": {"finalizers": None}}, "doomed")
    await kube_emulator.wait_until(
        lambda: kube_emulator.get("v1", "Namespace", "doomed") is None, message="namespace teardown"
    )
    assert kube_emulator.list("v1", "ConfigMap", "doomed") == []
    assert len(kube_emulator.list("v1", "ConfigMap", "kept")) == 1


async def test_delete_collection(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    for name, app in (("a", "web"), ("b", "web"), ("c", "db")):
        kube_emulator.create(configmap(name, labels={"app": app}))
    await client.CoreV1Api(kube_api).delete_collection_namespaced_config_map("default", label_selector="app=web")
    assert [c["metadata"]["name"] for c in kube_emulator.list("v1", "ConfigMap")] == ["c"]


async def test_writing_owned_objects_does_not_scan_the_store(kube_emulator: KubeEmulator) -> None:
    owner = kube_emulator.create(configmap("owner"))
    for i in range(3):
        child = configmap(f"child-{i}")
        child["metadata"]["ownerReferences"] = [owner_reference(owner)]
        kube_emulator.create(child)
        await asyncio.sleep(0)  # the collector's turn
    assert kube_emulator.gc.scans == 0
    orphan = configmap("orphan")
    orphan["metadata"]["ownerReferences"] = [{**owner_reference(owner), "uid": "gone"}]
    kube_emulator.create(orphan)
    await kube_emulator.wait_until(lambda: kube_emulator.get("v1", "ConfigMap", "orphan") is None)
    assert kube_emulator.gc.scans >= 1
    assert kube_emulator.get("v1", "ConfigMap", "child-0") is not None
