"""`--warm-path open` with the real Envoy: warm requests never reach zerohop (Envoy's own ext_proc stream
counter stays flat) while the scaler API still reports them, counted from the gateway's stats; a switch back
to the gate comes before a scale to zero; nothing is lost or counted twice across switches, gateway restarts
and stats failures."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from extproc.core.httpso import TargetKey
from extproc.core.warmpath import PathState, WarmPathMode
from extproc.envoy.adminapi import EnvoyAdmin
from extproc.envoy.config import target_cluster_name
from extproc.providers.local.provider import LocalProvider
from tests.helpers import steady_samples, wait_for
from tests.integration.stack import Reply, Stack, app, httpso
from tests.load import Load

pytestmark = pytest.mark.envoy

STREAMS = "http.gateway.ext_proc.zerohop.streams_started"  # HCM stat_prefix, then the filter's


def open_stack(tmp_path: Path, config: str, **settings: Any) -> Stack:
    options: dict[str, Any] = {"warm_path": WarmPathMode.OPEN, "open_after": 0.5, "stats_interval": 0.1}
    options.update(settings)
    return Stack(tmp_path, config, **options)


def provider(stack: Stack) -> LocalProvider:
    assert isinstance(stack.server.provider, LocalProvider)
    return stack.server.provider


async def after_two_more_scrapes(stack: Stack) -> None:
    """Wait until zerohop has completed two more reads of the gateway's stats: whatever they were going to add
    has been added."""
    health = provider(stack).warm_switch.health
    target = health.scrapes + 2
    await wait_for(lambda: health.scrapes >= target, 10, 0.02, what="two more stats reads")


def path_state(stack: Stack, name: str) -> PathState:
    switch = provider(stack).warm_switch
    assert switch is not None
    return switch.warm.target_state(TargetKey("default", name))


async def ext_proc_streams(stack: Stack) -> int:
    """Envoy's own count of ext_proc streams it opened (one per request that asked zerohop)."""
    assert stack.envoy is not None
    assert stack.session is not None
    url = f"{stack.envoy.admin_url}/stats?format=json&filter=^{STREAMS}$"
    async with stack.session.get(url) as response:
        data = await response.json(content_type=None)
    values = [int(s["value"]) for s in data["stats"] if s.get("name") == STREAMS]
    assert len(values) == 1, f"no {STREAMS} in the gateway's stats"  # a wrong name would read 0 forever
    return values[0]


def load_on(stack: Stack, host: str, *, rate: float = 0.0, workers: int = 0) -> Load[Reply]:
    """Requests to `host` through the stack's gateway (see tests/load.py)."""
    return Load(lambda: stack.get(host), lambda reply: reply.status, rate=rate, workers=workers)


RATE_WINDOW = 6.0
RATE_GRANULARITY = 0.1


async def test_a_warm_open_target_is_counted_from_the_gateway_with_no_ext_proc_stream(tmp_path: Path) -> None:
    config = httpso(
        "rate",
        replicas="{min: 1, max: 1}",
        metric=f"requestRate: {{window: {RATE_WINDOW}s, granularity: {RATE_GRANULARITY}s}}",
    ) + app("rate")
    async with open_stack(tmp_path, config) as stack:
        await stack.warm("rate")
        load = load_on(stack, "rate.test", rate=40).start()
        try:
            await wait_for(lambda: path_state(stack, "rate") is PathState.OPEN, 10, 0.02, what="rate open")
            streams = await ext_proc_streams(stack)
            await asyncio.sleep(RATE_WINDOW + 1.5)
            value = (await stack.metric("rate")).metricValueFloat
            now = time.monotonic()
            assert await ext_proc_streams(stack) == streams  # not one request asked zerohop
            assert (await stack.scaler.IsActive(stack.ref("rate"))).result  # type: ignore[union-attr]
        finally:
            await load.stop()
        answered = sum(1 for at, _ in load.replies if now - RATE_WINDOW < at <= now)
        true_rate = answered / (RATE_WINDOW / RATE_GRANULARITY)  # requests per granularity, as the add-on reads
        assert value == pytest.approx(true_rate, rel=0.05)
        assert set(load.statuses()) == {200}
        assert not load.errors


async def test_concurrency_of_an_open_target_comes_from_the_gateway(tmp_path: Path) -> None:
    config = httpso("slow", replicas="{min: 1, max: 1}", metric="concurrency: {}") + app("slow", work=0.5)
    async with open_stack(tmp_path, config) as stack:
        await stack.warm("slow")
        load = load_on(stack, "slow.test", workers=5).start()
        try:
            await wait_for(lambda: path_state(stack, "slow") is PathState.OPEN, 10, 0.02, what="slow open")
            streams = await ext_proc_streams(stack)

            async def metric() -> float:
                return float((await stack.metric("slow")).metricValueFloat)

            # Each taken where the client's in-flight count held still for 0.25 s: longer than a stats read lags.
            samples = await steady_samples(load, metric, 8, settle=0.25)
            assert await ext_proc_streams(stack) == streams
        finally:
            await load.stop()
        assert all(in_flight - 1 <= value <= in_flight + 1 for in_flight, value in samples), samples
        assert sum(in_flight for in_flight, _ in samples) >= 4 * len(samples)  # mostly all 5 in flight
        assert set(load.statuses()) == {200}


async def test_an_idle_open_target_is_gated_before_it_scales_to_zero_with_no_503(tmp_path: Path) -> None:
    config = httpso(
        "idle",
        replicas="{min: 0, max: 1}",
        metric="requestRate: {targetValue: 1000, window: 1s, granularity: 0.5s}",
        extra="  scaledownPeriod: 1",
    ) + app("idle", startup_delay=0.3)
    # Route updates reach the gateway 2 s late, longer than scaledownPeriod: a scale to zero that did not wait
    # for the confirmed gate would happen while the vhost is still open.
    # open_after longer than the rate window: one trickle request (active for a window) does not reopen it.
    async with open_stack(tmp_path, config, rds_delay=2.0, open_after=1.5) as stack:
        scaled: list[tuple[int, PathState]] = []
        scale = provider(stack).scale

        def recording_scale(key: TargetKey, replicas: int) -> None:
            scaled.append((replicas, path_state(stack, key.name)))
            scale(key, replicas)

        provider(stack).scale = recording_scale  # type: ignore[method-assign]
        load = load_on(stack, "idle.test", rate=20).start()
        await wait_for(lambda: path_state(stack, "idle") is PathState.OPEN, 15, 0.02, what="idle open")
        await load.stop()
        # A trickle, sparser than the rate window, through the scale to zero and after it.
        trickle = load_on(stack, "idle.test", rate=0.4).start()
        try:
            await wait_for(lambda: any(n == 0 for n, _ in scaled), 20, 0.05, what="scale to zero")
            await wait_for(lambda: not stack.state("idle").gate.routable, 5, 0.02, what="endpoints gone")
            reply = await stack.get("idle.test")
        finally:
            await trickle.stop()
        at_zero = [state for n, state in scaled if n == 0]
        assert at_zero
        assert set(at_zero) == {PathState.GATED}  # every scale to zero came after a confirmed gate
        assert reply.status == 200
        assert reply.headers.get("x-zerohop-cold-start") == "true"  # held, then released
        statuses = load.statuses() + trickle.statuses()
        assert statuses.count(200) == len(statuses), statuses
        assert not load.errors
        assert not trickle.errors


async def test_cold_to_warm_counts_every_request_exactly_once_across_the_switch(tmp_path: Path) -> None:
    config = httpso(
        "cold", replicas="{min: 0, max: 1}", metric="requestRate: {targetValue: 1000, window: 60s, granularity: 1s}"
    ) + app("cold", startup_delay=0.5)
    # Route updates 1 s late: requests keep going through ext_proc for a second after the counter starts.
    async with open_stack(tmp_path, config, rds_delay=1.0) as stack:
        load = load_on(stack, "cold.test", rate=50).start()
        try:
            await wait_for(lambda: path_state(stack, "cold") is PathState.OPEN, 15, 0.02, what="cold open")
            await asyncio.sleep(1.5)
        finally:
            await load.stop()
        held = [reply for _, reply in load.replies if reply.headers.get("x-zerohop-cold-start") == "true"]
        assert held  # the first requests were held and released as before
        assert set(load.statuses()) == {200}
        state = stack.state("cold")

        async def counted() -> int:
            return (await stack.server.scaler._counts.totals(state)).requests

        async def all_counted() -> bool:
            return await counted() >= load.sent

        await wait_for(all_counted, 5, 0.05, what="every request counted")
        await after_two_more_scrapes(stack)  # later reads must not add any more
        assert await counted() == load.sent


async def test_a_gateway_restart_and_unreadable_stats_keep_counts_sane(tmp_path: Path) -> None:
    config = httpso(
        "gw", replicas="{min: 1, max: 1}", metric="requestRate: {targetValue: 1000, window: 60s, granularity: 1s}"
    ) + app("gw")
    async with open_stack(tmp_path, config) as stack:
        await stack.warm("gw")
        load = load_on(stack, "gw.test", rate=30).start()
        await wait_for(lambda: path_state(stack, "gw") is PathState.OPEN, 10, 0.02, what="gw open")
        await load.stop()
        state = stack.state("gw")
        await wait_for(lambda: state.traffic.requests >= load.sent, 5, 0.05, what="counted before the restart")
        await after_two_more_scrapes(stack)
        assert state.traffic.requests == load.sent
        before = state.traffic.requests

        assert stack.envoy is not None
        await stack.envoy.stop()
        switch = provider(stack).warm_switch
        assert switch is not None
        await wait_for(lambda: switch.health.failing, 5, 0.05, what="a failed stats read")
        status = stack.server.status()["provider"]["warmPath"]
        assert status["statsFailing"]
        assert status["statsFailures"] >= 1
        assert status["lastStatsError"]
        assert state.traffic.requests == before  # an unreadable gateway changes nothing

        await stack.envoy.start()  # the same gateway, restarted: every counter starts again from 0
        await stack._gateway_synced()
        cluster = target_cluster_name(state.spec)

        async def endpoint_loaded() -> bool:
            async with EnvoyAdmin(stack.envoy.admin_url if stack.envoy else "") as admin:
                return any(host.healthy for host in (await admin.cluster_hosts()).get(cluster, []))

        await wait_for(endpoint_loaded, 5, 0.02, what="the restarted gateway's endpoints")  # not still warming
        await wait_for(lambda: not switch.health.failing, 5, 0.05, what="stats readable again")
        replies = await asyncio.gather(*(stack.get("gw.test") for _ in range(20)))
        assert {r.status for r in replies} == {200}
        await wait_for(lambda: state.traffic.requests >= before + 20, 5, 0.05, what="counted after the restart")
        await after_two_more_scrapes(stack)
        assert state.traffic.requests == before + 20
        # Gated while the gateway could not be counted; opened again once it can be.
        await wait_for(lambda: path_state(stack, "gw") is PathState.OPEN, 10, 0.02, what="open again")


async def test_an_open_target_whose_endpoints_vanish_is_gated_at_once_and_its_503s_counted(tmp_path: Path) -> None:
    config = httpso(
        "gone", replicas="{min: 1, max: 1}", metric="requestRate: {targetValue: 1000, window: 60s, granularity: 1s}"
    ) + app("gone", startup_delay=0.3)
    async with open_stack(tmp_path, config, autoscale=False) as stack:
        await stack.warm("gone")
        load = load_on(stack, "gone.test", rate=40).start()
        try:
            await wait_for(lambda: path_state(stack, "gone") is PathState.OPEN, 10, 0.02, what="gone open")
            provider(stack).scale(TargetKey("default", "gone"), 0)  # someone scales it to 0 behind KEDA's back
            await wait_for(lambda: path_state(stack, "gone") is PathState.GATED, 5, 0.01, what="gated again")
            streams = await ext_proc_streams(stack)
            provider(stack).scale(TargetKey("default", "gone"), 1)
            late = await stack.get("gone.test")
            assert await ext_proc_streams(stack) > streams  # gated: requests ask zerohop again
        finally:
            await load.stop()
        assert late.status == 200
        status = stack.server.status()["provider"]["warmPath"]
        assert status["gatedUnexpectedly"] == 1
        # What the gateway answered itself in between, as the clients saw it.
        assert status["targets"]["default/gone"]["gateway503"] == load.statuses().count(503)
        assert set(load.statuses()) <= {200, 503}
