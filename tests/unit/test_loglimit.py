"""Rate-limited log lines: the first is written (with its traceback), then one per interval with a count."""

from __future__ import annotations

import logging

import pytest

from extproc.core.loglimit import LogLimiter, clip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_saying_how_many_were_left_out(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = LogLimiter(logging.getLogger("t"), interval=10, clock=clock)
    with caplog.at_level(logging.INFO, "t"):
        assert limiter.log(logging.WARNING, "bad request from %s", "a")
        for _ in range(50):
            assert not limiter.log(logging.WARNING, "bad request from %s", "b")
        clock.now += 10
        assert limiter.log(logging.WARNING, "bad request from %s", "c")
        assert not limiter.log(logging.WARNING, "bad request from %s", "d")
    assert [r.getMessage() for r in caplog.records] == [
        "bad request from a",
        "bad request from c (50 more like it in the last 10s not logged)",
    ]


def test_only_the_first_line_carries_the_traceback(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = LogLimiter(logging.getLogger("t"), interval=1, clock=clock)
    with caplog.at_level(logging.INFO, "t"):
        for _ in range(2):
            try:
                raise ValueError("boom")
            except ValueError:
                limiter.log(logging.WARNING, "failed", traceback_once=True)
            clock.now += 1
    tracebacks = [r.exc_info[0] if r.exc_info else None for r in caplog.records]
    assert tracebacks == [ValueError, None]


def test_clip_bounds_text_and_says_how_long_it_was() -> None:
    assert clip("short") == "short"
    clipped = clip("x" * 65536, 100)
    assert clipped == "x" * 100 + "... (65536 characters)"
