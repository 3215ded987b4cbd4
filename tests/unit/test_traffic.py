"""Request-rate window with the add-on's semantics, and counter snapshots."""

from __future__ import annotations

import pytest

from extproc.core.traffic import RateWindow, TargetTraffic, TrafficSnapshot


def test_empty_window_is_zero() -> None:
    assert RateWindow(60, 1).average(1000.0) == 0.0


def test_partial_window_averages_over_buckets_since_first_write() -> None:
    window = RateWindow(60, 1)
    for second in range(5):
        for _ in range(10):
            window.record(100.0 + second + 0.5)
    # 50 requests over 5 one-second buckets: 10 per second, not 50/60.
    assert window.average(104.9) == 10.0


def test_full_window_counts_idle_buckets_as_zero() -> None:
    window = RateWindow(10, 1)
    for second in range(10):
        window.record(200.0 + second)
    assert window.average(209.5) == 1.0
    # 4 buckets later, the first 4 requests have aged out: 6 requests over the 10-bucket window.
    assert window.average(213.5) == 0.6


def test_a_burst_keeps_its_rate_until_the_window_passes_then_zero() -> None:
    window = RateWindow(10, 1)
    for _ in range(100):
        window.record(50.2)
    assert window.average(50.9) == 100.0
    assert window.average(59.9) == 100.0
    assert window.average(60.0) == 0.0


def test_gap_longer_than_window_resets() -> None:
    window = RateWindow(5, 1)
    for second in range(5):
        window.record(10.0 + second)
    window.record(30.0)
    assert window.average(30.5) == 1.0


def test_gap_shorter_than_window_zeroes_skipped_buckets() -> None:
    window = RateWindow(4, 1)
    window.record(0.5)
    window.record(1.5)
    window.record(2.5)
    window.record(3.5)
    window.record(6.5)  # buckets 4 and 5 are skipped: slots reused must not keep old counts
    # window covers buckets 3..6: 1 + 0 + 0 + 1 over 4 buckets
    assert window.average(6.6) == 0.5


def test_granularity_other_than_one_second() -> None:
    window = RateWindow(60, 10)
    for _ in range(30):
        window.record(1005.0)
    # requests per granularity (10 s), averaged over valid buckets
    assert window.average(1009.0) == 30.0
    assert window.window == 60


def test_late_write_within_window_counts_older_is_ignored() -> None:
    window = RateWindow(5, 1)
    window.record(10.5)
    window.record(8.5)  # two buckets earlier, still inside the window
    window.record(1.5)  # far outside: ignored
    assert window._total == 2


def test_rounding_to_three_decimals() -> None:
    window = RateWindow(3, 1)
    window.record(0.5)
    window.record(1.5)
    window.record(2.5)
    window.record(2.6)
    assert window.average(2.9) == pytest.approx(1.333)


def test_invalid_window() -> None:
    with pytest.raises(ValueError, match="granularity"):
        RateWindow(1, 2)


def test_snapshot_and_sum() -> None:
    traffic = TargetTraffic(60, 1)
    traffic.in_flight = 3
    traffic.requests = 10
    traffic.rate.record(5.0, 4)
    snapshot = traffic.snapshot(5.5, held=2)
    assert snapshot == TrafficSnapshot(in_flight=3, held=2, requests=10, rate=4.0)
    assert snapshot + TrafficSnapshot(1, 1, 1, 0.5) == TrafficSnapshot(4, 3, 11, 4.5)
