"""The leader writes at API speed: ScaledObjects and statuses concurrently, paced by the client's rate limiter,
429 Retry-After honoured, each object written once, and nothing written by a leader that finds it all done."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import client as aiohttp_client

from extproc.app.server import ZerohopServer
from extproc.core.httpso import ScaledTarget
from extproc.providers.kubernetes import scaledobjects
from extproc.providers.kubernetes.api import SCALEDOBJECTS, JsonObj, KubeApi, KubeError, connect, env_proxy
from extproc.providers.kubernetes.ratelimit import TokenBucket
from extproc.providers.kubernetes.reconciler import Reconciler
from tests.helpers import wait_for
from tests.kube.harness import HTTPSO, KEDA, httpso, key, ready_condition, settings, workload, zerohop
from tests.kubeemu import KubeEmulator, RequestRecord

pytest_plugins = ["tests.kubeemu.pytest_plugin"]
pytestmark = pytest.mark.kube

_WRITES = ("POST", "PUT", "PATCH")


def _writes(emu: KubeEmulator) -> list[RequestRecord]:
    return [r for r in emu.requests if r.method in _WRITES and "/leases/" not in r.path]


def _targets(emu: KubeEmulator, count: int) -> list[str]:
    names = [f"t{i:03d}" for i in range(count)]
    for name in names:
        workload(emu, name)
        emu.create(httpso(name))
    return names


def _all_written(emu: KubeEmulator, names: list[str]) -> bool:
    return all(emu.get(KEDA, "ScaledObject", n) is not None and ready_condition(emu, n) for n in names)


def _reconciler(server: ZerohopServer) -> Reconciler:
    reconciler = server.provider.reconciler  # type: ignore[attr-defined]
    assert isinstance(reconciler, Reconciler)
    return reconciler


async def _settled(server: ZerohopServer, emu: KubeEmulator, names: list[str]) -> None:
    """Wait until the caches show every write and one more pass has compared them."""

    def cached() -> bool:
        docs = server.provider._httpsos()  # type: ignore[attr-defined]
        scaled = server.provider._scaled_objects()  # type: ignore[attr-defined]
        return all(
            ("default", n) in scaled and (docs[("default", n)].get("status") or {}).get("conditions") for n in names
        )

    await wait_for(cached, 10, what="the caches to show every write")
    reconciler = _reconciler(server)
    passes = reconciler.passes
    reconciler.trigger()
    await wait_for(lambda: reconciler.passes > passes, 10, what="another pass")


async def test_writes_run_concurrently_not_one_round_trip_at_a_time(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    names = _targets(emu, 48)
    emu.set_latency(0.2)  # one round trip at a time: 96 writes x 0.2 s > 19 s; 8 at a time: about 2.4 s
    async with zerohop(emu, leader_election=False, gateway_stats_port=0):
        started = time.monotonic()
        await emu.wait_until(lambda: _all_written(emu, names), timeout=12, message="every ScaledObject and status")
        assert time.monotonic() - started < 12


async def test_a_full_sync_writes_each_object_exactly_once(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    names = _targets(emu, 60)
    # Watch events lag the writes (every request takes 20 ms), so passes start on stale caches.
    emu.set_latency(0.02)
    async with zerohop(emu, leader_election=False, gateway_stats_port=0) as server:
        await emu.wait_until(lambda: _all_written(emu, names), timeout=10, message="every object written")
        await _settled(server, emu, names)
        writes = _writes(emu)
        assert sorted(r.path for r in writes if r.method == "POST") == [
            f"/apis/keda.sh/v1alpha1/namespaces/default/scaledobjects/{n}".rsplit("/", 1)[0] for n in names
        ]
        status_writes = sorted(r.path.split("/")[-2] for r in writes if r.path.endswith("/status"))
        assert status_writes == names
        assert len(writes) == 2 * len(names)


async def test_a_new_leader_finds_everything_written_and_writes_nothing(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    names = _targets(emu, 20)
    async with zerohop(emu, gateway_stats_port=0, pod_name="zerohop-0") as first:
        await emu.wait_until(lambda: _all_written(emu, names), timeout=10, message="every object written")
        await _settled(first, emu, names)
    # Something else (a mutating webhook, a person) added a field zerohop does not manage: not drift.
    emu.patch(KEDA, "ScaledObject", names[0], {"spec": {"fallback": {"failureThreshold": 3, "replicas": 1}}})
    emu.clear_requests()
    async with zerohop(emu, gateway_stats_port=0, pod_name="zerohop-1") as second:
        await wait_for(lambda: second.provider.elector.leading, 10, what="the new leader")  # type: ignore[attr-defined]
        await _settled(second, emu, names)
        assert _writes(emu) == []
        assert _reconciler(second).writes == 0


async def test_throttled_writes_are_retried_after_retry_after(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    api = KubeApi(emu.api_client())
    try:
        emu.inject_throttling(retry_after=1, method="POST", path_contains="/scaledobjects", times=2)
        started = time.monotonic()
        body = {"apiVersion": KEDA, "kind": "ScaledObject", "metadata": {"name": "x"}, "spec": {}}
        await api.create(SCALEDOBJECTS, "default", body)
        assert time.monotonic() - started >= 2.0
        assert [r.status for r in emu.requests_matching("POST", path_contains="/scaledobjects")] == [429, 429, 201]
        assert api.retried == 2
        # Without Retry-After the answer is the caller's to handle, as in client-go.
        emu.inject_fault(429, method="POST", path_contains="/scaledobjects", reason="TooManyRequests")
        with pytest.raises(KubeError) as exc:
            await api.create(SCALEDOBJECTS, "default", {**body, "metadata": {"name": "y"}})
        assert (exc.value.code, exc.value.reason) == (429, "TooManyRequests")
    finally:
        await api.close()


async def test_requests_are_paced_by_the_clients_rate_limiter(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    api = KubeApi(emu.api_client(), limiter=TokenBucket(20, 2))
    try:
        started = time.monotonic()
        for _ in range(6):
            await api.get(SCALEDOBJECTS, "default", "missing")
        # 2 at once, then 4 more at 20 per second.
        assert time.monotonic() - started >= 4 / 20 - 0.01
        assert api.limiter.waits == 4
    finally:
        await api.close()


async def test_a_wake_does_not_queue_behind_the_leaders_sync(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    names = _targets(emu, 30)  # 60 writes at 4 per second: the sync lasts about 15 s
    api = KubeApi(emu.api_client(), limiter=TokenBucket(4, 1))
    server = ZerohopServer(settings(leader_election=False, gateway_stats_port=0), kube_api=api)
    await server.start()
    try:
        reconciler = _reconciler(server)
        await wait_for(lambda: reconciler.writes >= 4, 10, what="the sync to be under way")
        woken = names[-1]
        started = time.monotonic()
        server.provider.wake(key(woken))
        await emu.wait_for_object(
            "apps/v1", "Deployment", woken, predicate=lambda d: d["spec"]["replicas"] != 0, timeout=20
        )
        elapsed = time.monotonic() - started
        assert not _all_written(emu, names), "the sync was over: nothing to queue behind"
        # Behind the sync, the scale's read and its write would each wait for the 8 writers' tokens (2 s each).
        assert elapsed < 1.5
    finally:
        await server.stop()
        await api.close()


async def test_the_qps_and_burst_settings_reach_the_client(kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    kubeconfig = kube_emulator.kubeconfig(tmp_path / "kubeconfig")
    server = ZerohopServer(settings(kubeconfig=kubeconfig, kube_api_qps=7, kube_api_burst=3))
    api: KubeApi = await server.provider._api_source()  # type: ignore[attr-defined]
    try:
        assert (api.limiter.qps, api.limiter.burst) == (7, 3)
        assert (api.bulk_limiter.qps, api.bulk_limiter.burst) == (7, 3)
    finally:
        await api.close()


def test_settings_defaults_pace_the_api_like_a_controller() -> None:
    defaults = settings()
    assert (defaults.kube_api_qps, defaults.kube_api_burst) == (200, 300)
    assert HTTPSO  # the harness's constants are what these tests write against


async def test_a_pass_over_settled_objects_compares_only_what_changed(
    kube_emulator: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = kube_emulator
    names = _targets(emu, 20)
    async with zerohop(emu, leader_election=False, gateway_stats_port=0) as server:
        await emu.wait_until(lambda: _all_written(emu, names), timeout=10, message="every object written")
        await _settled(server, emu, names)
        compared: list[str] = []
        desired = scaledobjects.desired

        def counting(target: ScaledTarget, uid: str, scaler_address: str) -> JsonObj:
            compared.append(target.key.name)
            return desired(target, uid, scaler_address)

        monkeypatch.setattr(scaledobjects, "desired", counting)
        reconciler = _reconciler(server)
        passes = reconciler.passes
        reconciler.trigger()
        await wait_for(lambda: reconciler.passes > passes, 10, what="a pass")
        assert compared == []  # every status event triggers a pass: at 10k targets it must cost next to nothing
        # A label (metadata only, same generation) still reaches the ScaledObject.
        emu.patch(HTTPSO, "HTTPScaledObject", names[3], {"metadata": {"labels": {"team": "a"}}})
        await emu.wait_for_object(
            KEDA, "ScaledObject", names[3], predicate=lambda so: so["metadata"]["labels"].get("team") == "a"
        )
        assert set(compared) == {names[3]}


async def test_requests_do_not_read_the_environment_each_time(
    kube_emulator: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client's session trusts the environment by default: every request then reads the proxy variables
    # and ~/.netrc again, in a thread. A sync of 10,000 writes paid that 10,000 times.
    looked_up: list[str] = []
    real_proxy, real_netrc = aiohttp_client.get_env_proxy_for_url, aiohttp_client.netrc_from_env

    def proxy(url: Any) -> Any:
        looked_up.append("proxy")
        return real_proxy(url)

    def netrc() -> Any:
        looked_up.append("netrc")
        return real_netrc()

    monkeypatch.setattr(aiohttp_client, "get_env_proxy_for_url", proxy)
    monkeypatch.setattr(aiohttp_client, "netrc_from_env", netrc)
    api = await connect(kube_emulator.kubeconfig(tmp_path / "kubeconfig"))
    try:
        for _ in range(3):
            await api.get(SCALEDOBJECTS, "default", "absent")
    finally:
        await api.close()
    assert looked_up == []


def test_the_proxy_is_read_from_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert env_proxy("https://10.0.0.1:6443") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert env_proxy("https://10.0.0.1:6443") == "http://proxy.corp:3128"
    assert env_proxy("http://10.0.0.1:8080") is None  # no HTTP_PROXY
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    assert env_proxy("https://10.0.0.1:6443") is None
