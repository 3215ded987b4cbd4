"""The warm path's baseline behind a fence: while zerohop reads the gateway counters it will count a target
from, the target's new requests wait at ext_proc uncounted, so its own count and the gateways' belong to one
moment and no request is counted twice or lost when the target starts to be counted from the stats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from extproc.core.warmpath import WarmPath
from extproc.envoy import warmswitch
from extproc.envoy.adminapi import ClusterCounters, GatewayReading
from extproc.envoy.warmswitch import WarmSwitch
from tests.helpers import wait_for
from tests.unit.test_mesh_counting import CLUSTER
from tests.unit.test_processor import WARM, Fixture, exchange, host, proc, request_headers

__all__ = ["proc"]  # the fixture, used by name below


class SlowGateway:
    """One gateway whose counter the test moves; a read answers only once `answer` is set."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.total = 0
        self.reads = 0
        self.answer = asyncio.Event()

    async def read(self, clusters: list[str]) -> GatewayReading:
        self.reads += 1
        await self.answer.wait()
        return GatewayReading({"gw-0": {self.cluster: ClusterCounters(requests=self.total)}})


def switch_for(proc: Fixture) -> tuple[WarmSwitch, SlowGateway]:
    gateway = SlowGateway(CLUSTER)
    gateways: Any = gateway
    switch = WarmSwitch(proc.core, WarmPath(open_after=0.0), gateways, 1.0)
    switch._cluster_of = lambda state: CLUSTER  # type: ignore[method-assign]
    return switch, gateway


def warm_request() -> Any:
    return request_headers(host("warm.test"), cluster=CLUSTER)


async def test_a_request_arriving_during_the_baseline_waits_and_is_counted_once(proc: Fixture) -> None:
    state = proc.state(WARM)
    switch, gateway = switch_for(proc)
    baseline = asyncio.create_task(switch._baseline(state))
    await wait_for(lambda: gateway.reads == 1, 2, 0.005, what="the baseline's first read")
    answered = asyncio.create_task(exchange(proc, warm_request()))
    await asyncio.sleep(0.03)
    assert not answered.done()
    assert state.traffic.requests == 0  # waiting at the fence, not counted yet
    gateway.answer.set()
    assert await baseline
    assert switch.quiet_baselines == 1
    await answered
    assert state.traffic.requests == 1
    # The gateway counts it on its way upstream, and two that went past zerohop: only those are added.
    gateway.total = 3
    assert await switch._scrape([state])
    assert state.traffic.requests == 3


async def test_the_fence_stands_at_most_a_moment_when_a_gateway_is_slow(proc: Fixture) -> None:
    state = proc.state(WARM)
    switch, gateway = switch_for(proc)
    baseline = asyncio.create_task(switch._baseline(state))
    await wait_for(lambda: gateway.reads == 1, 2, 0.005, what="the baseline's first read")
    started = time.monotonic()
    await exchange(proc, warm_request())
    waited = time.monotonic() - started
    assert warmswitch._FENCE_MAX * 0.5 <= waited < warmswitch._FENCE_MAX + 0.5
    assert state.traffic.requests == 1
    assert state.traffic.fence is None
    gateway.total = 1  # the request reached the upstream before the (late) read
    gateway.answer.set()
    assert await baseline
    assert switch.busy_baselines == 1
    gateway.total = 2
    assert await switch._scrape([state])
    assert state.traffic.requests == 2  # the one that went past zerohop, nothing twice
