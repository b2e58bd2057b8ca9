"""Sliding windows with O(1) updates: bucketed counters (rates, limits) and recent samples.

Pure: every method takes ``now`` (seconds on any clock the caller keeps using), so tests
drive them with a fake clock and the request path pays a few integer operations.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


class BucketCounter:
    """Sums over a sliding window of ``window_s``, kept in fixed-width time buckets.

    The window is covered by ``buckets + 1`` buckets, so ``total`` counts everything in the
    last ``window_s`` plus at most one bucket more: a limit checked against it is never
    exceeded in any window of ``window_s`` (it may refuse up to one bucket early).
    """

    __slots__ = ("_bucket_s", "_counts", "_head", "_total")

    def __init__(self, window_s: float, buckets: int = 60) -> None:
        self._bucket_s = window_s / buckets
        self._counts = [0.0] * (buckets + 1)
        self._head = 0  # absolute index of the newest bucket
        self._total = 0.0

    @property
    def bucket_s(self) -> float:
        return self._bucket_s

    def add(self, now: float, amount: float = 1.0) -> None:
        self._advance(now)
        self._counts[self._head % len(self._counts)] += amount
        self._total += amount

    def total(self, now: float) -> float:
        """Everything added within the window (see the class note on the extra bucket)."""
        self._advance(now)
        return self._total

    def recent(self, now: float, seconds: float) -> float:
        """The sum over the newest buckets that span ``seconds`` (at most the window)."""
        self._advance(now)
        size = len(self._counts)
        count = min(size, max(1, round(seconds / self._bucket_s)))
        return sum(self._counts[(self._head - i) % size] for i in range(count))

    def retry_after_s(self, now: float, limit: float, need: float = 1.0) -> float:
        """Seconds until ``total + need <= limit`` holds again (on the refusal path only)."""
        self._advance(now)
        size = len(self._counts)
        excess = self._total + need - limit
        freed = 0.0
        for age in range(size - 1, -1, -1):  # oldest bucket first
            freed += self._counts[(self._head - age) % size]
            if freed >= excess:
                leaves_at = (self._head - age + size) * self._bucket_s
                return max(0.0, leaves_at - now)
        return size * self._bucket_s  # more than the window holds: a full window

    def _advance(self, now: float) -> None:
        index = math.floor(now / self._bucket_s)
        steps = index - self._head
        if steps <= 0:
            return
        size = len(self._counts)
        if steps >= size:
            self._counts = [0.0] * size
            self._total = 0.0
        else:
            for i in range(1, steps + 1):
                slot = (self._head + i) % size
                self._total -= self._counts[slot]
                self._counts[slot] = 0.0
            if self._total < 1e-9:  # float drift from many add/subtract pairs
                self._total = max(0.0, self._total)
        self._head = index


class SampleWindow:
    """The most recent ``capacity`` samples with their times; percentiles over the window."""

    __slots__ = ("_samples", "_window_s")

    def __init__(self, window_s: float = 60.0, capacity: int = 2048) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=capacity)

    def add(self, now: float, value: float) -> None:
        self._samples.append((now, value))

    def values(self, now: float) -> list[float]:
        since = now - self._window_s
        return [value for at, value in self._samples if at >= since]


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of unsorted ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def p50_p95(values: list[float]) -> dict[str, float | None]:
    """The ``{"p50", "p95"}`` pair of ``/status``, rounded to a tenth."""
    return {
        "p50": _round(percentile(values, 50)),
        "p95": _round(percentile(values, 95)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


STATUS_WINDOW_S = 60.0
RATE_WINDOW_S = 10.0  # rps in /status: recent enough to see a change, long enough to be stable


@dataclass(eq=False, slots=True)
class BackendWindows:
    """What ``/status`` reports over a sliding window for one backend (monotonic clock)."""

    requests: BucketCounter = field(default_factory=lambda: BucketCounter(STATUS_WINDOW_S, 60))
    latency_ms: SampleWindow = field(default_factory=SampleWindow)
    ttft_ms: SampleWindow = field(default_factory=SampleWindow)

    def rps(self, now: float) -> float:
        return self.requests.recent(now, RATE_WINDOW_S) / RATE_WINDOW_S
