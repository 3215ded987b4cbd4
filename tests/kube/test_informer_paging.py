"""The informer lists in pages of 500, as client-go's reflector does, and still sees every object."""

from __future__ import annotations

import asyncio
from typing import Any

from extproc.providers.kubernetes.api import KubeApi, Resource
from extproc.providers.kubernetes.informer import Informer
from tests.kubeemu import KubeEmulator
from tests.kubeemu.manifests import configmap

pytest_plugins = ["tests.kubeemu.pytest_plugin"]

CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")


async def test_the_informer_sees_all_objects_through_pages(kube_emulator: KubeEmulator) -> None:
    count = 1203
    for n in range(count):
        kube_emulator.create(configmap(f"cm{n:04}", namespace="many"))
    added: list[Any] = []
    api = KubeApi(kube_emulator.api_client())
    informer = Informer(api, CONFIGMAPS, lambda kind, _old, new: added.append((kind, new)), namespace="many")
    try:
        informer.start()
        await informer.synced.wait()
    finally:
        await informer.stop()
        await api.close()
    assert len(informer.cache) == count
    assert sorted(new["metadata"]["name"] for kind, new in added if kind == "ADDED") == [
        f"cm{n:04}" for n in range(count)
    ]
    lists = kube_emulator.request_log.matching(method="GET", path_contains="/configmaps", watch=False)
    assert [r.query.get("limit") for r in lists] == ["500", "500", "500"]
    assert [bool(r.query.get("continue")) for r in lists] == [False, True, True]


async def test_the_first_list_reports_each_page_before_reading_the_next(kube_emulator: KubeEmulator) -> None:
    for n in range(1203):
        kube_emulator.create(configmap(f"cm{n:04}", namespace="many"))
    lists_read_at_first_event: list[int] = []

    def on_change(_kind: str, _old: Any, _new: Any) -> None:
        if not lists_read_at_first_event:
            lists = kube_emulator.request_log.matching(method="GET", path_contains="/configmaps", watch=False)
            lists_read_at_first_event.append(len(lists))

    api = KubeApi(kube_emulator.api_client())
    informer = Informer(api, CONFIGMAPS, on_change, namespace="many")
    try:
        informer.start()
        await informer.synced.wait()
    finally:
        await informer.stop()
        await api.close()
    # What consumers derive from the first 500 objects overlaps reading the other 703 (the second page may
    # already be requested: it is fetched ahead).
    assert len(lists_read_at_first_event) == 1
    assert lists_read_at_first_event[0] < 3
    assert len(informer.cache) == 1203


async def test_the_next_page_is_requested_while_the_caller_holds_this_one(kube_emulator: KubeEmulator) -> None:
    for n in range(1203):
        kube_emulator.create(configmap(f"cm{n:04}", namespace="many"))
    api = KubeApi(kube_emulator.api_client())
    arrived = asyncio.Event()

    class Noted(list[Any]):
        def append(self, record: Any) -> None:
            super().append(record)
            arrived.set()

    kube_emulator.request_log.records = Noted()

    def lists_sent() -> int:
        return len(kube_emulator.request_log.matching(method="GET", path_contains="/configmaps", watch=False))

    async def until_sent(count: int) -> None:
        while lists_sent() < count:
            arrived.clear()
            await arrived.wait()

    try:
        pages = api.pages(CONFIGMAPS, "many")
        first, _ = await anext(pages)
        # The caller has not asked for the second page, yet the server is already serving it.
        await asyncio.wait_for(until_sent(2), timeout=5)
        rest = [item async for page, _ in pages for item in page]
    finally:
        await api.close()
    assert len(first) + len(rest) == 1203
    assert lists_sent() == 3
