"""How CPU work on the event loop steps aside for requests: slices of at most `SLICE` seconds, and between
two slices `give_way()`, a real pause of `PAUSE` seconds rather than `asyncio.sleep(0)`.

With `sleep(0)` the loop always has something ready, so it never waits on its sockets and grpc.aio's
completions (which gRPC's poller thread hands over) come in late at every step of a call. Measured with a bare
grpc.aio ext_proc server at 100 calls/s (uvloop, zerohop's gRPC settings) beside a task working in 2 ms
slices: p50 3.4 / p99 26 ms alone, 78 / 168 ms with `sleep(0)` between slices, calls queueing behind one
another, and 4.6 / 19 ms with a 1 ms pause (a lower switch interval, `sys.setswitchinterval(0.0005)`, gave
16 / 41 ms). Slices of 5 ms starve the calls even with the pause. The work takes longer by the pauses: a
pass of one second of CPU in 2 ms slices ends half a second later.
"""

from __future__ import annotations

import asyncio

SLICE = 0.002
PAUSE = 0.001


async def give_way() -> None:
    """Between two slices of CPU work: let the loop wait on its sockets, and the calls waiting there run."""
    await asyncio.sleep(PAUSE)
