"""A mergeable log-bucketed histogram (HDR-like, ~1% relative error) for the live view.

Workers send one per interval instead of raw samples; the coordinator merges them and keeps
a sliding window. Final results never use these: they come from exact per-request values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: Bucket width as a ratio: each bucket covers [g^k, g^(k+1)).
GROWTH = 1.02
_LOG_GROWTH = math.log(GROWTH)
#: Values below this (in the unit recorded) share bucket 0.
FLOOR = 1e-3


class LogHistogram:
    """Counts of values in geometric buckets; ``merge`` adds another histogram's counts."""

    __slots__ = ("buckets", "count")

    def __init__(self, buckets: dict[int, int] | None = None) -> None:
        self.buckets: dict[int, int] = dict(buckets) if buckets else {}
        self.count = sum(self.buckets.values())

    def record(self, value: float) -> None:
        key = 0 if value <= FLOOR else int(math.log(value / FLOOR) / _LOG_GROWTH) + 1
        self.buckets[key] = self.buckets.get(key, 0) + 1
        self.count += 1

    def record_all(self, values: Iterable[float]) -> None:
        for value in values:
            self.record(value)

    def merge(self, other: LogHistogram) -> None:
        buckets = self.buckets
        for key, count in other.buckets.items():
            buckets[key] = buckets.get(key, 0) + count
        self.count += other.count

    def percentile(self, p: float) -> float:
        """The value at percentile ``p`` (0-100): the geometric middle of its bucket; 0 if empty."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(p / 100 * self.count))
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                return _bucket_value(key)
        return _bucket_value(max(self.buckets))


def merged(histograms: Iterable[LogHistogram]) -> LogHistogram:
    total = LogHistogram()
    for histogram in histograms:
        total.merge(histogram)
    return total


def _bucket_value(key: int) -> float:
    if key == 0:
        return FLOOR
    return float(FLOOR * GROWTH ** (key - 0.5))
