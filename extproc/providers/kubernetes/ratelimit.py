"""The client-side limit on requests to the API server: a token bucket (`qps` refill, `burst` capacity).

Each `acquire()` reserves the next token and sleeps until it is due, so waiters are served in the order they
asked and a burst of callers is spread out at `qps`, never rejected. `qps <= 0` means no limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """`burst` requests at once, then `qps` per second; tokens owed are a negative balance."""

    def __init__(self, qps: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self.burst)
        self._stamp = clock()
        self.waits = 0

    @property
    def limited(self) -> bool:
        return self.qps > 0

    def reserve(self) -> float:
        """Take a token now; the seconds until it is due (0 when one was in the bucket)."""
        if not self.limited:
            return 0.0
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def cancel(self) -> None:
        """Give back a token reserved by a caller that stopped waiting for it."""
        if self.limited:
            self._tokens = min(float(self.burst), self._tokens + 1.0)

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay <= 0:
            return
        self.waits += 1
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancel()
            raise
