"""Run controller follow-up work after the current store commit has finished."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def call_soon(callback: Callable[[], None]) -> None:
    """On the running loop's next iteration, or right away when no loop is running."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        callback()
        return
    loop.call_soon(callback)


class Coalescer:
    """Schedules `callback` once per loop iteration no matter how often it is poked."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._scheduled = False

    def poke(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        call_soon(self._run)

    def _run(self) -> None:
        self._scheduled = False
        self._callback()
