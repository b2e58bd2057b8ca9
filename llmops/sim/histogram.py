"""A Prometheus-style histogram with fixed buckets, kept as plain counts (no I/O, no locks)."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass

#: vLLM's buckets for ``vllm:time_to_first_token_seconds``.
TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
#: vLLM's buckets for ``vllm:e2e_request_latency_seconds``.
E2E_BUCKETS_S: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
    120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]  # one per bound, then +Inf
    total: float

    @property
    def count(self) -> int:
        return self.cumulative_counts[-1]


class Histogram:
    """Counts observations per bucket; ``snapshot()`` gives Prometheus' cumulative view."""

    __slots__ = ("_bounds", "_counts", "_total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus' le).
        self._counts[bisect_left(self._bounds, value)] += 1
        self._total += value

    def snapshot(self) -> HistogramSnapshot:
        cumulative: list[int] = []
        running = 0
        for count in self._counts:
            running += count
            cumulative.append(running)
        return HistogramSnapshot(self._bounds, tuple(cumulative), self._total)
