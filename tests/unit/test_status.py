"""The typed status snapshots render exactly the /status JSON they replaced: same keys, same order, same values.

Each test builds a known state, takes the source's snapshot and compares its `as_dict()` (serialised, so key
order counts) to the document /status served before the snapshots were typed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from extproc.core.activation import ActivationBus
from extproc.envoy.gatewaystats import Confirmation, GatewayPod, GatewayStats, PodStatsState
from extproc.keda.peers import Peer, Peers
from extproc.providers.kubernetes import api as kube
from extproc.providers.kubernetes.gatewaypods import PODS
from extproc.providers.kubernetes.informer import Informer
from extproc.providers.kubernetes.provider import KubernetesOptions, KubernetesProvider
from extproc.providers.local.provider import LocalProvider


def document(snapshot: Any) -> str:
    """The JSON /status serves for `snapshot`, key order included."""
    return json.dumps(snapshot.as_dict())


def same(snapshot: Any, expected: dict[str, Any]) -> None:
    assert document(snapshot) == json.dumps(expected)


def informer(plural_resource: kube.Resource, namespace: str | None = None, selector: str | None = None) -> Informer:
    def ignore(kind: str, old: Any, new: Any) -> None:
        pass

    return Informer(None, plural_resource, ignore, namespace=namespace, label_selector=selector)  # type: ignore[arg-type]


def test_informer_status() -> None:
    watched = informer(kube.ENDPOINTSLICES, "shop", "kubernetes.io/service-name")
    watched.cache[("shop", "a")] = {}
    watched.relists, watched.restarts, watched.last_error = 1, 2, "ApiException 500"
    watched.synced.set()
    same(
        watched.status(),
        {
            "resource": "endpointslices (shop, kubernetes.io/service-name)",
            "synced": True,
            "connected": False,
            "objects": 1,
            "relists": 1,
            "restarts": 2,
            "lastError": "ApiException 500",
        },
    )


async def test_gateway_stats_status() -> None:
    view = GatewayStats(15090, fallback_delay=0.5)
    view.set_pods([GatewayPod("gw-0", "127.0.2.1"), GatewayPod("gw-1", "127.0.2.2")])
    pods = list(view._pods.values())
    pods[1].set_state(PodStatsState.NO_STATS, "no outbound cluster stats")
    for pod in pods:
        pod.since = 1700000000.5
    view.fetches, view.fetch_errors = 7, 3
    view.confirmations[Confirmation.FALLBACK] += 2
    try:
        same(
            view.status(),
            {
                "statsPort": 15090,
                "pods": [
                    {"name": "gw-0", "ip": "127.0.2.1", "stats": "unknown", "error": "", "since": 1700000000.5},
                    {
                        "name": "gw-1",
                        "ip": "127.0.2.2",
                        "stats": "no-stats",
                        "error": "no outbound cluster stats",
                        "since": 1700000000.5,
                    },
                ],
                "fetches": 7,
                "fetchErrors": 3,
                "confirmations": {"stats": 0, "fallback": 2, "no_pods": 0},
            },
        )
    finally:
        await view.close()


async def test_peers_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.monotonic", lambda: 100.0)
    peers = Peers("10.0.0.6:9092", ActivationBus())
    channel = grpc.aio.insecure_channel("127.0.0.1:1")
    peers._peers["10.0.0.7:9092"] = Peer("10.0.0.7:9092", channel, None, answered_at=99.25)  # type: ignore[arg-type]
    peers._peers["10.0.0.8:9092"] = Peer("10.0.0.8:9092", channel, None, failures=2, last_error="UNAVAILABLE")  # type: ignore[arg-type]
    peers.answered, peers.fetch_errors = 1, 4
    try:
        same(
            peers.status(),
            {
                "replica": "10.0.0.6:9092",
                "peers": [
                    {"address": "10.0.0.7:9092", "lastAnswerAgeSeconds": 0.75, "failures": 0, "lastError": ""},
                    {
                        "address": "10.0.0.8:9092",
                        "lastAnswerAgeSeconds": None,
                        "failures": 2,
                        "lastError": "UNAVAILABLE",
                    },
                ],
                "answered": 1,
                "fetchErrors": 4,
            },
        )
    finally:
        await channel.close()


def test_local_provider_status(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "zerohop.yaml", state_dir=tmp_path, xds_dir=tmp_path / "xds")
    same(
        provider.status(),
        {
            "provider": "local",
            "config": str(tmp_path / "zerohop.yaml"),
            "xdsDir": str(tmp_path / "xds"),
            "reload": {
                "success": True,
                "lastSuccess": None,
                "lastSuccessTimestamp": None,
                "lastAttempt": None,
                "error": None,
            },
            "problems": [],
        },
    )


def kubernetes(**options: Any) -> KubernetesProvider:
    async def no_api() -> kube.KubeApi:
        raise AssertionError("not started")

    base = KubernetesOptions(
        namespaces=(),
        pod_name="zerohop-0",
        pod_namespace="zerohop-system",
        pod_ip="",
        service_name="zerohop",
        scaler_port=9090,
        scale_on_wake=True,
        leader_election=True,
        propagation_delay=0.5,
        envoy_admin=(),
        gateway_namespace="istio-system",
        gateway_selector="istio=ingressgateway",
        gateway_stats_port=15090,
        reconcile=None,
        warm_path=None,
        stats_interval=1.0,
        gateway_probe_port=8080,
    )
    return KubernetesProvider(no_api, dataclasses.replace(base, **options))


def test_kubernetes_status_with_envoy_admin() -> None:
    provider = kubernetes(envoy_admin=("127.0.0.1:15000",))
    provider._informers = [informer(kube.HTTPSCALEDOBJECTS)]
    provider.scale_patches = 3
    same(
        provider.status(),
        {
            "provider": "kubernetes",
            "identity": "zerohop-0",
            "leader": False,
            "leaseHolder": None,
            "informers": [
                {
                    "resource": "httpscaledobjects (all namespaces)",
                    "synced": False,
                    "connected": False,
                    "objects": 0,
                    "relists": 0,
                    "restarts": 0,
                    "lastError": "",
                }
            ],
            "scalePatches": 3,
            "gateway": {"source": "envoy-admin", "admin": ["127.0.0.1:15000"]},
            "problems": [],
        },
    )


def test_kubernetes_status_with_a_delay() -> None:
    provider = kubernetes(gateway_stats_port=0, propagation_delay=0.75)
    same(
        provider.status(),
        {
            "provider": "kubernetes",
            "identity": "zerohop-0",
            "leader": False,
            "leaseHolder": None,
            "informers": [],
            "scalePatches": 0,
            "gateway": {"source": "delay", "propagationDelay": 0.75},
            "problems": [],
        },
    )


async def test_kubernetes_status_with_pod_stats() -> None:
    provider = kubernetes(gateway_stats_port=15090)
    assert provider.gateway_stats is not None
    provider.gateway_stats.set_pods([GatewayPod("gw-0", "127.0.2.1")])
    for pod in provider.gateway_stats._pods.values():
        pod.since = 5.0
    provider._gateway_pods = informer(PODS, "istio-system", "app=gw")
    try:
        same(
            provider.status(),
            {
                "provider": "kubernetes",
                "identity": "zerohop-0",
                "leader": False,
                "leaseHolder": None,
                "informers": [],
                "scalePatches": 0,
                "gateway": {
                    "source": "pod-stats",
                    "statsPort": 15090,
                    "pods": [{"name": "gw-0", "ip": "127.0.2.1", "stats": "unknown", "error": "", "since": 5.0}],
                    "fetches": 0,
                    "fetchErrors": 0,
                    "confirmations": {"stats": 0, "fallback": 0, "no_pods": 0},
                    "podInformer": {
                        "resource": provider._gateway_pods.name,
                        "synced": False,
                        "connected": False,
                        "objects": 0,
                        "relists": 0,
                        "restarts": 0,
                        "lastError": "",
                    },
                },
                "problems": [],
            },
        )
    finally:
        await provider.gateway_stats.close()
