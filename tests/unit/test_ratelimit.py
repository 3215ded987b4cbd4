"""The API client's token bucket: a burst at once, then `qps`, in order; a cancelled wait gives its token back."""

from __future__ import annotations

import asyncio

import pytest

from extproc.providers.kubernetes.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_then_each_request_waits_its_turn_at_qps() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 3, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    # Reservations queue up behind each other: the 4th is due in 0.1 s, the 5th in 0.2 s.
    assert [bucket.reserve() for _ in range(2)] == pytest.approx([0.1, 0.2])
    clock.now += 1.0  # 10 tokens refilled, 2 of them owed: a burst of 3 again at most
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() == pytest.approx(0.1)


def test_an_idle_bucket_refills_to_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(5, 2, clock=clock)
    clock.now += 3600
    assert [bucket.reserve() for _ in range(2)] == [0, 0]
    assert bucket.reserve() == pytest.approx(0.2)


def test_qps_zero_means_no_limit() -> None:
    bucket = TokenBucket(0, 1)
    assert not bucket.limited
    assert all(bucket.reserve() == 0 for _ in range(10_000))


async def test_acquire_sleeps_until_the_token_is_due_and_a_cancelled_wait_gives_it_back() -> None:
    clock = Clock()
    bucket = TokenBucket(1, 1, clock=clock)
    await bucket.acquire()  # the burst token: no wait
    assert bucket.waits == 0
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()  # due in 1 s
    assert bucket.waits == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    # The cancelled reservation is returned: the next caller is due in 1 s, not 2.
    assert bucket.reserve() == pytest.approx(1.0)
