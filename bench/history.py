"""What the status page's server-side history costs at 10,000 targets: memory after an hour of samples and
how long one sampling pass holds the event loop.

`python -m bench.history [--targets 10000] [--seconds 3600] [--busy 100]` samples a synthetic registry
(`bench.metricsrender`) once per simulated second (a fake clock: the hour runs as fast as the passes do)
in three shapes: every target idle, `--busy` targets whose in-flight count changes every second, and every
target changing every second (the budget, `--max-mib`, bounds it). Memory is the history's footprint after
the last pass: `sys.getsizeof` of every track, its arrays, its last row and events, and the dict holding
them. `--traced` also runs tracemalloc over the whole run (several times slower) as a check of that sum.
The stall is the longest slice of one pass (`Pacer.longest`) and the pass's total time, over 5 more passes;
then the history of 50 targets (the busy ones first) is written as `/status/history` writes it: its size,
time and longest slice.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import tracemalloc
from typing import Any

from bench.metricsrender import _Replicas, registry
from extproc.core.engine import Core
from extproc.observability.history import DEFAULT_MAX_BYTES, History
from extproc.observability.pacing import Pacer


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def footprint(history: History) -> int:
    """Bytes the history's tracks hold (objects and buffers), and the dict of them."""
    total = sys.getsizeof(history.tracks)
    for track in history.tracks.values():
        total += sys.getsizeof(track) + sys.getsizeof(track.last) + sys.getsizeof(track.cold_starts)
        for column in (track.ticks, track.ready, track.desired, track.in_flight, track.held, track.rate):
            total += sys.getsizeof(column)
        if track.last is not None:
            total += sys.getsizeof(track.last[4])
        for event in track.events or ():
            total += sys.getsizeof(event) + sum(sys.getsizeof(value) for value in event)
    return total


async def _run(core: Core, busy: int, seconds: int, max_bytes: int, traced: bool) -> dict[str, Any]:
    clock = _Clock()
    provider: Any = _Replicas()
    states = list(core.registry)[:busy]
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = History(core, provider, max_bytes=max_bytes, clock=clock)
    started = time.perf_counter()
    for second in range(seconds):
        for index, state in enumerate(states):
            state.traffic.in_flight = (second + index) % 5
        await history.sample(Pacer())
        clock.now += 1
    elapsed = time.perf_counter() - started
    used = footprint(history)
    traced_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    passes = []
    for second in range(5):
        for index, state in enumerate(states):
            state.traffic.in_flight = (second + index) % 5
        passes.append(await history.sample(Pacer()))
        clock.now += 1
    # What the status page's first poll of a page asks: the whole hour of 50 targets (the busy ones first).
    fetch = Pacer()
    fetched = time.perf_counter()
    size = 0
    async for chunk in history.stream(list(history.tracks)[:50], None, fetch):
        size += len(chunk)
    fetched = time.perf_counter() - fetched
    return {
        "busy": busy,
        "rows": history.rows,
        "level": history.level,
        "MiB": round(used / 2**20, 1),
        "bytesPerTarget": round(used / len(history.tracks)),
        "passMs": round(min(p.seconds for p in passes) * 1e3, 1),
        "longestSliceMs": round(max(p.longest_slice for p in passes) * 1e3, 2),
        "slices": passes[-1].slices,
        "runSeconds": round(elapsed, 1),
        "fetch50KB": round(size / 1024),
        "fetch50Ms": round(fetched * 1e3, 1),
        "fetch50LongestSliceMs": round(fetch.longest * 1e3, 2),
    } | ({"tracemallocMiB": round(traced_bytes / 2**20, 1)} if traced else {})


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--busy", type=int, default=100)
    parser.add_argument("--max-mib", type=int, default=DEFAULT_MAX_BYTES // 2**20)
    parser.add_argument("--shapes", default="idle,some,all")
    parser.add_argument("--traced", action="store_true")
    args = parser.parse_args()
    core = registry(args.targets)
    busy = {"idle": 0, "some": args.busy, "all": args.targets}
    for shape in args.shapes.split(","):
        result = await _run(core, busy[shape], args.seconds, args.max_mib * 2**20, args.traced)
        print(f"{args.targets} targets, {shape}: {result}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
