"""Reading gateway pods' Envoy stats: the Prometheus parser, the filters, and when a cluster counts as routable.

The pods here are small HTTP servers on distinct loopback addresses sharing one port, answering
`/stats/prometheus` as Envoy does (filtered by `filter=`); the real Envoy gateway is in tests/kube.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from extproc.envoy.gatewaystats import Confirmation, GatewayPod, GatewayStats, PodStatsState
from extproc.envoy.stats import MEMBERSHIP_HEALTHY, UPSTREAM_RQ_TOTAL, cluster_filter, parse_cluster_stats
from tests.helpers import free_port

APP = "outbound|8080||app.default.svc.cluster.local"
OTHER = "outbound|80||other.default.svc.cluster.local"


def test_parser_reads_cluster_samples_and_skips_the_rest() -> None:
    text = "\n".join(
        [
            "# TYPE envoy_cluster_membership_healthy gauge",
            f'envoy_cluster_membership_healthy{{cluster_name="{APP}"}} 2',
            'envoy_cluster_membership_healthy{cluster_name="xds-grpc"} 1',
            f'envoy_cluster_upstream_rq_total{{cluster_name="{APP}"}} 1234',
            'envoy_cluster_membership_healthy{cluster_name="we\\"ird\\\\name"} NaN',
            "envoy_server_live 1",
            f'envoy_cluster_upstream_rq_active{{response_code="200",cluster_name="{OTHER}"}} 3',
        ]
    )
    stats = parse_cluster_stats(text)
    assert stats == {
        (MEMBERSHIP_HEALTHY, APP): 2.0,
        (MEMBERSHIP_HEALTHY, "xds-grpc"): 1.0,
        (UPSTREAM_RQ_TOTAL, APP): 1234.0,
        ("envoy_cluster_upstream_rq_active", OTHER): 3.0,
    }


def test_cluster_filter_matches_exactly_the_asked_stats() -> None:
    pattern = re.compile(cluster_filter([APP], [MEMBERSHIP_HEALTHY]))
    assert pattern.search(f"cluster.{APP}.membership_healthy")
    assert not pattern.search(f"cluster.{OTHER}.membership_healthy")
    assert not pattern.search(f"cluster.{APP}.membership_total")
    assert not pattern.search("cluster.outbound|8080||appXdefault.svc.cluster.local.membership_healthy")


class FakePod:
    """One gateway pod's stats endpoint: per-cluster membership, optionally no outbound stats at all."""

    def __init__(self) -> None:
        self.healthy: dict[str, int] = {}
        self.inclusion = True
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        pattern = re.compile(request.query.get("filter", ""))
        lines = ['envoy_cluster_membership_healthy{cluster_name="xds-grpc"} 1']
        if self.inclusion:
            lines += [f'envoy_cluster_membership_healthy{{cluster_name="{c}"}} {v}' for c, v in self.healthy.items()]
        names = ["cluster.xds-grpc.membership_healthy", *(f"cluster.{c}.membership_healthy" for c in self.healthy)]
        kept = [line for line, name in zip(lines, names, strict=False) if pattern.search(name)]
        return web.Response(text="\n".join(kept) + "\n")


@contextlib.asynccontextmanager
async def fake_pods(count: int) -> AsyncIterator[tuple[int, list[FakePod]]]:
    port = free_port()
    pods = [FakePod() for _ in range(count)]
    runners = []
    try:
        for index, pod in enumerate(pods):
            app = web.Application()
            app.router.add_get("/stats/prometheus", pod.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, f"127.0.2.{index + 1}", port).start()
            runners.append(runner)
        yield port, pods
    finally:
        for runner in runners:
            await runner.cleanup()


def pod(index: int) -> GatewayPod:
    return GatewayPod(f"gw-{index}", f"127.0.2.{index + 1}")


async def test_routable_only_once_every_pod_reports_a_healthy_member() -> None:
    async with fake_pods(2) as (port, (first, second)):
        view = GatewayStats(port, fallback_delay=5.0)
        view.set_pods([pod(0), pod(1)])
        first.healthy[APP] = second.healthy[APP] = 0
        waiting = asyncio.create_task(view.wait_routable(APP))
        await asyncio.sleep(0.1)
        first.healthy[APP] = 1
        await asyncio.sleep(0.1)
        assert not waiting.done()
        second.healthy[APP] = 1
        assert await asyncio.wait_for(waiting, 1.0) is Confirmation.STATS
        assert view.blind_pods() == []
        await view.close()


async def test_a_value_seen_before_the_wait_does_not_count() -> None:
    async with fake_pods(1) as (port, [only]):
        view = GatewayStats(port, fallback_delay=5.0)
        view.set_pods([pod(0)])
        only.healthy[APP] = 1
        assert await asyncio.wait_for(view.wait_routable(APP), 1.0) is Confirmation.STATS
        only.healthy[APP] = 0  # the endpoint went away; the next wait must see it come back
        waiting = asyncio.create_task(view.wait_routable(APP))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        only.healthy[APP] = 1
        assert await asyncio.wait_for(waiting, 1.0) is Confirmation.STATS
        await view.close()


async def test_a_pod_without_the_stats_inclusion_is_blind_and_the_fallback_delay_applies() -> None:
    async with fake_pods(2) as (port, (seeing, blind)):
        seeing.healthy[APP] = 1
        blind.healthy[APP] = 1
        blind.inclusion = False
        changes: list[int] = []
        view = GatewayStats(port, fallback_delay=0.3)
        view.on_visibility_change = lambda: changes.append(len(view.blind_pods()))
        view.set_pods([pod(0), pod(1)])
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await view.wait_routable(APP) is Confirmation.FALLBACK
        assert loop.time() - started >= 0.3
        assert view.blind_pods() == ["gw-1"]
        assert changes == [1]
        assert view.status().pods[1].stats is PodStatsState.NO_STATS
        await view.close()


async def test_an_unreachable_pod_is_blind_and_the_others_still_decide() -> None:
    async with fake_pods(1) as (port, [only]):
        only.healthy[APP] = 0
        view = GatewayStats(port, fallback_delay=0.3)
        view.set_pods([pod(0), GatewayPod("gw-gone", "127.0.2.99")])
        waiting = asyncio.create_task(view.wait_routable(APP))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "the readable pod has no healthy member yet"
        only.healthy[APP] = 1
        assert await asyncio.wait_for(waiting, 1.0) is Confirmation.FALLBACK
        assert view.blind_pods() == ["gw-gone"]
        await view.close()


async def test_no_gateway_pod_falls_back_to_the_delay() -> None:
    view = GatewayStats(free_port(), fallback_delay=0.1)
    assert await view.wait_routable(APP) is Confirmation.NO_PODS
    await view.close()


async def test_pods_are_polled_only_while_someone_waits() -> None:
    async with fake_pods(1) as (port, [only]):
        only.healthy[APP] = 1
        view = GatewayStats(port, fallback_delay=5.0)
        view.set_pods([pod(0)])
        await view.wait_routable(APP)
        await asyncio.sleep(0.05)
        asked = only.requests
        await asyncio.sleep(0.2)
        assert only.requests == asked
        await view.close()


@pytest.mark.parametrize("ready", [True, False])
def test_gateway_pods_from_pod_objects(ready: bool) -> None:
    from extproc.providers.kubernetes.gatewaypods import ready_gateway_pods
    from tests.kube.harness import gateway_pod_object

    pods = ready_gateway_pods([gateway_pod_object("gw-b", "10.0.0.2", ready=ready), gateway_pod_object("gw-a", "")])
    assert pods == ([GatewayPod("gw-b", "10.0.0.2")] if ready else [])
