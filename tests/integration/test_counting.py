"""Counts as KEDA sees them through the scaler API, with the real Envoy in front: request rate after N
requests, in-flight back to exactly 0 after load with client aborts, held requests as concurrency, and
the StreamIsActive push of a real cold request."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import wait_for
from tests.integration.stack import Stack, app, httpso, never_ready

pytestmark = pytest.mark.envoy

GRANULARITY = 10

CONFIG = (
    httpso(
        "rate",
        replicas="{min: 1, max: 1}",
        metric=f"requestRate: {{window: {GRANULARITY}s, granularity: {GRANULARITY}s}}",
    )
    + app("rate")
    + httpso("slow", replicas="{min: 1, max: 1}", metric="concurrency: {targetValue: 5}")
    + app("slow", work=0.2)
    + httpso("queue", metric="concurrency: {}")
    + never_ready("queue")
)


async def wait_for_fresh_bucket(granularity: float, needed: float) -> None:
    """Sleep into the next rate bucket when fewer than `needed` seconds remain in the current one."""
    remaining = granularity - (time.monotonic() % granularity)
    if remaining < needed:
        await asyncio.sleep(remaining + 0.05)


async def test_request_rate_after_n_requests_through_the_scaler_api(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        await stack.warm("rate")
        await wait_for_fresh_bucket(GRANULARITY, needed=4)
        replies = await asyncio.gather(*(stack.get("rate.test") for _ in range(25)))
        assert all(r.status == 200 for r in replies)
        value = await stack.metric("rate")
        # 25 requests in one bucket: the add-on's rate is 25 per granularity, in both fields.
        assert (value.metricValue, value.metricValueFloat) == (25, 25.0)
        assert value.metricName == "http-default_002Frate"
        assert (await stack.scaler.IsActive(stack.ref("rate"))).result  # type: ignore[union-attr]
        assert stack.state("rate").traffic.requests == 25


async def ext_proc_streams_started(stack: Stack) -> int:
    """How many ext_proc streams the gateway has opened to zerohop, from its own stats."""
    assert stack.envoy is not None
    url = f"{stack.envoy.admin_url}/stats?format=json&filter=ext_proc\\.zerohop\\.streams_started$"
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        stats = (await reply.json())["stats"]
    return sum(int(stat["value"]) for stat in stats if "value" in stat)


async def test_in_flight_returns_to_exactly_zero_after_load_with_client_aborts(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        await stack.warm("slow")
        requests_before = stack.state("slow").traffic.requests
        streams_before = await ext_proc_streams_started(stack)
        peak = 0

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, (await stack.metric("slow")).metricValue)
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        limit = asyncio.Semaphore(20)
        outcomes: dict[str, int] = {"ok": 0, "aborted": 0}

        async def one(i: int) -> None:
            async with limit:
                try:
                    # Every third client gives up before the 0.2 s response arrives.
                    reply = await stack.get("slow.test", timeout=0.05 if i % 3 == 0 else 10)
                    outcomes["ok"] += reply.status == 200
                except TimeoutError:
                    outcomes["aborted"] += 1

        await asyncio.gather(*(one(i) for i in range(120)))
        sampler.cancel()
        assert outcomes == {"ok": 80, "aborted": 40}
        assert peak >= 10, f"in-flight never rose under load (peak {peak})"
        await wait_for(lambda: stack.state("slow").traffic.in_flight == 0, 5, what="in-flight back to 0")
        await asyncio.sleep(0.5)  # and it stays there: no late decrement or stray increment
        assert stack.state("slow").traffic.in_flight == 0
        value = await stack.metric("slow")
        assert (value.metricValue, value.metricValueFloat) == (0, 0.0)
        # Counted once each: never more than the streams the gateway opened to zerohop, never fewer than the
        # requests that got their answer (each went through zerohop). Not an exact 120: a client that gives up
        # within 50 ms on a loaded machine can do so before its headers reach zerohop (before the gateway opens
        # the stream, or after it opened it but before zerohop read the first message), and such a request was
        # never seen, so it cannot be counted.
        streams = await ext_proc_streams_started(stack) - streams_before
        counted = stack.state("slow").traffic.requests - requests_before
        assert outcomes["ok"] <= counted <= streams <= 120, (outcomes, counted, streams)


async def test_held_requests_count_as_concurrency(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        held = [asyncio.create_task(stack.get("queue.test", timeout=1.5)) for _ in range(7)]
        await wait_for(lambda: stack.server.core.cold_gate.held_total == 7, 5, what="7 held")
        value = await stack.metric("queue")
        assert (value.metricValue, value.metricValueFloat) == (7, 7.0)
        assert (await stack.scaler.IsActive(stack.ref("queue"))).result  # type: ignore[union-attr]
        await asyncio.gather(*held, return_exceptions=True)
        await wait_for(lambda: stack.state("queue").traffic.in_flight == 0, 5, what="released")


async def test_stream_is_active_pushes_within_50ms_of_a_cold_request(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG, autoscale=False) as stack:
        stream = stack.scaler.StreamIsActive(stack.ref("queue"))  # type: ignore[union-attr]
        pushed: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def listen() -> None:
            async for message in stream:
                if message.result and not pushed.done():
                    pushed.set_result(time.monotonic())

        listener = asyncio.create_task(listen())
        await wait_for(
            lambda: stack.server.core.bus.subscribers(stack.state("queue").key) == 1, 5, what="KEDA stream open"
        )
        sent = time.monotonic()
        request = asyncio.create_task(stack.get("queue.test", timeout=1.0))
        latency = await asyncio.wait_for(pushed, 2.0) - sent
        print(f"StreamIsActive pushed {latency * 1000:.1f} ms after the cold request was sent")  # -s shows it
        assert latency < 0.05, f"StreamIsActive pushed {latency * 1000:.1f} ms after the request was sent"
        stream.cancel()
        listener.cancel()
        await asyncio.gather(request, listener, return_exceptions=True)
