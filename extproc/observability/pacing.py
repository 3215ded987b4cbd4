"""Long admin work (a scrape, a status document of 10k targets) done in slices on the event loop.

The loop that runs the admin server also answers Envoy, so a scrape must not hold it for long. A `Pacer`
is awaited after each small unit of work (one target, one chunk of text) and gives the loop back once
`budget` seconds of work have run since it last did, with `core.giveway` (a real pause, not `sleep(0)`, so
the loop waits on its sockets): every waiting ext_proc call runs between two slices.
Rendering in a thread instead would not help: the text is built by Python code holding the GIL, which
the loop then waits for (up to the 5 ms switch interval at every turn), and a scrape would take longer.
"""

from __future__ import annotations

import time

from extproc.core import giveway

# One slice of admin work: a few ms, the stall an ext_proc call may see behind a scrape.
BUDGET = 0.002


class Pacer:
    """Counts the time since the loop was last given back; `pause` gives it back once `budget` is spent."""

    __slots__ = ("_budget", "_since", "longest", "slices")

    def __init__(self, budget: float = BUDGET) -> None:
        self._budget = budget
        self._since = time.perf_counter()
        self.slices = 1
        self.longest = 0.0  # the longest slice so far, in seconds (what a benchmark reports)

    async def pause(self) -> None:
        spent = time.perf_counter() - self._since
        if spent >= self._budget:
            self.longest = max(self.longest, spent)
            await giveway.give_way()
            self._since = time.perf_counter()
            self.slices += 1
