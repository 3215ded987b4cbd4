"""Kubernetes events cost what they change: a status-only or metadata-only HTTPScaledObject update leaves the
route table alone, a spec change touches that target's entries only, and EndpointSlices count per Service
(added, removed and moved between Services)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from extproc.app.server import ZerohopServer
from extproc.providers.kubernetes.api import KubeApi
from extproc.providers.kubernetes.provider import KubernetesProvider
from tests.helpers import route, wait_for
from tests.kube.harness import HTTPSO, KEDA, httpso, key, ready_condition, settings, target_keys, workload, zerohop
from tests.kubeemu import KubeEmulator
from tests.kubeemu.manifests import service

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = pytest.mark.kube

SLICE = "discovery.k8s.io/v1"


def provider(server: ZerohopServer) -> KubernetesProvider:
    assert isinstance(server.provider, KubernetesProvider)
    return server.provider


async def test_a_status_only_update_leaves_the_route_table_alone(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    workload(emu, "app")
    emu.create(httpso("app"))
    async with zerohop(emu) as server:
        # zerohop's own status write is the first status-only update every replica sees.
        await emu.wait_until(lambda: ready_condition(emu, "app"))
        await wait_for(lambda: provider(server).status_only_events >= 1, 5, what="own status write seen")
        table, published = server.core.router.table, server.core.router.published
        seen = provider(server).status_only_events
        emu.patch(
            HTTPSO, "HTTPScaledObject", "app", {"status": {"targetService": "someone-else"}}, subresource="status"
        )
        await wait_for(lambda: provider(server).status_only_events > seen, 5, what="status update seen")
        assert server.core.router.table is table
        assert server.core.router.published == published


async def test_a_metadata_only_update_reaches_the_scaledobject_not_the_route_table(
    kube_emulator: KubeEmulator,
) -> None:
    emu = kube_emulator
    workload(emu, "app")
    emu.create(httpso("app"))
    async with zerohop(emu) as server:
        await emu.wait_for_object(KEDA, "ScaledObject", "app")
        table, published = server.core.router.table, server.core.router.published
        updated = emu.patch(HTTPSO, "HTTPScaledObject", "app", {"metadata": {"labels": {"team": "shop"}}})
        assert updated["metadata"]["generation"] == 1
        await emu.wait_until(
            lambda: ((emu.get(KEDA, "ScaledObject", "app") or {}).get("metadata", {}).get("labels") or {}).get("team")
        )
        state = server.core.registry.get(key("app"))
        assert state is not None
        assert state.spec.labels == {"team": "shop"}
        assert server.core.router.table is table
        assert server.core.router.published == published


async def test_a_spec_change_updates_that_target_only(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    for name in ("a", "b", "c"):
        workload(emu, name)
        emu.create(httpso(name))
    async with zerohop(emu) as server:
        before = server.core.router.table
        published = server.core.router.published
        emu.patch(HTTPSO, "HTTPScaledObject", "a", {"spec": {"hosts": ["new-a.test"]}})
        await wait_for(lambda: route(server.core.router.table, b"new-a.test") is not None, 5, what="new host")
        after = server.core.router.table
        assert server.core.router.published == published + 1
        assert after.changed == 1
        assert route(after, b"a.test") is None
        assert route(before, b"a.test") is not None  # the old snapshot is untouched
        for name in ("b", "c"):
            assert after.states[key(name)] is before.states[key(name)]
            assert route(after, f"{name}.test".encode()) is before.states[key(name)]
        cluster = "outbound|8080||a.default.svc.cluster.local"
        assert route(after, b"", cluster=cluster) is after.states[key("a")]


def endpoint_slice(name: str, service_name: str, *addresses: str) -> dict[str, Any]:
    return {
        "apiVersion": SLICE,
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}} for address in addresses],
    }


async def test_endpoint_slices_count_for_the_service_they_name_now(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    for name in ("one", "two"):
        # No selector: the emulator's EndpointSlice controller leaves these Services to the test's slices.
        emu.create(service(name, selector={}, ports=[{"name": "http", "port": 8080, "targetPort": 8080}]))
        emu.create(httpso(name))
    async with zerohop(emu) as server:
        p = provider(server)

        def counts(name: str) -> tuple[int, int] | None:
            replicas = p.replicas(key(name))
            return None if replicas is None else (replicas.desired, replicas.ready)

        emu.create(endpoint_slice("one-a", "one", "10.0.0.1"))
        emu.create(endpoint_slice("one-b", "one", "10.0.0.2", "10.0.0.3"))
        await wait_for(lambda: counts("one") == (3, 3), 5, what="two slices for one")
        assert counts("two") == (0, 0)
        await wait_for(lambda: server.core.cold_gate.for_target(key("one")).routable, 5, what="one routable")

        # Moved: relabelled to the other Service.
        emu.patch(SLICE, "EndpointSlice", "one-b", {"metadata": {"labels": {"kubernetes.io/service-name": "two"}}})
        await wait_for(lambda: counts("two") == (2, 2), 5, what="slice moved to two")
        assert counts("one") == (1, 1)
        await wait_for(lambda: server.core.cold_gate.for_target(key("two")).routable, 5, what="two routable")

        emu.delete(SLICE, "EndpointSlice", "one-a")
        await wait_for(lambda: counts("one") == (0, 0), 5, what="one's last slice removed")
        await wait_for(lambda: not server.core.cold_gate.for_target(key("one")).routable, 5, what="one cold")
        assert server.core.cold_gate.for_target(key("two")).routable
        assert counts("two") == (2, 2)


async def test_first_sync_derives_a_target_once_its_service_is_listed(kube_emulator: KubeEmulator) -> None:
    """At start an HTTPScaledObject listed before its Service waits for it (derived once, not without it
    and then again with it); one whose Service does not exist is derived once every Service is listed."""
    emu = kube_emulator
    for name in ("a", "b"):
        workload(emu, name)
        emu.create(httpso(name))
    emu.create(httpso("orphan"))  # names a Service nobody created
    # The Services list is answered 429 Retry-After 3 once: the HTTPScaledObjects are in well before it.
    emu.inject_throttling(retry_after=3, method="GET", path_contains="/services")
    api = KubeApi(emu.api_client())
    server = ZerohopServer(settings(), kube_api=api)
    starting = asyncio.ensure_future(server.start())
    try:
        kube = provider(server)
        await wait_for(lambda: bool(kube._httpso_informers) and kube._httpso_informers[0].synced.is_set(), 5,
                       what="HTTPScaledObjects listed")  # fmt: skip
        assert not any(i.synced.is_set() for i in kube._service_informers)
        assert len(server.core.registry) == 0  # waiting for their Services, not derived without them
        await asyncio.wait_for(starting, 10)
        assert target_keys(server) == {"default/a", "default/b", "default/orphan"}
        assert kube.table.ports.get(key("a")) == 8080
        assert kube.table.conditions[key("orphan")].reason == "ServiceNotFound"
    finally:
        if not starting.done():
            starting.cancel()
        await server.stop()
        await api.close()
