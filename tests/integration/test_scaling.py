"""Scaling with the real Envoy: 500 requests held at once and all released, release only once the gateway
can route (EDS delayed like a slow istiod push), scale back to zero when idle, config reload."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.integration.stack import Reply, Stack, app, httpso

pytestmark = pytest.mark.envoy


async def test_500_requests_held_at_once_are_all_released(tmp_path: Path) -> None:
    config = httpso("big", replicas="{min: 0, max: 1}") + app("big", startup_delay=2.0)
    async with Stack(tmp_path, config) as stack:
        requests = [asyncio.create_task(stack.get("big.test", timeout=30)) for _ in range(500)]
        # All 500 are held together while the app boots (more than Envoy's default circuit breaker allows
        # per cluster would be 1024; the shipped ext_proc cluster raises it).
        await wait_for(lambda: stack.server.core.cold_gate.held_total == 500, 10, what="500 held at once")
        assert stack.state("big").traffic.in_flight == 500
        replies = await asyncio.gather(*requests)
        assert Counter(r.status for r in replies) == {200: 500}
        assert all(r.headers.get("x-zerohop-cold-start") == "true" for r in replies)
        assert stack.server.core.cold_gate.held_total == 0
        await wait_for(lambda: stack.state("big").traffic.in_flight == 0, 5, what="in-flight back to 0")
        stats = stack.server.processor.stats
        assert (stats.released, stats.released_5xx, stats.over_capacity, stats.errors) == (500, 0, 0, 0)


EDS_DELAY = 1.0
DELAYED = httpso("late", replicas="{min: 0, max: 1}") + app("late", startup_delay=0.2)


async def test_held_requests_wait_for_the_gateway_not_just_the_replica(tmp_path: Path) -> None:
    async with Stack(tmp_path, DELAYED, eds_delay=EDS_DELAY) as stack:
        replies = await asyncio.gather(*(stack.get("late.test") for _ in range(20)))
        assert Counter(r.status for r in replies) == {200: 20}, [r.body for r in replies if r.status != 200]
        # Held through the app's boot and then the endpoint's late arrival at the gateway.
        assert min(r.elapsed for r in replies) >= 0.2 + EDS_DELAY
        assert stack.server.processor.stats.released_5xx == 0


async def test_control_releasing_on_replica_readiness_alone_gives_503(tmp_path: Path) -> None:
    """The same scenario with the gateway check off: proves the test above can see the failure it guards."""
    async with Stack(tmp_path, DELAYED, eds_delay=EDS_DELAY, gateway_check=False, eds_settle_delay=0.0) as stack:
        replies = await asyncio.gather(*(stack.get("late.test") for _ in range(20)))
        statuses = Counter(r.status for r in replies)
        assert statuses[503] > 0, statuses
        assert any("no healthy upstream" in r.body for r in replies)
        assert stack.server.processor.stats.released_5xx > 0


async def test_scales_to_zero_when_idle_and_back_from_zero(tmp_path: Path) -> None:
    config = httpso(
        "idle",
        replicas="{min: 0, max: 2}",
        metric="requestRate: {targetValue: 10, window: 1s, granularity: 1s}",
        extra="  scaledownPeriod: 1\n",
    ) + app("idle", startup_delay=0.1)
    async with Stack(tmp_path, config) as stack:
        first = await stack.get("idle.test")
        assert first.status == 200
        assert first.headers.get("x-zerohop-cold-start") == "true"
        provider = stack.server.provider
        assert provider.replicas(stack.state("idle").key) is not None

        def at_zero() -> bool:
            counts = provider.replicas(stack.state("idle").key)
            return counts is not None and counts.desired == 0 and counts.ready == 0

        await wait_for(at_zero, 10, 0.05, what="scaled to zero")
        assert not stack.state("idle").gate.routable
        assert not (await stack.scaler.IsActive(stack.ref("idle"))).result  # type: ignore[union-attr]
        again = await stack.get("idle.test")
        assert again.status == 200
        assert again.headers.get("x-zerohop-cold-start") == "true"


async def test_config_reload_adds_a_route_the_gateway_follows(tmp_path: Path) -> None:
    config = httpso("one", replicas="{min: 1, max: 1}") + app("one")
    async with Stack(tmp_path, config) as stack:
        assert (await stack.get("two.test")).status == 404
        stack.config_path.write_text(config + httpso("two", replicas="{min: 0, max: 1}") + app("two"))
        await wait_for(lambda: len(stack.server.core.registry) == 2, 10, 0.05, what="config reloaded")
        # The gateway loads the new route a moment after zerohop reloads; until then it answers 404 itself.
        reply = await _first_routed(stack, "two.test")
        assert reply.status == 200
        assert reply.headers.get("x-zerohop-cold-start") == "true"
        # A broken edit keeps the last good config.
        stack.config_path.write_text("kind: [broken\n")
        await asyncio.sleep(1.5)
        assert len(stack.server.core.registry) == 2
        assert (await stack.get("one.test")).status == 200


async def test_a_request_that_arrives_before_its_route_is_not_held(tmp_path: Path) -> None:
    # Right after an HTTPScaledObject is added, zerohop knows the host before the gateway has its route. The
    # gateway answers such a request itself ("no route", no upstream cluster): zerohop must not hold it, wake
    # the target or count it for the target, since the target would never get it.
    config = httpso("one", replicas="{min: 1, max: 1}") + app("one")
    async with Stack(tmp_path, config, rds_delay=1.0) as stack:
        stack.config_path.write_text(config + httpso("two", replicas="{min: 0, max: 1}") + app("two"))
        await wait_for(lambda: len(stack.server.core.registry) == 2, 10, 0.005, what="config reloaded")
        early = await stack.get("two.test")
        assert early.status == 404
        assert "x-zerohop-cold-start" not in early.headers
        assert stack.state("two").traffic.requests == 0
        assert stack.server.processor.stats.unmatched >= 1
        assert stack.server.processor.stats.cold_requests == 0
        # Once the gateway has the route, the same request is a cold start like any other.
        reply = await _first_routed(stack, "two.test")
        assert reply.status == 200
        assert reply.headers.get("x-zerohop-cold-start") == "true"
        assert stack.state("two").traffic.requests == 1


async def _first_routed(stack: Stack, host: str, timeout: float = 10.0) -> Reply:
    """GET `host` until the gateway routes it (not its own "no route" 404); zerohop holds none before that."""
    deadline = asyncio.get_running_loop().time() + timeout
    name = host.split(".")[0]
    while True:
        reply = await stack.get(host)
        unseen = stack.server.processor.stats.cold_requests == 0 and stack.state(name).traffic.requests == 0
        # The gateway's own answer before its new config is complete: 404 (no route yet) or, with the route
        # but the cluster not loaded, 503 (a request zerohop never saw: it held and counted nothing).
        if (reply.status not in (404, 503) or not unseen) or "x-zerohop-cold-start" in reply.headers:
            return reply
        assert asyncio.get_running_loop().time() < deadline, f"the gateway never routed {host}"
        await asyncio.sleep(0.02)


async def test_editing_a_target_keeps_its_replicas_through_scaledown_period(tmp_path: Path) -> None:
    def config(target_value: int) -> str:
        metric = f"requestRate: {{targetValue: {target_value}, window: 1s, granularity: 1s}}"
        return httpso("edit", replicas="{min: 0, max: 2}", metric=metric, extra="  scaledownPeriod: 60\n")

    workload = app("edit")
    async with Stack(tmp_path, config(10) + workload) as stack:
        assert (await stack.get("edit.test")).status == 200
        key = stack.state("edit").key
        calls = stack.server.scaler.calls

        async def inactive() -> bool:
            return not (await stack.scaler.IsActive(stack.ref("edit"))).result  # type: ignore[union-attr]

        await wait_for(inactive, 10, 0.1, what="the request rate's window passed")
        specs = calls["GetMetricSpec"]
        stack.config_path.write_text(config(20) + workload)
        await wait_for(
            lambda: stack.server.provider.targets[key].metric.target_value == 20,  # type: ignore[attr-defined]
            10,
            0.05,
            what="config reloaded",
        )
        # The autoscaler re-reads the metric spec after the edit, then polls twice more.
        await wait_for(lambda: calls["GetMetricSpec"] > specs, 10, 0.05, what="metric spec re-read")
        polls = calls["IsActive"]
        await wait_for(lambda: calls["IsActive"] >= polls + 2, 10, 0.05, what="two polls after the edit")
        counts = stack.server.provider.replicas(key)
        assert counts is not None
        assert counts.desired == 1  # inactive, but for far less than scaledownPeriod
