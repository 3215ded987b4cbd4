"""/metrics after a scripted scenario through the real Envoy: exact values, and no new series from requests
with random hosts."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests import promtext
from tests.helpers import wait_for
from tests.integration.stack import Stack, app, httpso, never_ready

pytestmark = pytest.mark.envoy

CONFIG = (
    httpso("warm", replicas="{min: 1, max: 1}")
    + app("warm")
    + httpso("cold", replicas="{min: 0, max: 1}")
    + app("cold", startup_delay=0.2)
    + httpso("never", extra="  timeouts: {conditionWait: 500ms}\n")
    + never_ready("never")
)


async def scrape(stack: Stack) -> dict[str, float]:
    url = f"http://127.0.0.1:{stack.server.admin_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return promtext.parse(await response.text())


def series(metric: str, **labels: str) -> str:
    if not labels:
        return metric
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


async def test_metrics_after_a_scripted_scenario(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG, autoscale=True) as stack:
        await stack.warm("warm")
        for _ in range(3):
            assert (await stack.get("warm.test")).status == 200
        assert (await stack.get("cold.test")).status == 200
        timeouts = await asyncio.gather(stack.get("never.test"), stack.get("never.test"))
        assert [r.status for r in timeouts] == [504, 504]
        for _ in range(2):
            assert (await stack.get("nobody.example")).status == 404
        await wait_for(lambda: all(s.traffic.in_flight == 0 for s in stack.server.core.registry), 5, what="idle")
        values = await scrape(stack)

    warm, cold, never = ({"namespace": "default", "name": n} for n in ("warm", "cold", "never"))
    expected = {
        series("zerohop_requests_total", **warm): 3,
        series("zerohop_requests_total", **cold): 1,
        series("zerohop_requests_total", **never): 2,
        series("zerohop_cold_requests_total", **cold, outcome="released"): 1,
        series("zerohop_cold_requests_total", **cold, outcome="timeout"): 0,
        series("zerohop_cold_requests_total", **never, outcome="timeout"): 2,
        series("zerohop_cold_requests_total", **never, outcome="released"): 0,
        series("zerohop_cold_requests_total", **warm, outcome="released"): 0,
        series("zerohop_hold_duration_seconds_count", **cold, outcome="released"): 1,
        series("zerohop_hold_duration_seconds_count", **never, outcome="timeout"): 2,
        series("zerohop_hold_duration_seconds_bucket", **never, outcome="timeout", le="0.25"): 0,
        series("zerohop_hold_duration_seconds_bucket", **never, outcome="timeout", le="1"): 2,
        series("zerohop_cold_starts_total", **warm): 0,
        series("zerohop_cold_starts_total", **cold): 1,
        series("zerohop_cold_starts_total", **never): 1,
        series("zerohop_held_requests", **never): 0,
        series("zerohop_in_flight_requests", **cold): 0,
        series("zerohop_target_routable", **warm): 1,
        series("zerohop_target_routable", **never): 0,
        series("zerohop_target_replicas", **warm, state="ready"): 1,
        series("zerohop_released_errors_total", **cold): 0,
        series("zerohop_unmatched_requests_total"): 2,
        series("zerohop_ext_proc_streams_total"): 8,
        series("zerohop_ext_proc_errors_total", kind="malformed"): 0,
    }
    assert {key: values.get(key) for key in expected} == expected
    hold_sum = values[series("zerohop_hold_duration_seconds_sum", **never, outcome="timeout")]
    assert 1.0 <= hold_sum < 2.0  # two holds of the 500 ms budget
    assert values[series("zerohop_last_cold_start_duration_seconds", **cold)] >= 0.2


async def test_requests_with_random_hosts_never_add_a_series(tmp_path: Path) -> None:
    async with Stack(tmp_path, CONFIG) as stack:
        await stack.warm("warm")
        before = await scrape(stack)
        hosts = [f"{uuid.uuid4().hex}.example" for _ in range(20)]
        await asyncio.gather(*(stack.get(host, f"/{uuid.uuid4().hex}") for host in hosts))
        after = await scrape(stack)
    assert set(after) == set(before)
    assert after["zerohop_unmatched_requests_total"] == before["zerohop_unmatched_requests_total"] + 20
    assert not any(host in key for key in after for host in hosts)
