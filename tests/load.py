"""A client load for tests: requests at a steady pace or from back-to-back loops, until stopped, keeping every
reply, every error and how many requests the client has in flight (and since when that number holds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Reply = TypeVar("Reply")


class Load(Generic[Reply]):
    """`send()` one request; `status(reply)` its HTTP status. `rate` requests per second, and/or `workers`
    loops each sending its next request when the last one is answered."""

    def __init__(
        self,
        send: Callable[[], Awaitable[Reply]],
        status: Callable[[Reply], int],
        *,
        rate: float = 0.0,
        workers: int = 0,
    ) -> None:
        self._send = send
        self._status = status
        self.replies: list[tuple[float, Reply]] = []
        self.errors: list[BaseException] = []
        self.in_flight = 0  # requests sent and not answered yet, as the client knows it
        self.changed_at = time.monotonic()  # when in_flight last changed
        self._rate = rate
        self._workers = workers
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()

    async def _one(self) -> None:
        self.in_flight += 1
        self.changed_at = time.monotonic()
        try:
            reply = await self._send()
        except Exception as exc:
            self.errors.append(exc)
            return
        finally:
            self.in_flight -= 1
            self.changed_at = time.monotonic()
        self.replies.append((time.monotonic(), reply))

    async def _paced(self) -> None:
        interval, next_at = 1 / self._rate, time.monotonic()
        while not self._stop.is_set():
            task = asyncio.create_task(self._one())
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _loop(self) -> None:
        while not self._stop.is_set():
            await self._one()

    def start(self) -> Load[Reply]:
        if self._rate:
            self._tasks.append(asyncio.create_task(self._paced()))
        self._tasks += [asyncio.create_task(self._loop()) for _ in range(self._workers)]
        return self

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        if self._pending:
            await asyncio.gather(*list(self._pending))

    @property
    def sent(self) -> int:
        return len(self.replies) + len(self.errors)

    def statuses(self) -> list[int]:
        return [self._status(reply) for _, reply in self.replies]
