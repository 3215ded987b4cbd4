"""The cyclic garbage collector and the caches' documents: frozen once loaded, so no collection walks them.

At 10,000 targets the first sync builds about a million small dicts, lists and strings at once and keeps
them. Every collection during that load would walk the objects already built (a full one all of them), for
nothing, and every full collection afterwards would walk them again. `first_sync()` pauses the collector
while the caches fill, then moves everything alive into the permanent generation (`gc.freeze()`), which
later collections skip.

A burst of watch events (the leader writing 10,000 ScaledObjects and statuses, each coming back as a new
document on every replica) refills the caches the same way: a full collection then walks every document
that came in since the freeze, 100 to 400 ms on one event loop by the end of such a sync. So the caches
report what they take in (`took()`), and after `BURST` documents within `BURST_WINDOW` seconds everything
alive is frozen again; a full collection walks at most about a burst's worth of documents. A trickle of
events (fewer than `BURST` a window) never freezes: its documents are collected as usual, cheaply.

What a freeze costs: freed documents are still freed at once by reference counting; only a reference cycle
alive at the moment of a freeze and dropped later is never collected (the caches hold none; an ext_proc call
or a write in flight at that moment may), once per burst.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

BURST = 1000
BURST_WINDOW = 60.0


@contextlib.contextmanager
def first_sync() -> Iterator[None]:
    """No cyclic collection inside the block; whatever is alive at its end is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class Intake:
    """Counts the documents the caches take in; freezes the heap after a burst of them."""

    def __init__(
        self, burst: int = BURST, window: float = BURST_WINDOW, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window = window
        self._clock = clock
        self._since = clock()
        self._count = 0
        self.freezes = 0

    def took(self, count: int = 1) -> None:
        now = self._clock()
        if now - self._since > self.window:
            self._since, self._count = now, 0
        self._count += count
        if self._count >= self.burst:
            gc.freeze()
            self.freezes += 1
            self._since, self._count = now, 0


_INTAKE = Intake()


def took(count: int = 1) -> None:
    """`count` documents were taken into a cache (watch events, a relist)."""
    _INTAKE.took(count)
