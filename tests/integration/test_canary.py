"""A canary on plain Envoy (local provider): backend-v1 and backend-v2, each its own HTTPScaledObject and
LocalWorkload, behind one host split 80/20 by `zerohop.dev/weight`. Envoy does the split; zerohop counts each
version by the cluster Envoy chose, so each is woken, counted and scaled by its own share, and the warm path
keeps the shared virtual host gated while either version is cold."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path

import pytest

from extproc.core.httpso import TargetKey
from extproc.core.warmpath import PathState, WarmPathMode
from extproc.envoy.config import istio_cluster_name
from extproc.providers.local.provider import LocalProvider
from tests.helpers import wait_for
from tests.integration.stack import PYTHON, Reply, Stack, free_port_block
from tests.integration.test_counting import wait_for_fresh_bucket
from tests.integration.test_warm_path import ext_proc_streams
from tests.load import Load

pytestmark = pytest.mark.envoy

HOST = "backend.test"
MAX_REPLICAS = 4
TARGET_VALUE = 100
# One bucket a day: the request rate KEDA reads is then the number of requests since the first, exact.
DAY = 86400


def version(
    name: str,
    weight: int,
    *,
    min_replicas: int = 0,
    startup_delay: float = 0.3,
    metric: str = f"requestRate: {{targetValue: {TARGET_VALUE}, window: 24h, granularity: 24h}}",
) -> str:
    """One version of the canary: its HTTPScaledObject (host HOST, weight `weight`) and LocalWorkload running
    the demo app, whose answers name the version."""
    first = free_port_block(MAX_REPLICAS)
    return f"""
---
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: {name}
  annotations: {{zerohop.dev/weight: "{weight}"}}
spec:
  hosts: [{HOST}]
  scaleTargetRef: {{name: {name}, service: {name}, port: 8080}}
  replicas: {{min: {min_replicas}, max: {MAX_REPLICAS}}}
  scalingMetric: {{{metric}}}
---
apiVersion: zerohop.dev/v1alpha1
kind: LocalWorkload
metadata: {{name: {name}}}
spec:
  command: [{PYTHON}, -m, extproc.dev.demoapp, --port, "{{port}}", --startup-delay, "{startup_delay}", --name, {name}]
  portRange: {first}-{first + MAX_REPLICAS - 1}
  readinessProbe: {{httpGet: {{path: /}}, periodSeconds: 0.02}}
"""


def provider(stack: Stack) -> LocalProvider:
    assert isinstance(stack.server.provider, LocalProvider)
    return stack.server.provider


def replicas(stack: Stack, name: str) -> tuple[int, int]:
    counts = provider(stack).replicas(TargetKey("default", name))
    assert counts is not None
    return counts.desired, counts.ready


async def upstream_rq_total(stack: Stack) -> dict[str, int]:
    """Envoy's own count of requests it sent to each version's cluster."""
    assert stack.envoy is not None
    assert stack.session is not None
    url = f"{stack.envoy.admin_url}/stats?format=json&filter=upstream_rq_total$"
    async with stack.session.get(url) as response:
        stats = (await response.json(content_type=None))["stats"]
    values = {stat["name"]: int(stat["value"]) for stat in stats if "value" in stat}
    found = {}
    for name in ("v1", "v2"):
        stat = f"cluster.{istio_cluster_name(name, 'default', 8080)}.upstream_rq_total"
        assert stat in values, f"no {stat} in the gateway's stats"  # a wrong name would read 0 forever
        found[name] = values[stat]
    return found


def served_by(reply: Reply) -> str:
    """Which version answered (the demo app names itself)."""
    return reply.body.split()[2]


async def send_1000(stack: Stack, earlier: list[Reply] | None = None) -> tuple[list[Reply], dict[str, int]]:
    """1,000 requests to HOST, 20 at a time (after `earlier` ones, sent from the same fresh rate bucket); every
    reply and Envoy's own count of the requests it sent each version, checked against what the clients saw."""
    limit = asyncio.Semaphore(20)

    async def one() -> Reply:
        async with limit:
            return await stack.get(HOST)

    replies = (earlier or []) + list(await asyncio.gather(*(one() for _ in range(1000))))
    assert Counter(r.status for r in replies) == {200: len(replies)}
    sent = await upstream_rq_total(stack)
    assert sent == Counter(served_by(r) for r in replies)  # Envoy's counts are what the clients saw
    assert 0.7 <= sent["v1"] / len(replies) <= 0.9, sent  # 80/20, give or take chance (one sigma: 1.3 points)
    # Both woke from zero on their own requests: some of each version's first requests were held.
    cold = Counter(served_by(r) for r in replies if r.headers.get("x-zerohop-cold-start") == "true")
    assert set(cold) == {"v1", "v2"}, cold
    return replies, sent


async def counted(stack: Stack) -> dict[str, int]:
    """Each version's count as KEDA reads it: GetMetricSpec's metric name, then GetMetrics."""
    return {name: int((await stack.metric(name)).metricValue) for name in ("v1", "v2")}


async def scaled_by_share(stack: Stack) -> None:
    """Each version scales by its own share: ceil(count / targetValue) replicas, up to replicas.max."""
    wanted = {name: min(MAX_REPLICAS, math.ceil(n / TARGET_VALUE)) for name, n in (await counted(stack)).items()}
    assert wanted["v1"] > wanted["v2"] >= 1

    def scaled() -> bool:
        return all(replicas(stack, name) == (n, n) for name, n in wanted.items())

    await wait_for(scaled, 20, 0.05, what=f"replicas {wanted}")


async def test_1000_requests_split_80_20_are_counted_per_version_exactly_as_envoy_sent_them(tmp_path: Path) -> None:
    async with Stack(tmp_path, version("v1", 80) + version("v2", 20)) as stack:
        assert (replicas(stack, "v1"), replicas(stack, "v2")) == ((0, 0), (0, 0))
        await wait_for_fresh_bucket(DAY, needed=300)
        _replies, sent = await send_1000(stack)
        assert await counted(stack) == sent
        await scaled_by_share(stack)
        assert await counted(stack) == sent == await upstream_rq_total(stack)


async def test_with_the_warm_path_open_each_version_is_counted_from_its_own_cluster(tmp_path: Path) -> None:
    config = version("v1", 80) + version("v2", 20)
    async with Stack(tmp_path, config, warm_path=WarmPathMode.OPEN, open_after=0.3, stats_interval=0.1) as stack:
        switch = provider(stack).warm_switch
        assert switch is not None
        assert (replicas(stack, "v1"), replicas(stack, "v2")) == ((0, 0), (0, 0))
        await wait_for_fresh_bucket(DAY, needed=300)
        # From zero until the shared host is open (both versions warm), then 1,000 more, mostly past zerohop.
        warming = Load(lambda: stack.get(HOST), lambda reply: reply.status, rate=40).start()
        try:
            await wait_for(lambda: switch.warm.host_state(HOST) is PathState.OPEN, 30, 0.01, what="host open")
        finally:
            await warming.stop()
        assert not warming.errors
        streams = await ext_proc_streams(stack)
        _replies, sent = await send_1000(stack, [reply for _, reply in warming.replies])
        assert await ext_proc_streams(stack) - streams < 500  # most of the 1,000 went past zerohop

        async def all_counted() -> bool:
            return await counted(stack) == sent

        # Counted from each version's cluster in the gateway's stats, from baselines read at a quiet moment of
        # the warm-up (docs/how-it-works.md: under steady heavy load with no quiet moment this may be off by
        # the few requests inside the gateway at that instant; at 40 req/s there is one).
        await wait_for(all_counted, 10, 0.05, what=f"scaler counts {sent}")
        scrapes = switch.health.scrapes + 2
        await wait_for(lambda: switch.health.scrapes >= scrapes, 10, 0.02, what="two more stats reads")
        assert await counted(stack) == sent  # and no later read adds anything
        await scaled_by_share(stack)


async def test_a_cold_version_keeps_the_shared_host_gated_until_both_are_warm(tmp_path: Path) -> None:
    # v1 runs; v2 sits at zero and takes 3 s to boot once its share of the requests wakes it.
    config = version("v1", 80, min_replicas=1) + version("v2", 20, startup_delay=3.0)
    async with Stack(tmp_path, config, warm_path=WarmPathMode.OPEN, open_after=0.3, stats_interval=0.1) as stack:
        await stack.warm("v1")
        switch = provider(stack).warm_switch
        assert switch is not None
        v1, v2 = stack.state("v1"), stack.state("v2")
        load = Load(lambda: stack.get(HOST), lambda reply: reply.status, rate=40).start()
        try:
            await wait_for(lambda: v2.traffic.requests > 0, 5, 0.01, what="a request for v2")
            # v1 has been warm and busy far longer than open_after, but v2 is still booting: its share would
            # reach a version with no endpoint, so the host stays gated.
            await asyncio.sleep(2.0)
            assert v1.traffic.requests > 40
            assert not v2.gate.routable
            assert switch.warm.host_state(HOST) is PathState.GATED
            assert switch.written == frozenset()
            await wait_for(lambda: v2.gate.routable, 10, 0.02, what="v2 routable")
            await wait_for(lambda: switch.warm.host_state(HOST) is PathState.OPEN, 10, 0.02, what="host open")
        finally:
            await load.stop()
        assert set(load.statuses()) == {200}
        assert not load.errors


async def test_a_version_at_weight_0_does_not_keep_the_host_gated(tmp_path: Path) -> None:
    # v2 deployed but given no traffic: Envoy never sends it a request, so it may sit at zero with the host open.
    config = version("v1", 100, min_replicas=1) + version("v2", 0)
    async with Stack(tmp_path, config, warm_path=WarmPathMode.OPEN, open_after=0.3, stats_interval=0.1) as stack:
        await stack.warm("v1")
        switch = provider(stack).warm_switch
        assert switch is not None
        load = Load(lambda: stack.get(HOST), lambda reply: reply.status, rate=40).start()
        try:
            await wait_for(lambda: switch.warm.host_state(HOST) is PathState.OPEN, 10, 0.02, what="host open")
        finally:
            await load.stop()
        assert set(load.statuses()) == {200}
        assert {served_by(reply) for _, reply in load.replies} == {"v1"}
        assert stack.state("v2").traffic.requests == 0
        assert replicas(stack, "v2") == (0, 0)


async def test_editing_the_weights_in_the_config_file_moves_the_traffic(tmp_path: Path) -> None:
    # Promote the canary: 100/0 -> 0/100 by an edit of the file zerohop watches, both versions running.
    v1, v2 = version("v1", 100, min_replicas=1), version("v2", 0, min_replicas=1)
    async with Stack(tmp_path, v1 + v2) as stack:
        await stack.warm("v1")
        await stack.warm("v2")
        before = await asyncio.gather(*(stack.get(HOST) for _ in range(20)))
        assert {served_by(r) for r in before} == {"v1"}
        edited = v1.replace('zerohop.dev/weight: "100"', 'zerohop.dev/weight: "0"') + v2.replace(
            'zerohop.dev/weight: "0"', 'zerohop.dev/weight: "100"'
        )
        stack.config_path.write_text(edited)

        async def moved() -> bool:
            return served_by(await stack.get(HOST)) == "v2"

        await wait_for(moved, 15, 0.1, what="the gateway sending requests to v2")
        after = await asyncio.gather(*(stack.get(HOST) for _ in range(20)))
        assert {served_by(r) for r in after} == {"v2"}
        assert {r.status for r in before + after} == {200}
        assert stack.server.status()["provider"]["problems"] == []
