"""Per-target traffic counters: in-flight requests, a monotonic request count and the request-rate window.

The hot path only touches plain integers and one ring slot; everything else (averages, snapshots for the
scaler, metrics exporters) is computed when read.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from extproc.core.coldstart import HoldOutcome

_RATE_PRECISION = 3


class RateWindow:
    """Requests per `granularity`, averaged over `window`, with the KEDA HTTP add-on's semantics.

    Time is cut into buckets of `granularity` seconds kept in a ring covering `window`. The average is over
    the buckets since the first write when that is shorter than the window (so a new burst reads at its real
    rate rather than diluted by a window of zeros), and 0 once a whole window has passed without a request.
    """

    __slots__ = ("_buckets", "_first", "_granularity", "_last", "_size", "_total")

    def __init__(self, window: float, granularity: float) -> None:
        if granularity <= 0 or window < granularity:
            raise ValueError("need 0 < granularity <= window")
        self._granularity = granularity
        self._size = math.ceil(window / granularity - 1e-9)
        self._buckets = [0] * self._size
        self._first = -1
        self._last = -1
        self._total = 0

    @property
    def window(self) -> float:
        return self._size * self._granularity

    @property
    def granularity(self) -> float:
        return self._granularity

    def record(self, now: float, count: int = 1) -> None:
        """Count `count` requests at monotonic time `now`."""
        index = int(now / self._granularity)
        if index != self._last:
            if index < self._last:
                if index <= self._last - self._size:
                    return
            else:
                self._advance(index)
        self._buckets[index % self._size] += count
        self._total += count

    def _advance(self, index: int) -> None:
        size = self._size
        if self._last < 0 or index - self._last >= size:
            self._buckets = [0] * size
            self._total = 0
            self._first = index
        else:
            buckets = self._buckets
            for i in range(self._last + 1, index + 1):
                slot = i % size
                self._total -= buckets[slot]
                buckets[slot] = 0
        self._last = index

    def average(self, now: float) -> float:
        """The windowed average at monotonic time `now`, rounded to 3 decimals."""
        if self._last < 0:
            return 0.0
        index = int(now / self._granularity)
        idle = index - self._last
        if idle >= self._size:
            return 0.0
        total = self._total
        for i in range(self._last + 1, index + 1):
            total -= self._buckets[i % self._size]
        valid = min(self._last - self._first + 1, self._size)
        return round(total / valid, _RATE_PRECISION)


HOLD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Histogram:
    """Cumulative-bucket histogram (Prometheus style) of hold durations; updated on the cold path only."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = HOLD_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = 0
        for bound in self.bounds:
            if value <= bound:
                break
            index += 1
        self.counts[index] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) pairs, ending with +Inf."""
        total = 0
        result = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            result.append((bound, total))
        return result


class TargetTraffic:
    """Live counters of one target in this process.

    `in_flight` counts the requests zerohop follows to their end: every held request, and every request of
    a target whose end is observed (concurrency metric, or `--in-flight=all`). `requests` only ever grows.
    `outcomes` counts held requests by how their hold ended, `holds` their durations (cold path only).
    `mesh_requests`, `mesh_in_flight`: those of `requests` and `in_flight` that came through a client's
    sidecar (east-west), not a gateway: the gateways' stats never count them. They are told apart only while
    `mesh_apart` is set, which the warm path sets before it starts counting the target from the gateways'
    stats (the only reader of the split): telling them apart costs every request an attribute lookup.
    """

    __slots__ = (
        "fence",
        "gateway_in_flight",
        "holds",
        "in_flight",
        "mesh_apart",
        "mesh_in_flight",
        "mesh_requests",
        "outcomes",
        "rate",
        "released_5xx",
        "requests",
    )

    def __init__(self, window: float, granularity: float) -> None:
        self.in_flight = 0
        self.requests = 0
        self.mesh_requests = 0
        self.mesh_in_flight = 0
        self.mesh_apart = False
        # Set for a few ms while the warm path reads the baseline of the target's gateway counters: new
        # requests wait for it before they are counted, so zerohop's count stands still during the read.
        self.fence: asyncio.Event | None = None
        self.rate = RateWindow(window, granularity)
        self.outcomes: dict[HoldOutcome, int] = {}
        self.holds: dict[HoldOutcome, Histogram] = {}
        self.released_5xx = 0
        # Requests the gateway has open to the target, read from its stats while the warm path is open.
        self.gateway_in_flight = 0

    @property
    def gateway_requests(self) -> int:
        """The requests zerohop counted that came through a gateway (or were counted from its stats)."""
        return self.requests - self.mesh_requests

    def hold_ended(self, outcome: HoldOutcome, seconds: float | None) -> None:
        """Count a cold request's outcome; `seconds` held is None when it was refused without being held."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if seconds is None:
            return
        histogram = self.holds.get(outcome)
        if histogram is None:
            histogram = self.holds[outcome] = Histogram()
        histogram.observe(seconds)

    def snapshot(self, now: float, held: int) -> TrafficSnapshot:
        # The gateway's count includes the gateway requests zerohop follows too: the larger one, never their
        # sum; east-west requests are in no gateway's count, so they are added.
        mesh = self.mesh_in_flight
        in_flight = max(self.in_flight - mesh, self.gateway_in_flight) + mesh
        return TrafficSnapshot(in_flight, held, self.requests, self.rate.average(now))


@dataclass(frozen=True, slots=True)
class TrafficSnapshot:
    """Counters of one target at one moment, as the scaler, status and peers read them."""

    in_flight: int
    held: int
    requests: int
    rate: float
    # The warm path may let requests bypass zerohop: the target is active whatever the counts say.
    forced_active: bool = False

    def __add__(self, other: TrafficSnapshot) -> TrafficSnapshot:
        return TrafficSnapshot(
            self.in_flight + other.in_flight,
            self.held + other.held,
            self.requests + other.requests,
            round(self.rate + other.rate, _RATE_PRECISION),
            self.forced_active or other.forced_active,
        )


EMPTY_SNAPSHOT = TrafficSnapshot(0, 0, 0, 0.0)
