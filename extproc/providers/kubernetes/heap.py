"""The cyclic garbage collector around the first sync, when the caches fill with long-lived documents.

At 10,000 targets the first sync builds about a million small dicts, lists and strings at once and keeps
them. Every collection during that load would walk the objects already built (a full one all of them), for
nothing, and every full collection afterwards would walk them again. `first_sync()` pauses the collector
while the caches fill, then moves everything alive into the permanent generation (`gc.freeze()`), which
later collections skip. Freed documents are still freed at once by reference counting; only a reference
cycle made before the freeze is never collected (the caches hold none).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


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
