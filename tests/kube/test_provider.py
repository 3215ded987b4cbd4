"""The Kubernetes provider against the API emulator, through the official client: routes from
HTTPScaledObjects, ScaledObjects and status written, edits and deletes followed, invalid objects isolated,
410 and API server outages survived, scale from zero."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers import route, wait_for
from tests.kube.harness import HTTPSO, KEDA, httpso, key, ready_condition, target_keys, workload, zerohop
from tests.kubeemu import KubeEmulator

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = pytest.mark.kube


async def test_httpscaledobject_becomes_a_route_a_scaledobject_and_a_ready_status(
    kube_emulator: KubeEmulator,
) -> None:
    emu = kube_emulator
    workload(emu, "app")
    created = emu.create(httpso("app", replicas={"min": 1, "max": 7}, scaledownPeriod=120))
    async with zerohop(emu, scaler_address="127.0.0.1:0") as server:
        assert target_keys(server) == {"default/app"}
        assert server.ready()
        # By the cluster alone: no host to fall back on.
        state = route(server.core.router.table, b"", cluster="outbound|8080||app.default.svc.cluster.local")
        assert state is not None
        assert state.key == key("app")
        scaled = await emu.wait_for_object(KEDA, "ScaledObject", "app")
        spec = scaled["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app"}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["cooldownPeriod"]) == (1, 7, 120)
        [trigger] = spec["triggers"]
        assert trigger["type"] == "external-push"
        assert trigger["metadata"]["httpScaledObject"] == "app"
        assert trigger["metadata"]["scalerAddress"].startswith("zerohop.zerohop-system.svc.cluster.local:")
        [owner] = scaled["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["uid"], owner["controller"]) == (
            "HTTPScaledObject",
            created["metadata"]["uid"],
            True,
        )
        condition = await emu.wait_until(lambda: ready_condition(emu, "app"))
        assert (condition["status"], condition["reason"]) == ("True", "Reconciled")
        status = emu.get(HTTPSO, "HTTPScaledObject", "app")["status"]  # type: ignore[index]
        assert status["targetWorkload"] == "apps/v1/Deployment/app"
        assert status["targetService"] == "app:8080"


async def test_invalid_objects_get_a_condition_and_never_break_valid_routes(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    workload(emu, "good")
    emu.create(httpso("good"))
    emu.create(httpso("both", scalingMetric={"requestRate": {}, "concurrency": {}}))
    emu.create(httpso("noport", scaleTargetRef={"name": "x", "service": "x"}))
    emu.create(httpso("nosvc", scaleTargetRef={"name": "ghost", "service": "ghost", "port": 80}))
    async with zerohop(emu) as server:
        # The two invalid specs are left out; a valid spec whose Service is missing is still served.
        assert target_keys(server) == {"default/good", "default/nosvc"}
        both = await emu.wait_until(lambda: ready_condition(emu, "both"))
        assert (both["status"], both["reason"]) == ("False", "InvalidSpec")
        assert "set either requestRate or concurrency" in both["message"]
        noport = await emu.wait_until(lambda: ready_condition(emu, "noport"))
        assert "one of port or portName" in noport["message"]
        nosvc = await emu.wait_until(lambda: ready_condition(emu, "nosvc"))
        assert (nosvc["status"], nosvc["reason"]) == ("False", "ServiceNotFound")
        good = await emu.wait_until(lambda: ready_condition(emu, "good"))
        assert good["status"] == "True"
        problems = {p["name"]: p["message"] for p in server.provider.status().as_dict()["problems"]}
        assert set(problems) == {"default/both", "default/noport"}
        assert "set either requestRate or concurrency" in problems["default/both"]
        assert emu.get(KEDA, "ScaledObject", "both") is None


async def test_edits_and_deletes_are_followed(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    workload(emu, "app")
    emu.create(httpso("app"))
    async with zerohop(emu) as server:
        await emu.wait_for_object(KEDA, "ScaledObject", "app")
        emu.patch(HTTPSO, "HTTPScaledObject", "app", {"spec": {"hosts": ["new.test"], "replicas": {"max": 9}}})
        await wait_for(lambda: route(server.core.router.table, b"new.test") is not None, 5, what="new host routed")
        assert route(server.core.router.table, b"app.test") is None
        await emu.wait_until(
            lambda: (emu.get(KEDA, "ScaledObject", "app") or {}).get("spec", {}).get("maxReplicaCount") == 9
        )
        condition = await emu.wait_until(
            lambda: (c := ready_condition(emu, "app")) and c.get("observedGeneration") == 2 and c
        )
        assert condition["status"] == "True"
        emu.delete(HTTPSO, "HTTPScaledObject", "app")
        await wait_for(lambda: len(server.core.registry) == 0, 5, what="target removed")
        # The ScaledObject is owned by the HTTPScaledObject: garbage collection removes it.
        await emu.wait_until(lambda: emu.get(KEDA, "ScaledObject", "app") is None)


async def test_skip_annotation_and_foreign_scaledobject(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    workload(emu, "skip")
    workload(emu, "taken")
    skipped = httpso("skip")
    skipped["metadata"]["annotations"] = {"httpscaledobject.keda.sh/skip-scaledobject-creation": "true"}
    emu.create(skipped)
    emu.create(
        {
            "apiVersion": KEDA,
            "kind": "ScaledObject",
            "metadata": {"name": "taken"},
            "spec": {"scaleTargetRef": {"name": "taken"}},
        }
    )
    emu.create(httpso("taken"))
    async with zerohop(emu):
        taken = await emu.wait_until(lambda: ready_condition(emu, "taken"))
        assert (taken["status"], taken["reason"]) == ("False", "ScaledObjectConflict")
        assert emu.get(KEDA, "ScaledObject", "taken")["spec"] == {"scaleTargetRef": {"name": "taken"}}  # type: ignore[index]
        skip = await emu.wait_until(lambda: ready_condition(emu, "skip"))
        assert skip["status"] == "True"
        assert emu.get(KEDA, "ScaledObject", "skip") is None


async def test_watch_410_relists_without_losing_routes(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    workload(emu, "a")
    emu.create(httpso("a"))
    async with zerohop(emu) as server:
        informer = next(i for i in server.provider._informers if i.resource.plural == "httpscaledobjects")  # type: ignore[attr-defined]
        emu.create(httpso("b"))  # the watch sees it
        await wait_for(lambda: len(server.core.registry) == 2, 5, what="b routed")
        # While the API server is down: a change, then compaction past every version the informer has seen,
        # so its reconnect from its last resourceVersion must get 410 and list again.
        await emu.stop()
        emu.create(httpso("c"))
        emu.delete(HTTPSO, "HTTPScaledObject", "b")
        emu.compact()
        assert target_keys(server) == {"default/a", "default/b"}  # last known routes while down
        await emu.start()
        await wait_for(lambda: informer.relists >= 1, 10, what="relist after 410")
        await wait_for(lambda: target_keys(server) == {"default/a", "default/c"}, 5, what="c added, b removed")
        lists = emu.requests_matching("GET", path_contains="httpscaledobjects", watch=False)
        assert len(lists) >= 2  # the first list, and the relist after the 410


async def test_api_server_outage_keeps_routes_and_recovers(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    workload(emu, "a")
    emu.create(httpso("a"))
    async with zerohop(emu) as server:
        await emu.wait_for_object(KEDA, "ScaledObject", "a")
        await emu.stop()
        informer = next(i for i in server.provider._informers if i.resource.plural == "httpscaledobjects")  # type: ignore[attr-defined]
        await wait_for(lambda: not informer.connected, 10, what="outage noticed")
        assert target_keys(server) == {"default/a"}
        assert server.ready()  # serving the last known routes; readiness stays up
        status = server.status()["provider"]
        assert any(not i["connected"] and i["lastError"] for i in status["informers"])
        await emu.start()
        emu.create(httpso("b"))
        await wait_for(lambda: len(server.core.registry) == 2, 30, 0.05, what="watch resumed after restart")
        assert informer.connected


async def test_cold_request_scales_from_zero_and_is_released_when_ready(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    emu.enable_kubelet(ready_delay=0.3)
    workload(emu, "app")
    emu.create(httpso("app", replicas={"min": 2, "max": 5}))
    async with zerohop(emu, propagation_delay=0.1) as server:
        gate = server.core.cold_gate
        target = gate.for_target(key("app"))
        assert not target.routable
        hold = gate.try_hold(target)
        assert hold is not None
        waiting = asyncio.create_task(hold.wait(10))
        # The Scale is read, then written back with its resourceVersion as the precondition.
        await emu.wait_until(lambda: emu.get("apps/v1", "Deployment", "app")["spec"]["replicas"] == 2)  # type: ignore[index]
        [put] = emu.requests_matching("PUT", path_contains="/deployments/app/scale")
        assert put.body["spec"] == {"replicas": 2}
        assert put.body["metadata"]["resourceVersion"]
        started = asyncio.get_running_loop().time()
        outcome = await waiting
        assert outcome.value == "released"
        assert asyncio.get_running_loop().time() - started >= 0.3
        hold.close()
        # A second wake while not at zero any more does not touch the count.
        emu.patch("apps/v1", "Deployment", "app", {"spec": {"replicas": 4}})
        target.last_wake = -1e18
        gate.wake(target)
        await asyncio.sleep(0.3)
        assert emu.get("apps/v1", "Deployment", "app")["spec"]["replicas"] == 4  # type: ignore[index]
        assert server.provider.scale_patches == 1  # type: ignore[attr-defined]


async def test_losing_every_ready_endpoint_makes_the_target_cold_again(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    kubelet = emu.enable_kubelet(ready_delay=0.0)
    workload(emu, "app")
    emu.patch("apps/v1", "Deployment", "app", {"spec": {"replicas": 1}})
    emu.create(httpso("app"))
    async with zerohop(emu) as server:
        target = server.core.cold_gate.for_target(key("app"))
        await wait_for(lambda: target.routable, 5, what="routable")
        kubelet.set_ready("default", "app", 0, False)
        await wait_for(lambda: not target.routable, 5, what="not routable after the endpoint turned unready")


async def test_leader_keeps_the_scoped_envoyfilter_in_step_with_hosts(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    workload(emu, "app")
    emu.create(httpso("app", hosts=["app.example.com", "*.app.example.com"]))
    async with zerohop(emu, manage_envoyfilters=True, gateway_ports=(80,)):
        envoyfilter = await emu.wait_for_object(
            "networking.istio.io/v1alpha3", "EnvoyFilter", "zerohop-ext-proc", "istio-system"
        )
        patches = envoyfilter["spec"]["configPatches"]
        assert patches[0]["patch"]["value"]["disabled"] is True
        assert [p["match"]["routeConfiguration"]["vhost"]["name"] for p in patches[1:]] == [
            "*.app.example.com:80",
            "app.example.com:80",
        ]
        assert envoyfilter["spec"]["workloadSelector"]["labels"] == {"istio": "ingressgateway"}
        emu.patch(HTTPSO, "HTTPScaledObject", "app", {"spec": {"hosts": ["moved.example.com"]}})

        def hosts() -> list[str]:
            current = emu.get("networking.istio.io/v1alpha3", "EnvoyFilter", "zerohop-ext-proc", "istio-system") or {}
            return [p["match"]["routeConfiguration"]["vhost"]["name"] for p in current["spec"]["configPatches"][1:]]

        await emu.wait_until(lambda: hosts() == ["moved.example.com:80"])


async def test_the_managed_envoyfilter_routes_to_each_targets_fallback_service(kube_emulator: KubeEmulator) -> None:
    """coldStartTimeoutFailoverRef: a route first in each of the target's virtual hosts, to the fallback's
    outbound cluster (a portName resolved from the Service), and gone with the field."""
    emu = kube_emulator
    workload(emu, "app")
    workload(emu, "backup", target_port=18081)
    failover = {"service": "backup", "portName": "http", "timeoutSeconds": 5}
    emu.create(httpso("app", hosts=["app.example.com"], coldStartTimeoutFailoverRef=failover))
    emu.create(httpso("backup", hosts=["backup.example.com"]))

    def routes() -> list[tuple[str, str, str]]:
        current = emu.get("networking.istio.io/v1alpha3", "EnvoyFilter", "zerohop-ext-proc", "istio-system") or {}
        return [
            (
                p["match"]["routeConfiguration"]["vhost"]["name"],
                p["patch"]["operation"],
                p["patch"]["value"]["route"]["cluster"],
            )
            for p in (current.get("spec") or {}).get("configPatches") or []
            if p["applyTo"] == "HTTP_ROUTE"
        ]

    async with zerohop(emu, manage_envoyfilters=True, gateway_ports=(80,)):
        await emu.wait_until(
            lambda: (
                routes() == [("app.example.com:80", "INSERT_FIRST", "outbound|8080||backup.default.svc.cluster.local")]
            )
        )
        emu.patch(HTTPSO, "HTTPScaledObject", "app", {"spec": {"coldStartTimeoutFailoverRef": None}})
        await emu.wait_until(lambda: routes() == [])


async def test_the_managed_envoyfilter_points_at_zerohops_own_service(kube_emulator: KubeEmulator) -> None:
    """--service-name and --pod-namespace name the Service the gateway's ext_proc cluster reaches."""
    emu = kube_emulator
    workload(emu, "app")
    emu.create(httpso("app", hosts=["app.example.com"]))
    async with zerohop(emu, manage_envoyfilters=True, service_name="zh-edge", pod_namespace="edge"):
        envoyfilter = await emu.wait_for_object(
            "networking.istio.io/v1alpha3", "EnvoyFilter", "zerohop-ext-proc", "istio-system"
        )
        ext_proc = envoyfilter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
        cluster = ext_proc["grpc_service"]["envoy_grpc"]["cluster_name"]
        assert cluster == "outbound|9000||zh-edge.edge.svc.cluster.local"


def condition_of(emu: KubeEmulator, name: str, kind: str) -> dict[str, object] | None:
    obj = emu.get(HTTPSO, "HTTPScaledObject", name) or {}
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


async def test_unknown_fields_get_a_condition_and_one_warning(
    kube_emulator: KubeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    emu = kube_emulator
    workload(emu, "app")
    workload(emu, "typo")
    workload(emu, "plain")
    # Acted on (failover, placeholder page): no IgnoredFields condition, no warning.
    placeholder = {"enabled": True, "statusCode": 503, "content": "starting"}
    failover = {"service": "plain", "port": 8080}
    emu.create(httpso("app", placeholderConfig=placeholder, coldStartTimeoutFailoverRef=failover))
    # The emulator keeps unknown fields (a CRD with x-kubernetes-preserve-unknown-fields would too).
    emu.create(httpso("typo", targetPendingRequest=5))
    emu.create(httpso("plain"))
    with caplog.at_level("WARNING"):
        async with zerohop(emu) as server:
            assert target_keys(server) == {"default/app", "default/typo", "default/plain"}
            typo = await emu.wait_until(lambda: condition_of(emu, "typo", "IgnoredFields"))
            assert typo["reason"] == "UnknownFields"
            assert "spec.targetPendingRequest: unknown field; did you mean targetPendingRequests?" in str(
                typo["message"]
            )
            await emu.wait_until(lambda: condition_of(emu, "plain", "Ready"))
            await emu.wait_until(lambda: condition_of(emu, "app", "Ready"))
            assert condition_of(emu, "plain", "IgnoredFields") is None
            assert condition_of(emu, "app", "IgnoredFields") is None
            # An unrelated edit does not repeat the warnings.
            emu.patch(HTTPSO, "HTTPScaledObject", "typo", {"spec": {"replicas": {"max": 4}}})
            await wait_for(
                lambda: any(state.spec.max_replicas == 4 for state in server.core.registry), 10, what="edit applied"
            )
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert not any("default/app" in w for w in warnings)
    assert sum("spec.targetPendingRequest: unknown field" in w for w in warnings) == 1
