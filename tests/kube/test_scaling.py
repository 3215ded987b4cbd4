"""`scale_from_zero` against the API emulator: a Scale at zero (`spec: {}`) is scaled with its resourceVersion as
the precondition, a non-zero count is never written, a conflict is read again, and every failure is a WARNING
that carries the API server's own message."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from extproc.providers.kubernetes.api import DEPLOYMENTS, STATEFULSETS, JsonObj, KubeApi, Resource
from extproc.providers.kubernetes.scaling import ScaleResult, scale_from_zero, spec_replicas
from tests.kubeemu import KubeEmulator
from tests.kubeemu.manifests import deployment, statefulset

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = pytest.mark.kube

SCALE_PATH = "/deployments/web/scale"
FORBIDDEN = 'deployments.apps "web" is forbidden: User "system:serviceaccount:zerohop-system:zerohop" cannot update'


@pytest.fixture
async def api(kube_emulator: KubeEmulator) -> AsyncIterator[KubeApi]:
    kube = KubeApi(kube_emulator.api_client())
    yield kube
    await kube.close()


def replicas_of(emu: KubeEmulator, name: str = "web", kind: str = "Deployment") -> int:
    obj = emu.get("apps/v1", kind, name)
    assert obj is not None
    return int(obj["spec"]["replicas"])


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNING lines `scale_from_zero` logged."""
    scaling = "extproc.providers.kubernetes.scaling"
    return [r.getMessage() for r in caplog.records if r.name == scaling and r.levelno == logging.WARNING]


class RacingApi(KubeApi):
    """A KubeApi that lets `change` run on the emulator between reading a Scale and writing it, once."""

    def __init__(self, emu: KubeEmulator, change: JsonObj) -> None:
        super().__init__(emu.api_client())
        self.emu = emu
        self.change: JsonObj | None = change

    async def replace(
        self, resource: Resource, namespace: str | None, name: str, body: JsonObj, *, subresource: str | None = None
    ) -> JsonObj:
        if self.change is not None:
            self.emu.patch("apps/v1", "Deployment", name, self.change, namespace or "default")
            self.change = None
        return await super().replace(resource, namespace, name, body, subresource=subresource)


def test_a_scale_without_spec_replicas_is_at_zero() -> None:
    assert spec_replicas({"spec": {}}) == 0
    assert spec_replicas({}) == 0
    assert spec_replicas({"spec": {"replicas": 3}}) == 3


async def test_scales_a_deployment_whose_scale_has_no_replicas(kube_emulator: KubeEmulator, api: KubeApi) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    scale = await api.get(DEPLOYMENTS, "default", "web", subresource="scale")
    assert scale is not None
    assert scale["spec"] == {}  # what a real API server sends at zero

    assert await scale_from_zero(api, DEPLOYMENTS, "default", "web", 2) is ScaleResult.SCALED
    assert replicas_of(kube_emulator) == 2
    [put] = kube_emulator.requests_matching("PUT", path_contains=SCALE_PATH)
    assert put.body["metadata"]["resourceVersion"] == scale["metadata"]["resourceVersion"]
    assert put.body["spec"] == {"replicas": 2}
    assert not kube_emulator.requests_matching("PATCH")


async def test_scales_a_statefulset(kube_emulator: KubeEmulator, api: KubeApi) -> None:
    kube_emulator.create(statefulset("db", replicas=0))
    assert await scale_from_zero(api, STATEFULSETS, "default", "db", 1) is ScaleResult.SCALED
    assert replicas_of(kube_emulator, "db", "StatefulSet") == 1


async def test_a_non_zero_count_is_left_alone(kube_emulator: KubeEmulator, api: KubeApi) -> None:
    kube_emulator.create(deployment("web", replicas=3))
    assert await scale_from_zero(api, DEPLOYMENTS, "default", "web", 1) is ScaleResult.NOT_AT_ZERO
    assert replicas_of(kube_emulator) == 3
    assert kube_emulator.requests_matching("PUT") == []


async def test_a_conflict_is_read_again_and_retried(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    racing = RacingApi(kube_emulator, {"metadata": {"labels": {"touched": "yes"}}})
    try:
        assert await scale_from_zero(racing, DEPLOYMENTS, "default", "web", 2) is ScaleResult.SCALED
    finally:
        await racing.close()
    assert [r.status for r in kube_emulator.requests_matching("PUT", path_contains=SCALE_PATH)] == [409, 200]
    assert len(kube_emulator.requests_matching("GET", path_contains=SCALE_PATH)) == 2
    assert replicas_of(kube_emulator) == 2


async def test_a_count_raised_in_between_is_not_overwritten(kube_emulator: KubeEmulator) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    racing = RacingApi(kube_emulator, {"spec": {"replicas": 4}})  # KEDA got there first
    try:
        assert await scale_from_zero(racing, DEPLOYMENTS, "default", "web", 1) is ScaleResult.NOT_AT_ZERO
    finally:
        await racing.close()
    assert replicas_of(kube_emulator) == 4


async def test_endless_conflicts_give_up_with_a_warning(
    kube_emulator: KubeEmulator, api: KubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    kube_emulator.inject_fault(409, method="PUT", path_contains=SCALE_PATH, times=3, reason="Conflict")
    with caplog.at_level(logging.WARNING):
        result = await scale_from_zero(api, DEPLOYMENTS, "default", "web", 1, attempts=3)
    assert result is ScaleResult.FAILED
    assert "after 3 attempts" in warnings(caplog)[0]
    assert replicas_of(kube_emulator) == 0


async def test_a_missing_workload_is_a_warning(api: KubeApi, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert await scale_from_zero(api, DEPLOYMENTS, "default", "ghost", 1) is ScaleResult.FAILED
    [warning] = warnings(caplog)
    assert "Deployment default/ghost" in warning
    assert "not found" in warning


async def test_a_workload_deleted_before_the_write_is_a_warning_with_the_servers_message(
    kube_emulator: KubeEmulator, api: KubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    gone = 'deployments.apps "web" not found'
    kube_emulator.inject_fault(404, method="PUT", path_contains=SCALE_PATH, reason="NotFound", message=gone)
    with caplog.at_level(logging.WARNING):
        assert await scale_from_zero(api, DEPLOYMENTS, "default", "web", 1) is ScaleResult.FAILED
    [warning] = warnings(caplog)
    assert "gone" in warning
    assert gone in warning


@pytest.mark.parametrize(
    ("method", "status", "reason", "message"),
    [
        ("PUT", 403, "Forbidden", FORBIDDEN),
        ("PUT", 500, "InternalError", "Internal error occurred: etcdserver: request timed out"),
        ("GET", 403, "Forbidden", 'deployments.apps "web" is forbidden: cannot get resource "deployments/scale"'),
        ("GET", 500, "InternalError", "Internal error occurred: etcdserver: leader changed"),
    ],
)
async def test_a_refusal_is_a_warning_with_the_servers_message(
    kube_emulator: KubeEmulator,
    api: KubeApi,
    caplog: pytest.LogCaptureFixture,
    method: str,
    status: int,
    reason: str,
    message: str,
) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    kube_emulator.inject_fault(status, method=method, path_contains=SCALE_PATH, reason=reason, message=message)
    with caplog.at_level(logging.WARNING):
        assert await scale_from_zero(api, DEPLOYMENTS, "default", "web", 1) is ScaleResult.FAILED
    [warning] = warnings(caplog)
    assert f"{status} {reason}: {message}" in warning
    assert replicas_of(kube_emulator) == 0


async def test_an_unreachable_api_server_is_a_warning(
    kube_emulator: KubeEmulator, api: KubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    kube_emulator.create(deployment("web", replicas=0))
    await kube_emulator.stop()
    with caplog.at_level(logging.WARNING):
        assert await scale_from_zero(api, DEPLOYMENTS, "default", "web", 1) is ScaleResult.FAILED
    [warning] = warnings(caplog)
    assert "Unreachable" in warning
