"""Run controller follow-up work after the current store commit has finished (`DirtyKeys`: once per key marked)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar


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


K = TypeVar("K")


class DirtyKeys(Generic[K]):
    """The keys a controller has yet to sync: each key marked is synced once in the next coalesced pass, the
    pass's keys in `order`; a key marked again meanwhile (e.g. by its own sync, after a conflict) waits for the
    pass after."""

    def __init__(self, sync: Callable[[K], None], order: Callable[[K], Any]) -> None:
        self._sync = sync
        self._order = order
        self._keys: set[K] = set()
        self._coalescer = Coalescer(self._run)

    def mark(self, key: K) -> None:
        self._keys.add(key)
        self._coalescer.poke()

    def _run(self) -> None:
        keys, self._keys = self._keys, set()
        for key in sorted(keys, key=self._order):
            self._sync(key)
