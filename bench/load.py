"""Load generation with wrk: saturation (many connections, as fast as the setup goes) and a fixed-rate
serial load (one connection, requests sent on a fixed schedule), each returning the numbers wrk measured.

The fixed-rate load is wrk paced by a Lua `delay()` rather than `hey -q`: hey prints latencies with 0.1 ms
resolution, too coarse for differences of a fraction of a millisecond; wrk records microseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from bench.procs import taskset

_MARKER = "BENCH_RESULT "

# Prints wrk's own summary as one JSON line: request count, errors and latency percentiles in microseconds.
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "non2xx": %d, "connect_errors": %d, "read_errors": %d, '
    .. '"write_errors": %d, "timeouts": %d, "mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
    .. '"max_us": %d}\\n',
    "MARKER", summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
""".replace("MARKER", _MARKER)

# Sends each request on a fixed schedule (`wrk ... -- RATE`), never bursting to catch up after a slow one.
# wrk rounds delay() down to whole milliseconds; the schedule is absolute, so the average rate still holds.
_PACED = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = 5
local next_at = nil
init = function(args)
  interval = 1000 / tonumber(args[1])
end
delay = function()
  local now = now_ms()
  if next_at == nil then next_at = now end
  next_at = next_at + interval
  if next_at < now then next_at = now end
  return next_at - now
end
"""


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one wrk run measured. Latencies in milliseconds."""

    requests: int
    seconds: float
    rps: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non2xx: int
    socket_errors: int

    @property
    def clean(self) -> bool:
        return self.requests > 0 and self.non2xx == 0 and self.socket_errors == 0


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """How to load a setup: wrk's threads and connections for saturation, the rate of the serial load."""

    duration: int
    threads: int = 1
    connections: int = 32
    rate: int = 200
    cpus: frozenset[int] | None = None

    def saturation_argv(self, url: str, script: Path, duration: int | None = None) -> list[str]:
        seconds = duration or self.duration
        argv = ["wrk", f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s", "-s", str(script), url]
        return taskset(set(self.cpus) if self.cpus else None, argv)

    def fixed_rate_argv(self, url: str, script: Path) -> list[str]:
        argv = ["wrk", "-t1", "-c1", f"-d{self.duration}s", "-s", str(script), url, "--", str(self.rate)]
        return taskset(set(self.cpus) if self.cpus else None, argv)


def write_scripts(directory: Path) -> tuple[Path, Path]:
    """The Lua scripts for saturation and fixed-rate runs, written once per bench run."""
    directory.mkdir(parents=True, exist_ok=True)
    saturation, paced = directory / "saturation.lua", directory / "paced.lua"
    saturation.write_text(_DONE)
    paced.write_text(_PACED + _DONE)
    return saturation, paced


async def run_wrk(argv: list[str], timeout: float) -> LoadResult:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith(_MARKER):
            return _result(json.loads(line[len(_MARKER) :]))
    raise RuntimeError(f"wrk gave no result (exit {process.returncode}):\n{text}")


def _result(raw: dict[str, float]) -> LoadResult:
    seconds = raw["duration_us"] / 1e6
    requests = int(raw["requests"])
    errors = int(raw["connect_errors"] + raw["read_errors"] + raw["write_errors"] + raw["timeouts"])
    return LoadResult(
        requests=requests,
        seconds=round(seconds, 3),
        rps=round(requests / seconds, 1) if seconds else 0.0,
        mean_ms=round(raw["mean_us"] / 1000, 4),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        non2xx=int(raw["non2xx"]),
        socket_errors=errors,
    )
