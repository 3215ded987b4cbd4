"""WATCH through `kubernetes.aio.watch.Watch`: replay, live events, selectors,
bookmarks, timeouts, 410 after compaction, and resuming after a server close."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from kubernetes.aio import client, watch

from tests.kubeemu import KubeEmulator, wait_for
from tests.kubeemu.manifests import configmap, http_scaled_object

pytest_plugins = ["tests.kubeemu.pytest_plugin"]

Event = dict[str, Any]


async def take(
    w: watch.Watch, func: Callable[..., Any], n: int, *args: Any, timeout: float = 5.0, **kwargs: Any
) -> list[Event]:
    """The first `n` events of a watch stream, then the stream is closed."""
    events: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in w.stream(func, *args, **kwargs):
            events.append(event)
            if len(events) == n:
                break
    await w.close()
    return events


def summary(events: list[Event]) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


async def test_watch_from_list_version_replays_changes_in_order(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    kube_emulator.create(configmap("before"))
    listed = await core.list_namespaced_config_map("default")
    await core.create_namespaced_config_map("default", configmap("cfg", data={"k": "1"}))
    await core.patch_namespaced_config_map("cfg", "default", {"data": {"k": "2"}})
    await core.delete_namespaced_config_map("cfg", "default")

    events = await take(
        watch.Watch(), core.list_namespaced_config_map, 3, "default", resource_version=listed.metadata.resource_version
    )
    assert summary(events) == [("ADDED", "cfg"), ("MODIFIED", "cfg"), ("DELETED", "cfg")]
    assert isinstance(events[0]["object"], client.V1ConfigMap)
    assert events[1]["object"].data == {"k": "2"}
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions)
    assert len(set(versions)) == 3
    assert versions[-1] == kube_emulator.resource_version
    assert events[0]["raw_object"]["kind"] == "ConfigMap"


async def test_watch_streams_live_events(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    consumer = asyncio.create_task(
        take(
            watch.Watch(),
            core.list_namespaced_config_map,
            2,
            "default",
            resource_version=str(kube_emulator.resource_version),
        )
    )
    await wait_for(lambda: kube_emulator.open_watches == 1, message="watch to open")
    kube_emulator.create(configmap("live"))
    kube_emulator.delete("v1", "ConfigMap", "live")
    assert summary(await consumer) == [("ADDED", "live"), ("DELETED", "live")]
    # Closing the client side ends the server's watch session.
    await wait_for(lambda: kube_emulator.open_watches == 0, message="watch to close")


async def test_watch_without_version_starts_with_synthetic_added(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    kube_emulator.create(configmap("one"))
    kube_emulator.create(configmap("two"))
    kube_emulator.create(configmap("elsewhere", namespace="other"))
    events = await take(watch.Watch(), client.CoreV1Api(kube_api).list_namespaced_config_map, 2, "default")
    assert summary(events) == [("ADDED", "one"), ("ADDED", "two")]


async def test_selector_watch_turns_leaving_objects_into_deleted(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    start = str(kube_emulator.resource_version)
    kube_emulator.create(configmap("a", labels={"app": "web"}))
    kube_emulator.create(configmap("noise", labels={"app": "db"}))
    kube_emulator.patch("v1", "ConfigMap", "a", {"metadata": {"labels": {"app": "db"}}})
    left_at = kube_emulator.resource_version
    kube_emulator.patch("v1", "ConfigMap", "a", {"metadata": {"labels": {"app": "web"}}})
    kube_emulator.delete("v1", "ConfigMap", "a")

    events = await take(
        watch.Watch(), core.list_namespaced_config_map, 4, "default", resource_version=start, label_selector="app=web"
    )
    assert summary(events) == [("ADDED", "a"), ("DELETED", "a"), ("ADDED", "a"), ("DELETED", "a")]
    leaving = events[1]["object"]
    # The DELETED event carries the last matching content at the new version.
    assert leaving.metadata.labels == {"app": "web"}
    assert leaving.metadata.resource_version == str(left_at)


async def test_bookmarks_only_when_allowed(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    kube_emulator.bookmark_interval = 0.05
    core = client.CoreV1Api(kube_api)
    kube_emulator.create(configmap("cfg"))
    now = str(kube_emulator.resource_version)

    async def all_events(**kwargs: Any) -> tuple[list[Event], watch.Watch]:
        w = watch.Watch()
        events = [
            e
            async for e in w.stream(
                core.list_namespaced_config_map, "default", resource_version=now, timeout_seconds=1, **kwargs
            )
        ]
        return events, w

    (with_bm, w), (without_bm, _) = await asyncio.gather(all_events(allow_watch_bookmarks=True), all_events())
    assert without_bm == []
    assert len(with_bm) >= 5
    assert {e["type"] for e in with_bm} == {"BOOKMARK"}
    bookmark = with_bm[0]["raw_object"]
    assert bookmark["kind"] == "ConfigMap"
    assert bookmark["apiVersion"] == "v1"
    assert bookmark["metadata"]["resourceVersion"] == now
    assert w.resource_version == now


async def test_bookmark_version_follows_other_resources(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    kube_emulator.bookmark_interval = 0.05
    start = str(kube_emulator.resource_version)
    kube_emulator.create(configmap("unrelated"))  # another type bumps the global version
    w = watch.Watch()
    events = await take(
        w,
        client.CoreV1Api(kube_api).list_namespaced_service,
        1,
        "default",
        resource_version=start,
        allow_watch_bookmarks=True,
    )
    assert events[0]["type"] == "BOOKMARK"
    assert int(events[0]["raw_object"]["metadata"]["resourceVersion"]) > int(start)


async def test_watch_from_compacted_version_gets_410(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    old = str(kube_emulator.resource_version)
    kube_emulator.create(configmap("cfg"))
    kube_emulator.compact()

    with pytest.raises(client.ApiException) as bounded:
        await take(
            watch.Watch(), core.list_namespaced_config_map, 1, "default", resource_version=old, timeout_seconds=5
        )
    assert bounded.value.status == 410
    assert "Expired" in str(bounded.value.reason)
    assert len(kube_emulator.requests_matching("GET", watch=True)) == 1

    # Without timeout_seconds the client retries a 410 once, from the same version.
    kube_emulator.clear_requests()
    with pytest.raises(client.ApiException) as forever:
        await take(watch.Watch(), core.list_namespaced_config_map, 1, "default", resource_version=old)
    assert forever.value.status == 410
    retried = kube_emulator.requests_matching("GET", watch=True)
    assert [r.query["resourceVersion"] for r in retried] == [old, old]


async def test_compaction_keeps_watching_from_current_version(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    kube_emulator.create(configmap("cfg"))
    kube_emulator.compact()
    now = str(kube_emulator.resource_version)
    kube_emulator.create(configmap("after"))
    events = await take(
        watch.Watch(), client.CoreV1Api(kube_api).list_namespaced_config_map, 1, "default", resource_version=now
    )
    assert summary(events) == [("ADDED", "after")]


async def test_timeout_seconds_ends_stream_cleanly(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    w = watch.Watch()
    events = [e async for e in w.stream(client.CoreV1Api(kube_api).list_namespaced_pod, "default", timeout_seconds=1)]
    assert events == []
    assert 0.9 <= loop.time() - started < 3


async def test_cluster_wide_watch_with_field_selector(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    start = str(kube_emulator.resource_version)
    for ns in ("blue", "green"):
        kube_emulator.create(configmap("cfg", namespace=ns))
    core = client.CoreV1Api(kube_api)
    both = await take(watch.Watch(), core.list_config_map_for_all_namespaces, 2, resource_version=start)
    assert [e["object"].metadata.namespace for e in both] == ["blue", "green"]
    green = await take(
        watch.Watch(),
        core.list_config_map_for_all_namespaces,
        1,
        resource_version=start,
        field_selector="metadata.namespace=green",
    )
    assert green[0]["object"].metadata.namespace == "green"


async def test_watch_custom_objects(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    crd = client.CustomObjectsApi(kube_api)
    start = str(kube_emulator.resource_version)
    await crd.create_namespaced_custom_object(
        "http.keda.sh", "v1alpha1", "default", "httpscaledobjects", http_scaled_object("shop")
    )
    await crd.patch_namespaced_custom_object_status(
        "http.keda.sh",
        "v1alpha1",
        "default",
        "httpscaledobjects",
        "shop",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
    )
    w = watch.Watch()
    events = await take(
        w,
        crd.list_namespaced_custom_object,
        2,
        "http.keda.sh",
        "v1alpha1",
        "default",
        "httpscaledobjects",
        resource_version=start,
    )
    assert summary(events) == [("ADDED", "shop"), ("MODIFIED", "shop")]
    assert events[1]["object"]["status"]["conditions"][0]["type"] == "Ready"
    assert w.resource_version == str(kube_emulator.resource_version)


async def test_server_closing_a_watch_makes_the_client_resume(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    seen: list[Event] = []

    async def consume() -> None:
        async for event in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version="0"):
            seen.append(event)

    task = asyncio.create_task(consume())
    try:
        await wait_for(lambda: kube_emulator.open_watches == 1, message="watch to open")
        first = kube_emulator.create(configmap("first"))
        await wait_for(lambda: len(seen) == 1, message="first event")
        assert kube_emulator.close_watches() == 1
        await wait_for(
            lambda: len(kube_emulator.requests_matching("GET", watch=True)) == 2 and kube_emulator.open_watches == 1,
            message="re-watch",
        )
        kube_emulator.create(configmap("second"))
        await wait_for(lambda: len(seen) == 2, message="second event")
    finally:
        task.cancel()
    assert summary(seen) == [("ADDED", "first"), ("ADDED", "second")]
    rewatch = kube_emulator.requests_matching("GET", watch=True)[1]
    assert rewatch.query["resourceVersion"] == first["metadata"]["resourceVersion"]


async def test_send_initial_events_ends_with_a_marked_bookmark(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(configmap("one"))
    query = "watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=5"
    url = f"{kube_emulator.url}/api/v1/namespaces/default/configmaps?{query}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        first = json.loads(await resp.content.readline())
        second = json.loads(await resp.content.readline())
    assert first["type"] == "ADDED"
    assert first["object"]["metadata"]["name"] == "one"
    assert second["type"] == "BOOKMARK"
    assert second["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert second["object"]["metadata"]["resourceVersion"] == str(kube_emulator.resource_version)
