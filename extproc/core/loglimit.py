"""Log lines that input from outside can trigger, bounded: at most one line per interval, and clipped text.

A client that sends garbage must cost a status, not a log line (or a traceback) per request: `LogLimiter`
writes the first occurrence, then at most one line per `interval`, saying how many it left out; `clip`
bounds any client-supplied text put into a log line or an error message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


def clip(text: str, limit: int = 256) -> str:
    """`text`, or its first `limit` characters and how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class LogLimiter:
    """One kind of log line, written at most once per `interval` seconds."""

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next: float | None = None
        self.suppressed = 0

    def log(self, level: int, message: str, *args: object, traceback_once: bool = False) -> bool:
        """Log unless a line was written less than `interval` ago; True if written. With `traceback_once`,
        the first line ever carries the current exception's traceback and later ones only its message."""
        now = self._clock()
        first = self._next is None
        if self._next is not None and now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self._interval
        if self.suppressed:
            message += " (%d more like it in the last %.0fs not logged)"
            args = (*args, self.suppressed, self._interval)
            self.suppressed = 0
        self._logger.log(level, message, *args, exc_info=traceback_once and first)
        return True
