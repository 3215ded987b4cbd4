"""The server-side history behind the status page's charts: rows only on change, the hour kept, a budget
shared so quiet targets keep their hour, cold starts as events, and memory and loop stalls at scale."""

from __future__ import annotations

import json
import time
import tracemalloc
from typing import Any

import aiohttp

from extproc.core.engine import Core
from extproc.core.httpso import TargetKey, parse
from extproc.core.provider import ReplicaCounts
from extproc.observability.admin import AdminServer
from extproc.observability.history import ROW_BYTES, History, Track
from extproc.observability.pacing import Pacer

START = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


class Replicas:
    """A provider that knows `counts` per target name (others: unknown)."""

    def __init__(self) -> None:
        self.counts: dict[str, ReplicaCounts] = {}

    def replicas(self, key: TargetKey) -> ReplicaCounts | None:
        return self.counts.get(key.name)


def core_with(*names: str) -> Core:
    core = Core(hold_timeout=30, max_held_per_target=10, max_held_total=100)
    core.apply_targets([parse(document(name)) for name in names], {})
    return core


def document(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "hosts": [f"{name}.example"],
            "scaleTargetRef": {"name": name, "service": name, "port": 80},
            "scalingMetric": {"concurrency": {"targetValue": 10}},
        },
    }


def history(core: Core, provider: Replicas | None = None, **kwargs: Any) -> tuple[History, Clock]:
    clock = Clock()
    provider_: Any = provider
    return History(core, provider_, clock=clock, **kwargs), clock


def key(name: str) -> TargetKey:
    return TargetKey("ns", name)


def expand(body: dict[str, Any], column: str) -> dict[int, Any]:
    """The rows of a served track as {tick: value}."""
    ticks, tick = [], 0
    for delta in body["t"]:
        tick += delta
        ticks.append(tick)
    return dict(zip(ticks, body[column], strict=True))


async def test_a_row_only_when_a_value_changes() -> None:
    core = core_with("a")
    provider = Replicas()
    hist, clock = history(core, provider)
    state = core.registry.get(key("a"))
    assert state is not None
    for second in range(10):
        if second == 4:
            state.traffic.in_flight = 3
            provider.counts["a"] = ReplicaCounts(desired=1, ready=0)
        if second == 6:
            provider.counts["a"] = ReplicaCounts(desired=1, ready=1)
        await hist.sample()
        clock.now += 1
    body = hist.target(key("a"))
    assert body is not None
    assert expand(body, "inFlight") == {START: 0, START + 4: 3, START + 6: 3}
    assert expand(body, "desired") == {START: None, START + 4: 1, START + 6: 1}
    assert expand(body, "ready") == {START: None, START + 4: 0, START + 6: 1}
    assert hist.rows == 3
    later = hist.target(key("a"), after=START + 4)
    assert later is not None
    assert expand(later, "ready") == {START + 6: 1}
    assert hist.tick == START + 9


async def test_two_samples_in_one_second_store_one() -> None:
    core = core_with("a")
    hist, _clock = history(core)
    await hist.sample()
    core.registry.get(key("a")).traffic.in_flight = 5  # type: ignore[union-attr]
    await hist.sample()
    assert hist.rows == 1


async def test_a_clock_set_back_waits_a_little_or_starts_afresh() -> None:
    core = core_with("a")
    hist, clock = history(core)
    state = core.registry.get(key("a"))
    assert state is not None
    await hist.sample()
    clock.now -= 30  # a small step back: no sample until the clock is past the last one again
    state.traffic.in_flight = 1
    await hist.sample()
    assert hist.rows == 1
    clock.now -= 3600  # an hour back: the rows would be out of order, so the history restarts
    await hist.sample()
    body = hist.target(key("a"))
    assert body is not None
    assert (body["t"], body["inFlight"], hist.first_tick) == ([START - 3630], [1], START - 3630)


async def test_rows_older_than_the_horizon_go_but_the_value_in_effect_stays() -> None:
    core = core_with("busy", "quiet")
    hist, clock = history(core, horizon=100)
    busy = core.registry.get(key("busy"))
    assert busy is not None
    for second in range(400):
        busy.traffic.in_flight = second % 7
        await hist.sample()
        clock.now += 1
    body = hist.target(key("busy"))
    assert body is not None
    ticks = sorted(expand(body, "inFlight"))
    # Trimmed in batches: never more than the horizon plus one batch, never less than the horizon.
    assert ticks[-1] == START + 399
    assert START + 399 - 100 - 61 <= ticks[0] <= START + 399 - 100
    quiet = hist.target(key("quiet"))
    assert quiet is not None
    assert expand(quiet, "inFlight") == {START: 0}


async def test_over_the_budget_the_busiest_lose_their_oldest_rows_first() -> None:
    names = [f"busy-{i}" for i in range(4)] + ["steady"]
    core = core_with(*names)
    hist, clock = history(core, max_bytes=200 * ROW_BYTES)
    steady = core.registry.get(key("steady"))
    assert steady is not None
    for second in range(300):
        for name in names[:4]:
            core.registry.get(key(name)).traffic.in_flight = second % 5  # type: ignore[union-attr]
        if second % 10 == 0:  # 30 changes over the run
            steady.traffic.in_flight = second % 20
        await hist.sample()
        clock.now += 1
    # Bounded: the budget plus at most one pass of growth.
    assert hist.rows <= 200 + len(names)
    assert sum(len(track) for track in hist.tracks.values()) == hist.rows
    assert len(hist.tracks[key("steady")]) == 30  # all of its changes kept
    level = hist.level
    assert level is not None
    assert all(len(hist.tracks[key(n)]) <= level + 1 for n in names[:4])
    assert all(len(hist.tracks[key(n)]) >= 35 for n in names[:4])


async def test_cold_starts_are_events_with_their_duration() -> None:
    core = core_with("a")
    hist, clock = history(core)
    state = core.registry.get(key("a"))
    assert state is not None
    await hist.sample()
    clock.now += 1
    state.gate.cold_starts += 1
    state.gate.last_cold_start = clock.now - 0.25
    state.gate.cold_since = time.monotonic()
    await hist.sample()
    clock.now += 1
    body = hist.target(key("a"))
    assert body is not None
    assert body["coldStarts"] == [{"start": START + 0.75, "seconds": None}]
    state.gate.cold_since = None
    state.gate.last_cold_duration = 1.5
    await hist.sample()
    body = hist.target(key("a"))
    assert body is not None
    assert body["coldStarts"] == [{"start": START + 0.75, "seconds": 1.5}]
    # One that began and ended between two samples is still seen, with its duration.
    clock.now += 1
    state.gate.cold_starts += 1
    state.gate.last_cold_start = clock.now - 0.5
    state.gate.last_cold_duration = 0.2
    await hist.sample()
    body = hist.target(key("a"))
    assert body is not None
    assert body["coldStarts"][-1] == {"start": START + 2.5, "seconds": 0.2}


async def test_a_removed_target_is_forgotten() -> None:
    core = core_with("a", "b")
    hist, clock = history(core)
    await hist.sample()
    core.apply_targets([parse(document("a"))], {})
    clock.now += 1
    await hist.sample()
    assert set(hist.tracks) == {key("a")}
    assert hist.rows == 1


def test_a_busy_row_costs_its_sixteen_bytes() -> None:
    tracemalloc.start()
    try:
        track = Track()
        before = tracemalloc.get_traced_memory()[0]
        for tick in range(3600):
            track.add(tick, (1, 1, tick % 9, 0, tick / 7))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Arrays over-allocate as they grow (about 1/8): an hour of busy rows stays under 72 KB.
    assert grown < 3600 * ROW_BYTES * 1.25, grown


async def test_idle_targets_cost_under_a_kilobyte_each_and_a_pass_at_5000_gives_the_loop_back() -> None:
    count = 5000
    core = core_with(*[f"app-{i}" for i in range(count)])
    provider = Replicas()
    hist, clock = history(core, provider)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        pacer = Pacer()
        for _ in range(3):
            stats = await hist.sample(pacer)
            clock.now += 1
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert stats.targets == count
    assert hist.rows == count
    assert used / count < 1024, used / count
    # The pacer gives the loop back every ~2 ms; tracing slows the pass, so the bound is generous.
    stats = await hist.sample(Pacer())
    assert stats.slices > 1 or stats.seconds < 0.01
    assert stats.longest_slice < 0.05, stats


async def test_the_admin_server_serves_the_history_of_the_targets_asked_for() -> None:
    core = core_with("a", "b")
    provider = Replicas()
    provider.counts["a"] = ReplicaCounts(desired=2, ready=1)
    hist, clock = history(core, provider)
    for second in range(3):
        core.registry.get(key("a")).traffic.in_flight = second  # type: ignore[union-attr]
        await hist.sample()
        clock.now += 1
    view: Any = None
    server = AdminServer(view, lambda: True, history=hist)
    off = AdminServer(view, lambda: True)
    await server.start("127.0.0.1", 0)
    await off.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}/status/history"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base, params=[("target", "ns/a"), ("target", "ns/gone")]) as response:
                assert response.status == 200
                whole = await response.json()
            async with session.get(base, params={"target": "ns/a", "since": str(START + 1)}) as response:
                recent = await response.json()
            async with session.get(base, params={"target": "ns/a", "since": "soon"}) as response:
                assert response.status == 400
            async with session.get(f"http://127.0.0.1:{off.port}/status/history?target=ns/a") as response:
                assert response.status == 404
    finally:
        await server.stop()
        await off.stop()
    assert (whole["now"], whole["step"], whole["horizon"]) == (START + 2, 1, 3600)
    assert whole["targets"]["ns/gone"] is None
    a = whole["targets"]["ns/a"]
    assert a["t"] == [START, 1, 1]
    assert (a["inFlight"], a["ready"], a["desired"], a["held"]) == ([0, 1, 2], [1, 1, 1], [2, 2, 2], [0, 0, 0])
    assert recent["targets"]["ns/a"]["t"] == [START + 2]
    assert recent["targets"]["ns/a"]["inFlight"] == [2]


async def test_the_history_is_written_a_column_at_a_time_and_parses() -> None:
    """An hour of a busy target is ~20k numbers: each column is its own slice of loop time."""
    core = core_with("a", "b")
    hist, clock = history(core)
    state = core.registry.get(key("a"))
    assert state is not None
    for second in range(50):
        state.traffic.in_flight = second % 3
        await hist.sample()
        clock.now += 1
    pacer = Pacer(budget=0.0)  # gives the loop back at every pause
    chunks = [chunk async for chunk in hist.stream([key("a"), key("b"), key("gone")], None, pacer)]
    document = json.loads(b"".join(chunks))
    assert document["targets"]["ns/a"] == hist.target(key("a"))
    assert document["targets"]["ns/gone"] is None
    assert len(document["targets"]["ns/a"]["t"]) == 50
    assert pacer.slices == 1 + 2 * 7  # two tracks of seven columns


async def test_in_flight_is_counted_as_status_counts_it() -> None:
    """Gateway counts (warm path) and east-west requests: the chart shows what /status and KEDA see."""
    core = core_with("a")
    hist, _clock = history(core)
    state = core.registry.get(key("a"))
    assert state is not None
    state.traffic.in_flight = 3  # followed by zerohop, 2 of them east-west
    state.traffic.mesh_in_flight = 2
    state.traffic.gateway_in_flight = 4
    await hist.sample()
    body = hist.target(key("a"))
    assert body is not None
    assert body["inFlight"] == [state.snapshot().in_flight] == [6]
