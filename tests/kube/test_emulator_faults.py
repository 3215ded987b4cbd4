"""Fault injection (server down/up, cut watches, scripted errors, latency) and
leader election with `kubernetes.aio.leaderelection` against the emulator."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from kubernetes.aio import client, watch
from kubernetes.aio.leaderelection import electionconfig, leaderelection
from kubernetes.aio.leaderelection.resourcelock.leaselock import LeaseLock

from tests.kubeemu import KubeEmulator, wait_for
from tests.kubeemu.manifests import configmap

pytest_plugins = ["tests.kubeemu.pytest_plugin"]


async def test_stop_and_start_keep_the_store_and_the_port(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    await core.create_namespaced_config_map("default", configmap("kept"))
    url, version = kube_emulator.url, kube_emulator.resource_version

    await kube_emulator.stop()
    assert not kube_emulator.running
    with pytest.raises(aiohttp.ClientConnectionError):
        await core.read_namespaced_config_map("kept", "default")

    await kube_emulator.start()
    assert kube_emulator.url == url
    again = await core.read_namespaced_config_map("kept", "default")  # same client, retried
    assert again.metadata.name == "kept"
    created = await core.create_namespaced_config_map("default", configmap("next"))
    assert int(created.metadata.resource_version) == version + 1


async def test_stop_cuts_open_watches(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    consumer = asyncio.create_task(_drain(kube_api))
    await wait_for(lambda: kube_emulator.open_watches == 1, message="watch to open")
    await kube_emulator.stop()
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(consumer, 5)
    assert kube_emulator.open_watches == 0


async def _drain(api: client.ApiClient) -> None:
    async for _ in watch.Watch().stream(
        client.CoreV1Api(api).list_namespaced_config_map, "default", timeout_seconds=30
    ):
        pass


async def test_drop_watches_ends_an_open_watch_abruptly(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    consumer = asyncio.create_task(_drain(kube_api))
    await wait_for(lambda: kube_emulator.open_watches == 1, message="watch to open")
    assert kube_emulator.drop_watches() == 1
    # The aio Watch does not reconnect on a cut chunked stream: aiohttp's error surfaces.
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(consumer, 5)
    assert kube_emulator.open_watches == 0


async def test_injected_faults_and_request_log(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_api)
    kube_emulator.create(configmap("cfg"))
    kube_emulator.inject_fault(
        503, method="GET", path_contains="/configmaps/cfg", reason="ServiceUnavailable", message="try later"
    )
    with pytest.raises(client.ApiException) as exc:
        await core.read_namespaced_config_map("cfg", "default")
    assert exc.value.status == 503
    assert (await core.read_namespaced_config_map("cfg", "default")).metadata.name == "cfg"
    reads = kube_emulator.requests_matching("GET", "/api/v1/namespaces/default/configmaps/cfg")
    assert [r.status for r in reads] == [503, 200]
    assert reads[0].content_type == "application/json"


async def test_latency_delays_responses(kube_emulator: KubeEmulator, kube_api: client.ApiClient) -> None:
    kube_emulator.set_latency(0.2)
    started = time.monotonic()
    await client.CoreV1Api(kube_api).list_namespace()
    assert time.monotonic() - started >= 0.2


async def test_two_leader_election_candidates_yield_one_leader(kube_emulator: KubeEmulator) -> None:
    leading: list[str] = []
    elections: dict[str, leaderelection.LeaderElection] = {}
    # kubernetes 37's LeaseLock.create passes pretty=True, which the pydantic-validated
    # create_namespaced_lease rejects (ValidationError, killing run()); with the Lease
    # already present the candidates only GET and PUT it, racing on resourceVersion.
    kube_emulator.create(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "zerohop", "namespace": "default"},
        }
    )
    apis = [kube_emulator.api_client(), kube_emulator.api_client()]

    def candidate(identity: str, api: client.ApiClient) -> leaderelection.LeaderElection:
        async def started() -> None:
            leading.append(identity)

        async def stopped() -> None:
            pass

        lock = LeaseLock("zerohop", "default", identity, api)
        # The client's minimums: retry 1 s, renew deadline > 1.2 * retry, lease > renew.
        cfg = electionconfig.Config(
            lock,
            lease_duration=2,
            renew_deadline=1.5,
            retry_period=1,
            onstarted_leading=started,
            onstopped_leading=stopped,
        )
        elections[identity] = leaderelection.LeaderElection(cfg)
        return elections[identity]

    tasks = {
        name: asyncio.create_task(candidate(name, api).run()) for name, api in zip(("alpha", "beta"), apis, strict=True)
    }
    try:
        await wait_for(lambda: leading, message="a leader")
        leader = leading[0]
        follower = "beta" if leader == "alpha" else "alpha"

        def follower_sees_leader() -> bool:
            record = elections[follower].observed_record
            return record is not None and record.holder_identity == leader

        await wait_for(follower_sees_leader, timeout=5, message="follower to observe")
        renewals = len(kube_emulator.requests_matching("PUT", path_contains="/leases/zerohop"))
        await wait_for(
            lambda: len(kube_emulator.requests_matching("PUT", path_contains="/leases/zerohop")) > renewals,
            message="a renewal",
        )
        assert leading == [leader]
        lease = kube_emulator.get("coordination.k8s.io/v1", "Lease", "zerohop")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == leader
        assert lease["spec"]["leaseDurationSeconds"] == 2

        # The leader stops renewing; the follower takes over once the lease expires.
        tasks.pop(leader).cancel()
        await wait_for(lambda: len(leading) == 2, timeout=6, message="failover")
        assert leading == [leader, follower]
        lease = kube_emulator.get("coordination.k8s.io/v1", "Lease", "zerohop")
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == follower
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for api in apis:
            await api.close()


async def test_throttling_answers_429_with_retry_after_like_a_real_server(
    kube_emulator: KubeEmulator, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    kube_emulator.create(configmap("cfg"))
    kube_emulator.inject_throttling(retry_after=3, method="GET", path_contains="/configmaps/cfg", times=2)
    for _ in range(2):
        with pytest.raises(client.ApiException) as exc:
            await core.read_namespaced_config_map("cfg", "default")
        assert exc.value.status == 429
        assert exc.value.headers["Retry-After"] == "3"
        status = json.loads(exc.value.body)
        assert (status["kind"], status["status"], status["code"], status["reason"]) == (
            "Status",
            "Failure",
            429,
            "TooManyRequests",
        )
        assert status["details"] == {"retryAfterSeconds": 3}
    assert (await core.read_namespaced_config_map("cfg", "default")).metadata.name == "cfg"
    reads = kube_emulator.requests_matching("GET", "/api/v1/namespaces/default/configmaps/cfg")
    assert [r.status for r in reads] == [429, 429, 200]
