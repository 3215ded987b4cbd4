"""InterceptorRoutes (http.keda.sh/v1beta1) with the Kubernetes provider against the API emulator: watched beside
HTTPScaledObjects; an InterceptorRoute-only target scales from zero (the workload its user's ScaledObject names,
woken by zerohop's own scale write), is counted on both metrics, and that ScaledObject's trigger gets answers
from zerohop's scaler called as KEDA calls it; the route's status conditions; a cluster without the CRD."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from extproc._proto import externalscaler_pb2 as pb
from extproc._proto import externalscaler_pb2_grpc as pb_grpc
from extproc.providers.kubernetes import provider as kube_provider
from tests.helpers import wait_for
from tests.kube.harness import HTTPSO, KEDA, httpso, key, target_keys, workload, zerohop
from tests.kube.test_scale_from_zero import cold_request, released
from tests.kubeemu import KubeEmulator

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = pytest.mark.kube

ROUTE = "http.keda.sh/v1beta1"
CRD = Path(__file__).parents[2] / "manifests" / "components" / "interceptorroute" / "crd-interceptorroutes.yaml"


def interceptor_route(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "target": {"service": name, "port": 8080},
        "rules": [{"hosts": [f"{name}.test"]}],
        "scalingMetric": {"concurrency": {"targetValue": 3}, "requestRate": {"targetValue": 10}},
    }
    body.update(spec)
    return {
        "apiVersion": ROUTE,
        "kind": "InterceptorRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def users_scaled_object(name: str, route: str, workload_name: str, min_replicas: int = 0) -> dict[str, Any]:
    """The ScaledObject an add-on user writes for a route: their own name, an external-push trigger naming it."""
    return {
        "apiVersion": KEDA,
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"name": workload_name},
            "minReplicaCount": min_replicas,
            "maxReplicaCount": 5,
            "triggers": [
                {
                    "type": "external-push",
                    "metadata": {"scalerAddress": "zerohop.zerohop-system:9090", "interceptorRoute": route},
                }
            ],
        },
    }


def route_conditions(emu: KubeEmulator, name: str) -> dict[str, dict[str, Any]]:
    obj = emu.get(ROUTE, "InterceptorRoute", name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


async def test_a_route_only_target_scales_from_zero_and_answers_its_scaled_objects_trigger(
    kube_emulator: KubeEmulator,
) -> None:
    emu = kube_emulator
    emu.enable_kubelet(ready_delay=0.1)
    workload(emu, "shop-app")
    emu.create(interceptor_route("shop", target={"service": "shop-app", "port": 8080}))
    emu.create(users_scaled_object("shop-so", "shop", "shop-app", min_replicas=2))
    async with zerohop(emu) as server:
        assert target_keys(server) == {"default/shop"}
        state = server.core.registry.get(key("shop"))
        assert state is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.scaler_port}") as channel:
            scaler = pb_grpc.ExternalScalerStub(channel)
            # What KEDA sends for the user's ScaledObject: its own name, every trigger metadata key.
            ref = pb.ScaledObjectRef(
                name="shop-so",
                namespace="default",
                scalerMetadata={"scalerAddress": "zerohop.zerohop-system:9090", "interceptorRoute": "shop"},
            )
            specs = (await scaler.GetMetricSpec(ref)).metricSpecs
            assert [(s.metricName, s.targetSizeFloat) for s in specs] == [
                ("http_shop_concurrency", 3.0),
                ("http_shop_rate", 10.0),
            ]
            assert not (await scaler.IsActive(ref)).result
            # external-push: KEDA holds StreamIsActive open; the cold request pushes true on it.
            stream = scaler.StreamIsActive(ref)
            async with cold_request(server, "shop.test") as call:
                pushed = await asyncio.wait_for(stream.read(), 5)
                assert pushed.result is True
                stream.cancel()
                # Held: counted on both metrics, and active.
                values = {}
                for spec in specs:
                    request = pb.GetMetricsRequest(scaledObjectRef=ref, metricName=spec.metricName)
                    [value] = (await scaler.GetMetrics(request)).metricValues
                    values[value.metricName] = value.metricValueFloat
                assert values["http_shop_concurrency"] == 1.0
                assert values["http_shop_rate"] > 0
                assert (await scaler.IsActive(ref)).result
                # Woken by zerohop itself: the Deployment the user's ScaledObject names, to its minReplicaCount.
                scaled = await emu.wait_for_object(
                    "apps/v1", "Deployment", "shop-app", predicate=lambda d: d["spec"]["replicas"] != 0
                )
                assert scaled["spec"]["replicas"] == 2
                assert await released(call)
        assert server.provider.scale_patches == 1  # type: ignore[attr-defined]
        # zerohop writes no ScaledObject for a route: the user's is the only one.
        assert [so["metadata"]["name"] for so in emu.list(KEDA, "ScaledObject")] == ["shop-so"]
        ready = await emu.wait_until(lambda: route_conditions(emu, "shop").get("Ready"))
        assert (ready["status"], ready["reason"]) == ("True", "Reconciled")
        assert "scaled by the ScaledObject whose trigger names it" in ready["message"]


async def test_route_status_conditions(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    workload(emu, "app")
    emu.create(interceptor_route("good", target={"service": "app", "port": 8080}))
    emu.create(interceptor_route("bad", scalingMetric={}))
    emu.create(interceptor_route("skips", target={"service": "app", "port": 8080}, proxyMode="Endpoint"))
    # An HTTPScaledObject and a route of one name: the HTTPScaledObject is served, the route says why it is not.
    emu.create(httpso("twin", scaleTargetRef={"name": "app", "service": "app", "port": 8080}))
    emu.create(interceptor_route("twin", target={"service": "app", "port": 8080}))
    async with zerohop(emu) as server:
        assert target_keys(server) == {"default/good", "default/skips", "default/twin"}
        twin = server.core.registry.get(key("twin"))
        assert twin is not None
        assert twin.spec.kind == "HTTPScaledObject"

        good = await emu.wait_until(lambda: route_conditions(emu, "good").get("Ready"))
        assert (good["status"], good["reason"], good["observedGeneration"]) == ("True", "Reconciled", 1)
        assert "GatewayVisible" in route_conditions(emu, "good")
        bad = await emu.wait_until(lambda: route_conditions(emu, "bad").get("Ready"))
        assert (bad["status"], bad["reason"]) == ("False", "InvalidSpec")
        assert "spec.scalingMetric: set concurrency, requestRate or both" in bad["message"]
        taken = await emu.wait_until(lambda: route_conditions(emu, "twin").get("Ready"))
        assert (taken["status"], taken["reason"]) == ("False", "NameConflict")
        ignored = await emu.wait_until(lambda: route_conditions(emu, "skips").get("IgnoredFields"))
        assert "spec.proxyMode is not acted on" in ignored["message"]
        # An InterceptorRoute's status is conditions only (no targetWorkload / targetService as on HTTPScaledObjects).
        assert set((emu.get(ROUTE, "InterceptorRoute", "good") or {})["status"]) == {"conditions"}
        problems = {p["name"]: p["kind"] for p in server.provider.status().as_dict()["problems"]}
        assert problems == {"default/bad": "InterceptorRoute"}

        # Deleting the HTTPScaledObject hands the name to the route.
        emu.delete(HTTPSO, "HTTPScaledObject", "twin")
        await emu.wait_until(lambda: (t := server.core.registry.get(key("twin"))) and t.spec.kind == "InterceptorRoute")
        ready = await emu.wait_until(
            lambda: (c := route_conditions(emu, "twin").get("Ready")) and c["reason"] == "Reconciled" and c
        )
        assert ready["status"] == "True"


async def test_without_the_crd_zerohop_serves_httpscaledobjects_and_finds_routes_once_it_is_installed(
    kube_emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = kube_emulator
    monkeypatch.setattr(kube_provider, "_ROUTE_CRD_RECHECK", 0.05)
    emu.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", "interceptorroutes.http.keda.sh", namespace="")
    # The emulator stops serving the resource on its next loop iteration (not a store change: polled).
    await wait_for(lambda: emu.registry.by_kind(ROUTE, "InterceptorRoute") is None, 5, 0.01, what="CRD removed")
    workload(emu, "app")
    emu.create(httpso("app"))
    async with zerohop(emu) as server:
        assert server.ready()
        assert target_keys(server) == {"default/app"}
        # The CRD zerohop ships (components/interceptorroute), applied later: routes are then watched too.
        emu.create(yaml.safe_load(CRD.read_text()))
        await wait_for(lambda: emu.registry.by_kind(ROUTE, "InterceptorRoute") is not None, 5, 0.01, what="served")
        emu.create(interceptor_route("shop", target={"service": "app", "port": 8080}))
        await emu.wait_until(lambda: "default/shop" in target_keys(server), message="the route served")
        assert server.ready()


async def test_the_workload_woken_follows_edits_of_the_scaled_object(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    emu.enable_kubelet(ready_delay=0.1)
    workload(emu, "old-app")
    workload(emu, "new-app")
    emu.create(interceptor_route("shop", target={"service": "new-app", "port": 8080}))
    emu.create(users_scaled_object("shop-so", "shop", "old-app"))
    async with zerohop(emu) as server:
        provider = server.provider
        emu.patch(KEDA, "ScaledObject", "shop-so", {"spec": {"scaleTargetRef": {"name": "new-app"}}})

        def woken_workload() -> str | None:
            named = provider._route_bindings.get(key("shop"), {})  # type: ignore[attr-defined]
            return next((binding.name for binding in named.values()), None)

        await wait_for(lambda: woken_workload() == "new-app", 5, 0.01, what="the edited ScaledObject seen")
        async with cold_request(server, "shop.test") as call:
            await emu.wait_for_object(
                "apps/v1", "Deployment", "new-app", predicate=lambda d: d["spec"]["replicas"] == 1
            )
            assert await released(call)
        old = emu.get("apps/v1", "Deployment", "old-app")
        assert old is not None
        assert old["spec"]["replicas"] == 0
        # A ScaledObject deleted names nothing any more: KEDA alone would activate the route.
        emu.delete(KEDA, "ScaledObject", "shop-so")
        await wait_for(lambda: woken_workload() is None, 5, 0.01, what="the deleted ScaledObject forgotten")


async def test_the_users_scaled_object_carries_a_digest_of_the_routes_metrics(kube_emulator: KubeEmulator) -> None:
    """As the add-on's operator does: an edited route changes its ScaledObject, so KEDA asks GetMetricSpec again."""
    emu = kube_emulator
    workload(emu, "app")
    emu.create(interceptor_route("shop", target={"service": "app", "port": 8080}))
    emu.create(users_scaled_object("shop-so", "shop", "app"))
    emu.create(users_scaled_object("other-so", "elsewhere", "app"))  # names no route zerohop serves: untouched

    def digest() -> str | None:
        so = emu.get(KEDA, "ScaledObject", "shop-so") or {}
        [trigger] = so["spec"]["triggers"]
        value = trigger["metadata"].get("scalingMetricHash")
        return value if isinstance(value, str) else None

    async with zerohop(emu) as server:
        first = await emu.wait_until(digest, message="scalingMetricHash written")
        [trigger] = (emu.get(KEDA, "ScaledObject", "shop-so") or {})["spec"]["triggers"]
        assert trigger["metadata"]["interceptorRoute"] == "shop"  # the rest of the trigger is kept
        assert trigger["metadata"]["scalerAddress"] == "zerohop.zerohop-system:9090"
        assert (
            "scalingMetricHash"
            not in (emu.get(KEDA, "ScaledObject", "other-so") or {})["spec"]["triggers"][0]["metadata"]
        )
        reconciler = server.provider.reconciler  # type: ignore[attr-defined]
        assert reconciler is not None
        await reconciler.reconcile()
        writes = reconciler.writes
        await reconciler.reconcile()
        assert reconciler.writes == writes  # in place: nothing written again

        emu.patch(ROUTE, "InterceptorRoute", "shop", {"spec": {"scalingMetric": {"concurrency": {"targetValue": 9}}}})
        second = await emu.wait_until(lambda: (d := digest()) != first and d, message="a new scalingMetricHash")
        assert second != first


async def test_a_failed_discovery_at_start_neither_blocks_readiness_nor_loses_routes(
    kube_emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = kube_emulator
    monkeypatch.setattr(kube_provider, "_BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(kube_provider, "_ROUTE_CRD_RECHECK", 0.05)
    emu.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", "interceptorroutes.http.keda.sh", namespace="")
    await wait_for(lambda: emu.registry.by_kind(ROUTE, "InterceptorRoute") is None, 5, 0.01, what="CRD removed")
    workload(emu, "app")
    emu.create(httpso("app"))
    # The discovery request fails once (an API server restarting): zerohop cannot tell whether routes exist.
    emu.inject_fault(503, method="GET", path_contains="/apis/http.keda.sh/v1beta1", times=1)
    async with zerohop(emu) as server:
        assert server.ready()  # a watch of a resource nobody serves would never sync
        assert target_keys(server) == {"default/app"}
        emu.create(yaml.safe_load(CRD.read_text()))
        await wait_for(lambda: emu.registry.by_kind(ROUTE, "InterceptorRoute") is not None, 5, 0.01, what="served")
        emu.create(interceptor_route("shop", target={"service": "app", "port": 8080}))
        await wait_for(lambda: "default/shop" in target_keys(server), 5, 0.01, what="the route served")
        assert server.ready()
