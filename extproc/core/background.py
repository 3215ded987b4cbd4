"""The tasks a long-lived object starts and does not await itself: kept, reported when they crash, stopped.

Every object with a loop of its own (an informer, the reconciler, the autoscaler, a replica set...) holds one
`BackgroundTasks`. `spawn` keeps a strong reference (the event loop keeps only weak ones) until the task ends;
a task that ends with an exception is logged at once, so a crashed loop does not vanish silently, and only
once (the exception counts as retrieved, so asyncio does not report it again when the task is collected).
`close` cancels every task and waits for them all; it is safe to call again, and anything spawned after it
is refused: its coroutine is closed unrun and an already-cancelled future comes back. A task that is itself
a cleanup (stopping a child that was removed, closing a channel) is spawned with `cancel_on_close=False`:
`close` waits for it instead, since a task cancelled before its first step never runs at all.

Why not `asyncio.TaskGroup`: a TaskGroup lives inside one `async with` block in one task, while these owners
start in one call (`start()`, or a synchronous callback such as an informer event) and stop in another; its
first failing task cancels every sibling and the task that entered it (here: whoever called `start()`), where
one crashed background loop must only be reported; and leaving it waits for the tasks rather than cancelling
them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class BackgroundTasks:
    """Owns the background tasks of one object, from `spawn` to `close`."""

    __slots__ = ("_closed", "_keep", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keep: set[asyncio.Task[Any]] = set()  # cleanups: awaited by close(), not cancelled
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        """How many tasks are still running."""
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, T], *, name: str, cancel_on_close: bool = True) -> asyncio.Future[T]:
        """Run `coroutine` as a task named `name` (the name is what a crash report says) and return it."""
        loop = asyncio.get_running_loop()
        if self._closed:
            coroutine.close()
            refused: asyncio.Future[T] = loop.create_future()
            refused.cancel()
            return refused
        task = loop.create_task(coroutine, name=name)
        self._tasks.add(task)
        if not cancel_on_close:
            self._keep.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._keep.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("background task %r failed", task.get_name(), exc_info=error)

    async def close(self) -> None:
        """Cancel every task (but cleanups) and wait until all have ended; spawn refuses from now on."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            if task not in self._keep:
                task.cancel()
        if tasks:
            # Failures were logged as they happened; here they only must not stop the others from being awaited.
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> BackgroundTasks:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()
