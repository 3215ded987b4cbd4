"""A bounded history of every target, sampled once a second, for the status page's charts.

Per target (a `Track`): ready and desired replicas, request rate, in flight and held, stored as a step
function: a row is appended only when one of the five values differs from the last row, so an idle target
costs one row however long it stays idle, and a busy one at most one row a second. Rows older than the
horizon (an hour) are dropped, except the one still in effect at its start. Rows live in typed arrays
(`array('I'/'H'/'f')`: 16 bytes a row), not Python objects. Cold starts are kept as events (start, and
duration once the target became routable), read from the gate's counters at each sample.

Memory is bounded twice over: by the horizon (at most ~3,600 rows a target), and by a budget of rows for all
targets together (`max_bytes`). When the rows exceed it, each target keeps at most a common number of its
newest rows (the largest level that fits the budget: "water-filling"), so quiet targets keep their whole
hour and only the busiest lose their oldest samples. See docs/observability.md for measured figures.

Sampling walks every target once a second in slices (`pacing`), so at 10,000 targets no slice holds the event
loop that answers Envoy for more than a few ms. Nothing here runs on the request path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from array import array
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from extproc.core.engine import Core
from extproc.core.httpso import TargetKey
from extproc.core.provider import Provider
from extproc.core.registry import TargetState
from extproc.observability.pacing import Pacer

log = logging.getLogger(__name__)

HORIZON = 3600  # seconds of history kept (at 1 s resolution)
INTERVAL = 1.0  # seconds between samples
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
ROW_BYTES = 16  # tick (I: 4) + ready, desired, in flight, held (H: 2 each) + rate (f: 4)
# Rows older than the horizon are dropped in batches, not one memmove a second per busy target.
TRIM_BATCH = 60
CLOCK_STEP_BACK = 60  # a clock set back by more than this clears the history (less: sampling waits for it)
MAX_EVENTS = 64  # cold starts kept per target (within the horizon)
UNKNOWN = 0xFFFF  # replicas the provider does not know (the target has no deployment yet)
CLAMP = 0xFFFE  # larger counts are stored as this (a chart at 65,534 in flight says enough)

Row = tuple[int, int, int, int, float]


def _count(value: int) -> int:
    return value if value < CLAMP else CLAMP


class Track:
    """The history of one target: rows of a step function, and its cold starts."""

    __slots__ = ("cold_starts", "desired", "events", "held", "in_flight", "last", "rate", "ready", "ticks")

    def __init__(self) -> None:
        self.ticks = array("I")
        self.ready = array("H")
        self.desired = array("H")
        self.in_flight = array("H")
        self.held = array("H")
        self.rate = array("f")
        self.last: Row | None = None
        self.cold_starts = 0  # the gate's count when last sampled
        # [start (epoch seconds), duration in seconds or None while the target is still cold]
        self.events: list[list[float | None]] | None = None

    def __len__(self) -> int:
        return len(self.ticks)

    def add(self, tick: int, row: Row) -> int:
        """Record `row` at `tick`; 1 when a row was stored, 0 when nothing changed."""
        if row == self.last:
            return 0
        self.last = row
        self.ticks.append(tick)
        self.ready.append(row[0])
        self.desired.append(row[1])
        self.in_flight.append(row[2])
        self.held.append(row[3])
        self.rate.append(row[4])
        return 1

    def drop_oldest(self, count: int) -> int:
        """Forget the `count` oldest rows (never the last one); how many went."""
        count = min(count, len(self.ticks) - 1)
        if count <= 0:
            return 0
        for column in (self.ticks, self.ready, self.desired, self.in_flight, self.held, self.rate):
            del column[:count]
        return count

    def expired(self, cutoff: int) -> int:
        """Rows that ended before `cutoff`: those followed by a row at or before it."""
        ticks = self.ticks
        low, high = 1, len(ticks)
        while low < high:  # the first row after index 0 whose tick is > cutoff
            middle = (low + high) // 2
            if ticks[middle] <= cutoff:
                low = middle + 1
            else:
                high = middle
        return low - 1

    def observe_cold(self, state: TargetState, cutoff: float) -> None:
        """Follow the gate: a new cold start is an event; its duration is filled in once it ends."""
        gate = state.gate
        events = self.events
        if gate.cold_starts != self.cold_starts:
            began = gate.cold_starts > self.cold_starts
            self.cold_starts = gate.cold_starts
            if began and gate.last_cold_start is not None:
                if events is None:
                    events = self.events = []
                ended = gate.cold_since is None
                events.append([gate.last_cold_start, gate.last_cold_duration if ended else None])
        elif events and events[-1][1] is None and gate.cold_since is None:
            events[-1][1] = gate.last_cold_duration
        if events:
            while events and (len(events) > MAX_EVENTS or (events[0][1] is not None and _end(events[0]) < cutoff)):
                del events[0]
            if not events:
                self.events = None

    def since(self, tick: int) -> int:
        """Index of the first row after `tick`."""
        ticks = self.ticks
        low, high = 0, len(ticks)
        while low < high:
            middle = (low + high) // 2
            if ticks[middle] <= tick:
                low = middle + 1
            else:
                high = middle
        return low

    def columns(self, after: int | None = None) -> list[tuple[str, Callable[[], list[Any]]]]:
        """Rows (all, or those after tick `after`) as compact columns, each built when called, from copies
        taken now (so a pass that runs in between cannot make them disagree): `t` holds the first tick, then
        the seconds from one row to the next; replicas the provider did not know are null."""
        start = 0 if after is None else self.since(after)
        ticks, ready, desired = self.ticks[start:], self.ready[start:], self.desired[start:]
        in_flight, held, rate = self.in_flight[start:], self.held[start:], self.rate[start:]
        events = [list(event) for event in self.events or ()]

        def deltas() -> list[int]:
            values = ticks.tolist()
            return [values[0]] + [b - a for a, b in itertools.pairwise(values)] if values else []

        return [
            ("t", deltas),
            ("ready", lambda: [None if v == UNKNOWN else v for v in ready.tolist()]),
            ("desired", lambda: [None if v == UNKNOWN else v for v in desired.tolist()]),
            ("inFlight", in_flight.tolist),
            ("held", held.tolist),
            ("rate", lambda: [round(v, 3) for v in rate.tolist()]),
            ("coldStarts", lambda: [{"start": round(e[0] or 0.0, 3), "seconds": _round(e[1])} for e in events]),
        ]

    def as_dict(self, after: int | None = None) -> dict[str, Any]:
        """`columns` as one dict."""
        return {name: build() for name, build in self.columns(after)}


def _end(event: list[float | None]) -> float:
    return (event[0] or 0.0) + (event[1] or 0.0)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class PassStats:
    """What the last sampling pass cost (for tests, benchmarks and /status)."""

    targets: int = 0
    rows: int = 0
    seconds: float = 0.0
    longest_slice: float = 0.0
    slices: int = 0


Replicas = Callable[[TargetKey], Any]


class History:
    """Every target's `Track`, sampled by `sample` (one pass) or `run` (a pass every second)."""

    def __init__(
        self,
        core: Core,
        provider: Provider | None,
        *,
        horizon: int = HORIZON,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._core = core
        self._provider = provider
        self.horizon = horizon
        self.max_rows = max(1, max_bytes // ROW_BYTES)
        self._clock = clock
        self.tracks: dict[TargetKey, Track] = {}
        self.rows = 0  # rows held by every track together
        self.level: int | None = None  # rows a track may keep while over the budget; None: no limit
        self.tick = 0  # the tick of the pass running or last run (epoch seconds)
        self.done = 0  # the tick of the last finished pass: every track is sampled up to it
        self.first_tick = 0
        self.last_pass = PassStats()

    def _replicas(self, key: TargetKey) -> tuple[int, int]:
        counts = self._provider.replicas(key) if self._provider is not None else None
        if counts is None:
            return UNKNOWN, UNKNOWN
        return _count(counts.ready), _count(counts.desired)

    async def sample(self, pacer: Pacer | None = None) -> PassStats:
        """One pass: a row for every target whose values changed, cold starts, and the bounds applied."""
        tick = int(self._clock())
        if self.tick - CLOCK_STEP_BACK <= tick <= self.tick:
            return self.last_pass  # two passes in one second, or the clock slewed back a little
        if tick < self.tick:
            # The wall clock was set back: rows must stay in time order, so the history starts afresh.
            log.warning("the clock went back %d s: the status page's history starts afresh", self.tick - tick)
            self.tracks.clear()
            self.rows = 0
            self.level = None
            self.first_tick = tick
        self.tick = tick
        if not self.first_tick:
            self.first_tick = tick
        started = time.perf_counter()
        pacer = pacer or Pacer()
        now = time.monotonic()
        cutoff = tick - self.horizon
        level = self.level
        tracks = self.tracks
        added = seen = 0
        for state in self._core.registry:
            seen += 1
            track = tracks.get(state.key)
            if track is None:
                track = tracks[state.key] = Track()
                track.cold_starts = state.gate.cold_starts
                gate = state.gate
                if gate.last_cold_start is not None and gate.last_cold_start >= cutoff:
                    track.events = [
                        [gate.last_cold_start, None if gate.cold_since is not None else gate.last_cold_duration]
                    ]
            # The counts as /status and KEDA see them (in flight from zerohop, the gateways and the mesh).
            snapshot = state.traffic.snapshot(now, state.gate.held)
            ready, desired = self._replicas(state.key)
            row = (ready, desired, _count(snapshot.in_flight), _count(snapshot.held), snapshot.rate)
            added += track.add(tick, row)
            if track.events is not None or state.gate.cold_starts != track.cold_starts:
                track.observe_cold(state, cutoff)
            size = len(track.ticks)
            if size > 1:
                drop = track.expired(cutoff) if track.ticks[1] <= cutoff - TRIM_BATCH else 0
                if level is not None and size - drop > level:
                    drop = size - level
                if drop:
                    self.rows -= track.drop_oldest(drop)
            await pacer.pause()
        self.rows += added
        if len(tracks) > seen:
            live = {state.key for state in self._core.registry}
            for key in [key for key in tracks if key not in live]:
                self.rows -= len(tracks.pop(key))
        if self.rows > self.max_rows:
            self.level = self._level()
        elif self.level is not None and self.rows < self.max_rows * 7 // 8:
            self.level = None  # room again: let the tracks grow back (not at once, to avoid flapping)
        self.done = tick
        self.last_pass = PassStats(seen, self.rows, time.perf_counter() - started, pacer.longest, pacer.slices)
        return self.last_pass

    def _level(self) -> int:
        """The most rows each track may keep so that all of them fit the budget (water-filling)."""
        sizes = sorted(len(track) for track in self.tracks.values())
        remaining, count = self.max_rows, len(sizes)
        for index, size in enumerate(sizes):
            fair = remaining // (count - index)
            if size > fair:
                return max(1, fair)
            remaining -= size
        return max(1, sizes[-1]) if sizes else 1

    async def run(self, interval: float = INTERVAL) -> None:
        """Sample every `interval` seconds, at the start of each wall-clock second, until cancelled."""
        while True:
            try:
                await self.sample()
            except Exception:
                log.exception("history sampling failed")
            now = self._clock()
            await asyncio.sleep(interval - now % interval + 0.001)

    def target(self, key: TargetKey, after: int | None = None) -> dict[str, Any] | None:
        track = self.tracks.get(key)
        return None if track is None else track.as_dict(after)

    async def stream(self, keys: Iterable[TargetKey], after: int | None, pacer: Pacer) -> AsyncIterator[bytes]:
        """The history of `keys` as one JSON document, written target by target:
        `{"now": tick, "horizon": s, "step": 1, "targets": {"ns/name": {...} | null}}`. `now` is the last
        finished pass: each target's last value holds up to it (rows of a pass still running may follow)."""
        head = {"now": self.done, "first": self.first_tick, "horizon": self.horizon, "step": 1}
        if after is not None:
            head["since"] = after
        yield (json.dumps(head, separators=(",", ":"))[:-1] + ',"targets":{').encode()
        separator = ""
        for key in keys:
            track = self.tracks.get(key)
            yield f"{separator}{json.dumps(str(key))}:".encode()
            separator = ","
            if track is None:
                yield b"null"
                continue
            # A column at a time: an hour of a busy target is ~20k numbers, a few ms to write in one piece.
            inner = "{"
            for name, build in track.columns(after):
                yield f'{inner}"{name}":{json.dumps(build(), separators=(",", ":"))}'.encode()
                inner = ","
                await pacer.pause()
            yield b"}"
        yield b"}}"

    def memory(self) -> dict[str, Any]:
        """What the history holds: targets, rows, the row budget and the level applied (if any)."""
        return {
            "targets": len(self.tracks),
            "rows": self.rows,
            "maxRows": self.max_rows,
            "level": self.level,
            "horizonSeconds": self.horizon,
            "lastPassSeconds": round(self.last_pass.seconds, 4),
            "longestSliceSeconds": round(self.last_pass.longest_slice, 4),
        }
