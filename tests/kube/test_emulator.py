"""The emulator's REST surface as seen through the real `kubernetes.aio` client:
CRUD, patch types, selectors, pagination, errors, discovery and kubeconfig."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client, config, dynamic

from tests.kubeemu import STRATEGIC_PATCH, KubeEmulator
from tests.kubeemu.manifests import configmap, deployment, http_scaled_object, service

pytest_plugins = ["tests.kubeemu.pytest_plugin"]

HSO = ("http.keda.sh", "v1alpha1", "default", "httpscaledobjects")


def status_body(exc: client.ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == exc.status
    return dict(body)


async def test_custom_resource_crud(kube_api: client.ApiClient) -> None:
    crd = client.CustomObjectsApi(kube_api)
    created = await crd.create_namespaced_custom_object(*HSO, http_scaled_object("shop"))
    meta = created["metadata"]
    assert meta["namespace"] == "default"
    assert meta["generation"] == 1
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")

    got = await crd.get_namespaced_custom_object(*HSO, "shop")
    assert got == created

    listed = await crd.list_namespaced_custom_object(*HSO)
    assert listed["kind"] == "HTTPScaledObjectList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["shop"]
    assert listed["items"][0]["kind"] == "HTTPScaledObject"  # custom lists keep type meta
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])

    patched = await crd.patch_namespaced_custom_object(*HSO, "shop", {"spec": {"replicas": {"max": 3}}})
    assert patched["spec"]["replicas"] == {"min": 0, "max": 3}
    assert patched["metadata"]["generation"] == 2
    assert int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    stale = dict(got)  # still carries the pre-patch resourceVersion
    with pytest.raises(client.ApiException) as conflict:
        await crd.replace_namespaced_custom_object(*HSO, "shop", stale)
    assert conflict.value.status == 409
    assert status_body(conflict.value)["reason"] == "Conflict"

    replaced = await crd.replace_namespaced_custom_object(
        *HSO, "shop", patched | {"spec": {"hosts": ["other.example"]}}
    )
    assert replaced["spec"] == {"hosts": ["other.example"]}

    deleted = await crd.delete_namespaced_custom_object(*HSO, "shop")
    assert deleted["metadata"]["name"] == "shop"
    with pytest.raises(client.ApiException) as missing:
        await crd.get_namespaced_custom_object(*HSO, "shop")
    assert missing.value.status == 404
    assert status_body(missing.value)["details"] == {
        "name": "shop",
        "group": "http.keda.sh",
        "kind": "httpscaledobjects",
    }


async def test_custom_resource_replace_needs_resource_version(kube_api: client.ApiClient) -> None:
    crd = client.CustomObjectsApi(kube_api)
    created = await crd.create_namespaced_custom_object(*HSO, http_scaled_object("shop"))
    del created["metadata"]["resourceVersion"]
    with pytest.raises(client.ApiException) as exc:
        await crd.replace_namespaced_custom_object(*HSO, "shop", created)
    assert exc.value.status == 422
    assert status_body(exc.value)["details"]["causes"][0]["field"] == "metadata.resourceVersion"


async def test_strategic_merge_patch_is_refused_for_custom_resources(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    crd = client.CustomObjectsApi(kube_api)
    await crd.create_namespaced_custom_object(*HSO, http_scaled_object("shop"))
    with pytest.raises(client.ApiException) as exc:
        await crd.patch_namespaced_custom_object(
            *HSO, "shop", {"spec": {"hosts": ["x"]}}, _content_type=STRATEGIC_PATCH
        )
    assert exc.value.status == 415
    assert status_body(exc.value)["reason"] == "UnsupportedMediaType"
    assert kube_emulator.get("http.keda.sh/v1alpha1", "HTTPScaledObject", "shop")["spec"]["hosts"] == ["example.com"]


async def test_strategic_merge_patch_merges_containers_by_name(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    apps = client.AppsV1Api(kube_api)
    containers = [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
    await apps.create_namespaced_deployment("default", deployment("web", containers=containers))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}

    # A dict body on a built-in is sent as a strategic merge patch by the client.
    merged = await apps.patch_namespaced_deployment("web", "default", patch)
    assert [(c.name, c.image) for c in merged.spec.template.spec.containers] == [("a", "a:1"), ("b", "b:2")]
    assert kube_emulator.requests[-1].content_type == STRATEGIC_PATCH

    # The same document as a JSON merge patch replaces the whole list.
    replaced = await apps.patch_namespaced_deployment(
        "web", "default", patch, _content_type="application/merge-patch+json"
    )
    assert [c.name for c in replaced.spec.template.spec.containers] == ["b"]


async def test_strategic_merge_patch_directives_on_service_ports(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_service("default", service("web"))
    added = await core.patch_namespaced_service(
        "web", "default", {"spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}
    )
    assert [(p.name, p.port) for p in added.spec.ports] == [("http", 80), ("https", 443)]
    removed = await core.patch_namespaced_service(
        "web", "default", {"spec": {"ports": [{"port": 80, "$patch": "delete"}]}}
    )
    assert [p.port for p in removed.spec.ports] == [443]
    relabelled = await core.patch_namespaced_service(
        "web", "default", {"metadata": {"labels": {"a": "1"}}, "spec": {"selector": {"$patch": "replace", "x": "y"}}}
    )
    assert relabelled.spec.selector == {"x": "y"}
    assert relabelled.metadata.labels == {"a": "1"}


async def test_json_patch(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_config_map("default", configmap("cfg", data={"a": "1"}))
    ops = [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "add", "path": "/data/b", "value": "2"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "copy", "from": "/data/b", "path": "/data/c"},
        {"op": "move", "from": "/data/c", "path": "/data/d"},
        {"op": "add", "path": "/metadata/labels", "value": {"x~y/z": "1"}},
        {"op": "remove", "path": "/metadata/labels/x~0y~1z"},
    ]
    patched = await core.patch_namespaced_config_map("cfg", "default", ops)
    assert patched.data == {"a": "10", "b": "2", "d": "2"}
    assert patched.metadata.labels == {}

    with pytest.raises(client.ApiException) as failed_test:
        await core.patch_namespaced_config_map("cfg", "default", [{"op": "test", "path": "/data/a", "value": "1"}])
    assert failed_test.value.status == 422

    crd = client.CustomObjectsApi(kube_api)
    await crd.create_namespaced_custom_object(*HSO, http_scaled_object("shop"))
    patched_cr = await crd.patch_namespaced_custom_object(
        *HSO,
        "shop",
        [{"op": "add", "path": "/spec/hosts/-", "value": "b.example"}],
        _content_type="application/json-patch+json",
    )
    assert patched_cr["spec"]["hosts"] == ["example.com", "b.example"]


async def test_label_and_field_selectors(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    for name, labels in [
        ("a", {"app": "web", "tier": "front"}),
        ("b", {"app": "web", "tier": "back"}),
        ("c", {"app": "db"}),
        ("d", {}),
    ]:
        kube_emulator.create(configmap(name, labels=labels))
    core = client.CoreV1Api(kube_api)

    async def names(**kwargs: str) -> list[str]:
        result = await core.list_namespaced_config_map("default", **kwargs)
        return [i.metadata.name for i in result.items]

    assert await names(label_selector="app=web") == ["a", "b"]
    assert await names(label_selector="app==web,tier=back") == ["b"]
    assert await names(label_selector="app!=web") == ["c", "d"]
    assert await names(label_selector="tier in (front, back)") == ["a", "b"]
    assert await names(label_selector="tier notin (front)") == ["b", "c", "d"]
    assert await names(label_selector="tier") == ["a", "b"]
    assert await names(label_selector="!tier") == ["c", "d"]
    assert await names(field_selector="metadata.name=c") == ["c"]
    assert await names(field_selector="metadata.name!=c", label_selector="app") == ["a", "b"]
    with pytest.raises(client.ApiException) as bad:
        await names(label_selector="app in (")
    assert bad.value.status == 400
    with pytest.raises(client.ApiException) as unsupported:
        await names(field_selector="spec.foo=bar")
    assert unsupported.value.status == 400


async def test_items_in_builtin_lists_have_no_type_meta(kube_api: client.ApiClient) -> None:
    result = await client.CoreV1Api(kube_api).list_namespace()
    assert result.kind == "NamespaceList"
    assert result.api_version == "v1"
    assert {n.metadata.name for n in result.items} >= {"default", "kube-system"}
    assert all(n.kind is None for n in result.items)


async def test_pagination_is_a_consistent_snapshot(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    for n in range(5):
        kube_emulator.create(configmap(f"cm{n}"))
    core = client.CoreV1Api(kube_api)
    first = await core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["cm0", "cm1"]
    assert first.metadata.remaining_item_count == 3
    kube_emulator.delete("v1", "ConfigMap", "cm3")
    kube_emulator.create(configmap("cm2a"))
    rest: list[str] = []
    token = first.metadata._continue
    while token:
        page = await core.list_namespaced_config_map("default", limit=2, _continue=token)
        assert page.metadata.resource_version == first.metadata.resource_version
        rest += [i.metadata.name for i in page.items]
        token = page.metadata._continue
    assert rest == ["cm2", "cm3", "cm4"]

    kube_emulator.compact()
    with pytest.raises(client.ApiException) as expired:
        await core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert expired.value.status == 410
    assert status_body(expired.value)["reason"] == "Expired"


async def test_list_at_exact_resource_version(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    kube_emulator.create(configmap("old"))
    before = kube_emulator.resource_version
    kube_emulator.create(configmap("new"))
    core = client.CoreV1Api(kube_api)
    exact = await core.list_namespaced_config_map(
        "default", resource_version=str(before), resource_version_match="Exact"
    )
    assert [i.metadata.name for i in exact.items] == ["old"]
    not_older = await core.list_namespaced_config_map(
        "default", resource_version=str(before), resource_version_match="NotOlderThan"
    )
    assert [i.metadata.name for i in not_older.items] == ["new", "old"]
    kube_emulator.compact()
    with pytest.raises(client.ApiException) as expired:
        await core.list_namespaced_config_map("default", resource_version=str(before), resource_version_match="Exact")
    assert expired.value.status == 410


async def test_a_paged_list_at_a_version_is_exact_as_on_a_real_server(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    # resourceVersion=N with limit and no resourceVersionMatch: the legacy paged read, exactly at N.
    for name in ("a", "b", "c"):
        kube_emulator.create(configmap(name))
    before = kube_emulator.resource_version
    kube_emulator.create(configmap("d"))
    kube_emulator.delete("v1", "ConfigMap", "a")
    core = client.CoreV1Api(kube_api)
    first = await core.list_namespaced_config_map("default", resource_version=str(before), limit=2)
    assert first.metadata.resource_version == str(before)
    second = await core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert [i.metadata.name for i in first.items + second.items] == ["a", "b", "c"]
    assert second.metadata._continue is None
    # Without limit the same version means "not older than": the current state.
    unpaged = await core.list_namespaced_config_map("default", resource_version=str(before))
    assert [i.metadata.name for i in unpaged.items] == ["b", "c", "d"]


async def test_paging_with_a_selector_walks_every_match_once(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    for n in range(12):
        kube_emulator.create(configmap(f"cm{n:02}", labels={"even": str(n % 2 == 0).lower()}))
    core = client.CoreV1Api(kube_api)
    seen: list[str] = []
    pages = 0
    token = None
    while True:
        page = await core.list_namespaced_config_map("default", label_selector="even=true", limit=2, _continue=token)
        pages += 1
        assert page.metadata.remaining_item_count is None  # not counted for a selected list
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"cm{n:02}" for n in range(0, 12, 2)]
    assert pages == 3  # a full last page carries no token: nothing is left


async def test_an_unselected_paged_list_counts_what_is_left(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    for n in range(7):
        kube_emulator.create(configmap(f"cm{n}"))
    core = client.CoreV1Api(kube_api)
    left: list[int | None] = []
    seen: list[str] = []
    token = None
    while True:
        page = await core.list_namespaced_config_map("default", limit=3, _continue=token)
        left.append(page.metadata.remaining_item_count)
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == [f"cm{n}" for n in range(7)]
    assert left == [4, 1, None]  # the last page: nothing left, no count and no token


def test_a_listed_object_changed_by_its_reader_leaves_the_stored_one_alone(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(configmap("cfg", data={"k": "v"}))
    [listed] = kube_emulator.list("v1", "ConfigMap")
    listed["data"]["k"] = "changed"
    listed["metadata"]["labels"] = {"x": "y"}
    stored = kube_emulator.get("v1", "ConfigMap", "cfg")
    assert stored is not None
    assert stored["data"] == {"k": "v"}
    assert "labels" not in stored["metadata"]


async def test_write_errors_are_real_status_bodies(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_config_map("default", configmap("cfg"))
    with pytest.raises(client.ApiException) as exists:
        await core.create_namespaced_config_map("default", configmap("cfg"))
    assert exists.value.status == 409
    assert status_body(exists.value)["reason"] == "AlreadyExists"
    assert status_body(exists.value)["message"] == 'configmaps "cfg" already exists'

    with pytest.raises(client.ApiException) as bad_name:
        await core.create_namespaced_config_map("default", configmap("Not_Valid"))
    assert bad_name.value.status == 422
    assert status_body(bad_name.value)["reason"] == "Invalid"

    wrong_kind = configmap("x") | {"kind": "Secret"}
    with pytest.raises(client.ApiException) as mismatch:
        await core.create_namespaced_config_map("default", wrong_kind)
    assert mismatch.value.status == 400

    with pytest.raises(client.ApiException) as wrong_ns:
        await core.create_namespaced_config_map("default", configmap("y", namespace="other"))
    assert wrong_ns.value.status == 400

    broken = deployment("web")
    broken["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(client.ApiException) as invalid_deploy:
        await client.AppsV1Api(kube_api).create_namespaced_deployment("default", broken)
    assert invalid_deploy.value.status == 422


async def test_apply_patch_is_unsupported(kube_api: client.ApiClient) -> None:
    apps = client.AppsV1Api(kube_api)
    await apps.create_namespaced_deployment("default", deployment("web"))
    with pytest.raises(client.ApiException) as exc:
        await apps.patch_namespaced_deployment(
            "web",
            "default",
            {"spec": {"replicas": 2}},
            field_manager="test",
            _content_type="application/apply-patch+yaml",
        )
    assert exc.value.status == 415


async def test_dry_run_writes_nothing(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    before = kube_emulator.resource_version
    result = await client.CoreV1Api(kube_api).create_namespaced_config_map("default", configmap("ghost"), dry_run="All")
    assert result.metadata.uid
    assert kube_emulator.get("v1", "ConfigMap", "ghost") is None
    assert kube_emulator.resource_version == before


async def test_generation_only_for_kinds_that_keep_one(kube_emulator: KubeEmulator) -> None:
    cm = kube_emulator.create(configmap("cfg", data={"a": "1"}))
    assert "generation" not in cm["metadata"]
    changed = kube_emulator.patch("v1", "ConfigMap", "cfg", {"data": {"a": "2"}})
    assert "generation" not in changed["metadata"]
    dep = kube_emulator.create(deployment("web"))
    assert dep["metadata"]["generation"] == 1


async def test_create_with_generate_name_and_builtin_without_type_meta(kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="cfg-"))
    first = await core.create_namespaced_config_map("default", body)
    second = await core.create_namespaced_config_map("default", body)
    assert first.metadata.name.startswith("cfg-")
    assert len(first.metadata.name) == 9
    assert first.metadata.name != second.metadata.name
    assert first.kind == "ConfigMap"
    assert first.api_version == "v1"


async def test_missing_namespace_is_404_unless_auto_created() -> None:
    async with KubeEmulator(auto_create_namespaces=False) as emu, emu.api_client() as api:
        core = client.CoreV1Api(api)
        with pytest.raises(client.ApiException) as exc:
            await core.create_namespaced_config_map("nowhere", configmap("c", "nowhere"))
        assert exc.value.status == 404
        assert status_body(exc.value)["message"] == 'namespaces "nowhere" not found'
    async with KubeEmulator() as emu, emu.api_client() as api:
        await client.CoreV1Api(api).create_namespaced_config_map("elsewhere", configmap("c", "elsewhere"))
        assert emu.get("v1", "Namespace", "elsewhere") is not None


async def test_unknown_paths_and_methods(kube_emulator: KubeEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{kube_emulator.url}/apis/nope.io/v1/things") as resp:
            assert resp.status == 404
            assert (await resp.json())["reason"] == "NotFound"
        async with http.post(f"{kube_emulator.url}/apis/apps/v1/deployments", json=deployment("x")) as resp:
            assert resp.status == 405
            assert (await resp.json())["reason"] == "MethodNotAllowed"
        async with http.get(f"{kube_emulator.url}/api/v1/namespaces/default/configmaps/x/status") as resp:
            assert resp.status == 404


async def test_dynamic_client_discovers_served_resources(kube_api: client.ApiClient, tmp_path: Path) -> None:
    async with dynamic.DynamicClient(kube_api, cache_file=str(tmp_path / "cache")) as dyn:
        scaled = await dyn.resources.get(api_version="keda.sh/v1alpha1", kind="ScaledObject")
        assert scaled.namespaced
        assert scaled.subresources["status"]
        deployments = await dyn.resources.get(api_version="apps/v1", kind="Deployment")
        assert set(deployments.subresources) == {"status", "scale"}
        envoy = await dyn.resources.get(api_version="networking.istio.io/v1", kind="EnvoyFilter")
        created = await dyn.create(
            envoy,
            namespace="default",
            body={
                "apiVersion": "networking.istio.io/v1",
                "kind": "EnvoyFilter",
                "metadata": {"name": "ef"},
                "spec": {"configPatches": []},
            },
        )
        assert created.metadata.name == "ef"
        old_version = await dyn.resources.get(api_version="networking.istio.io/v1alpha3", kind="EnvoyFilter")
        same = await dyn.get(old_version, name="ef", namespace="default")
        assert same.apiVersion == "networking.istio.io/v1alpha3"
        assert same.metadata.uid == created.metadata.uid


async def test_crds_are_listed_and_new_ones_are_served(kube_api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(kube_api)
    names = {c.metadata.name for c in (await ext.list_custom_resource_definition()).items}
    assert {
        "httpscaledobjects.http.keda.sh",
        "interceptorroutes.http.keda.sh",
        "scaledobjects.keda.sh",
        "envoyfilters.networking.istio.io",
    } <= names
    await ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                "versions": [
                    {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}}
                ],
            },
        }
    )
    crd = client.CustomObjectsApi(kube_api)
    await crd.create_namespaced_custom_object(
        "example.com",
        "v1",
        "default",
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )
    listed = await crd.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert [w["metadata"]["name"] for w in listed["items"]] == ["w"]


async def test_kubeconfig_works_with_load_kube_config(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    path = kube_emulator.kubeconfig(tmp_path / "kubeconfig")
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    assert cfg.host == kube_emulator.url
    async with client.ApiClient(cfg) as api:
        namespaces = await client.CoreV1Api(api).list_namespace()
    assert "default" in {n.metadata.name for n in namespaces.items}
