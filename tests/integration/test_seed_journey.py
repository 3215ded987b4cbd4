"""The seed journey with the warm path open, end to end with the real Envoy and the local provider: a target
at zero replicas (requestRate target 1, scaledownPeriod 5) takes a `hey -n 10000 -c 150`-like load, scales
up from zero, opens its warm path, answers every request 2xx, then idles, is gated again, scales back to
zero, and the next request is held and answered 200. KEDA's count matches every request sent.

The rate window is 5 s (the add-on's default is a minute) so the idle part takes seconds, not a minute.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from extproc.core.httpso import TargetKey
from extproc.core.warmpath import PathState
from tests.helpers import wait_for
from tests.integration.stack import app, httpso
from tests.integration.test_warm_path import ext_proc_streams, open_stack, path_state, provider

pytestmark = pytest.mark.envoy

REQUESTS = 10_000
CONCURRENCY = 150


async def hey(url: str, host: str, requests: int, concurrency: int) -> list[int]:
    """What `hey -n requests -c concurrency` does: `concurrency` workers on keep-alive connections, each
    sending its next request when the last one is answered, until `requests` have been sent."""
    statuses: list[int] = []
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(url, headers={"Host": host}) as response:
                    await response.read()
                    statuses.append(response.status)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


async def test_the_seed_journey_scales_from_zero_opens_and_returns_to_zero_with_no_error(tmp_path: Path) -> None:
    config = httpso(
        "podinfo",
        replicas="{min: 0, max: 3}",
        metric="requestRate: {targetValue: 1, window: 5s, granularity: 1s}",
        extra="  scaledownPeriod: 5",
    ) + app("podinfo", startup_delay=0.3)
    # The defaults but --open-after, shortened so that the host opens while the load is still running.
    async with open_stack(tmp_path, config, open_after=1.0, stats_interval=1.0) as stack:
        states: list[tuple[float, PathState]] = []
        scaled: list[tuple[int, PathState]] = []
        scale = provider(stack).scale

        def recording_scale(target: TargetKey, replicas: int) -> None:
            scaled.append((replicas, path_state(stack, target.name)))
            scale(target, replicas)

        provider(stack).scale = recording_scale  # type: ignore[method-assign]

        async def watch() -> None:
            while True:
                state = path_state(stack, "podinfo")
                if not states or states[-1][1] is not state:
                    states.append((time.monotonic(), state))
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        try:
            streams_before = await ext_proc_streams(stack)
            started = time.monotonic()
            statuses = await hey(stack.url + "/", "podinfo.test", REQUESTS, CONCURRENCY)
            load_ended = time.monotonic()
            streams = await ext_proc_streams(stack) - streams_before

            await wait_for(lambda: any(n == 0 for n, _ in scaled), 40, 0.05, what="scale to zero")
            await wait_for(lambda: not stack.state("podinfo").gate.routable, 5, 0.02, what="endpoints gone")
            after = await stack.get("podinfo.test")
        finally:
            watcher.cancel()
        journey = time.monotonic() - started

        assert len(statuses) == REQUESTS
        assert all(200 <= status < 300 for status in statuses), sorted(set(statuses))
        assert max(n for n, _ in scaled) == 3  # scaled up from zero to its max under the load
        opened = [at for at, state in states if state is PathState.OPEN]
        assert opened, states
        assert opened[0] < load_ended, states  # opened while the load ran...
        assert streams < REQUESTS  # ...so part of it never asked zerohop
        at_zero = [state for n, state in scaled if n == 0]
        assert at_zero
        assert set(at_zero) == {PathState.GATED}  # gated again before the scale to zero
        assert after.status == 200
        assert after.headers.get("x-zerohop-cold-start") == "true"  # held, then released

        state = stack.state("podinfo")

        async def counted() -> int:
            return (await stack.server.scaler._counts.totals(state)).requests

        # Every request counted, by zerohop or from the gateway's stats, none lost. Not always exactly once at
        # this concurrency: behind the baseline's fence 3 runs counted 0, 0 and 4 too many (retries and requests
        # waiting for an upstream connection are in the gateway's count; docs/how-it-works.md, the warm path's
        # limits); the bound keeps it visible if it grows.
        total = await counted()
        assert REQUESTS + 1 <= total <= (REQUESTS + 1) * 1.01, total
        assert journey < 45, f"the journey took {journey:.0f}s"
        switch = stack.server.provider.warm_switch  # type: ignore[attr-defined]
        print(
            f"seed journey: {journey:.1f}s, {streams} of {REQUESTS} asked zerohop, counted {total}, baselines "
            f"{switch.quiet_baselines} behind the fence and {switch.busy_baselines} without, path states {states}"
        )
