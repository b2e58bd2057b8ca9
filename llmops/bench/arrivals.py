"""Send schedules computed up front: offsets in seconds from the start of the run.

Open loop follows ``vllm bench serve``: gaps drawn from a gamma distribution with shape
``burstiness`` and mean ``1/rate`` (burstiness 1 is Poisson), or constant gaps, summed into
an absolute schedule; a fixed-count run is rescaled so the last send lands at ``n/rate``
(vLLM does this so throughput does not drift with the seed). Ramp-up grows the rate
linearly from 0 to ``rate`` over ``ramp_up_s`` by warping time, so the same draws are reused.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable

from llmops.bench.options import Arrival
from llmops.errors import BenchError

#: A duration-bounded open loop never plans more sends than this (memory guard).
MAX_PLANNED_SENDS = 5_000_000


def open_loop_offsets(
    rate: float,
    *,
    arrival: Arrival = "poisson",
    burstiness: float = 1.0,
    num_requests: int | None = None,
    duration_s: float | None = None,
    ramp_up_s: float = 0.0,
    seed: int = 0,
) -> array[float]:
    """Non-decreasing send offsets (s): ``num_requests`` of them, or all before ``duration_s``."""
    if num_requests is None and duration_s is None:
        raise BenchError("an open-loop run needs --num-requests or --duration")
    rng = random.Random(seed)
    gap = _gap_sampler(rng, rate, arrival, burstiness)
    offsets: array[float] = array("d")
    if num_requests is not None:
        # Like vLLM, the first request goes at the first drawn gap, not at 0.
        elapsed = 0.0
        for _ in range(num_requests):
            elapsed += gap()
            offsets.append(elapsed)
        if ramp_up_s == 0 and offsets[-1] > 0:
            scale = (num_requests / rate) / offsets[-1]
            offsets = array("d", (value * scale for value in offsets))
    else:
        assert duration_s is not None
        horizon = _operational_time(duration_s, ramp_up_s)
        elapsed = gap()
        while elapsed < horizon:
            if len(offsets) >= MAX_PLANNED_SENDS:
                raise BenchError(f"--rate x --duration plans over {MAX_PLANNED_SENDS} requests")
            offsets.append(elapsed)
            elapsed += gap()
    if ramp_up_s > 0:
        offsets = array("d", (_wall_time(value, ramp_up_s) for value in offsets))
    return offsets


def closed_loop_start_offsets(concurrency: int, ramp_up_s: float) -> list[float]:
    """When each closed-loop slot sends its first request: all at 0, or spread over the ramp-up."""
    if ramp_up_s <= 0 or concurrency == 1:
        return [0.0] * concurrency
    step = ramp_up_s / concurrency
    return [slot * step for slot in range(concurrency)]


def split_round_robin(count: int, parts: int, part: int) -> range:
    """The global indices ``part`` owns when ``count`` items are dealt round-robin to ``parts``."""
    return range(part, count, parts)


def split_evenly(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` shares that differ by at most one, larger first."""
    base, extra = divmod(total, parts)
    return [base + (1 if index < extra else 0) for index in range(parts)]


def _gap_sampler(
    rng: random.Random, rate: float, arrival: Arrival, burstiness: float
) -> Callable[[], float]:
    if arrival == "constant" or math.isinf(burstiness):
        interval = 1.0 / rate
        return lambda: interval
    shape = 1.0 if arrival == "poisson" and burstiness == 1.0 else burstiness
    scale = 1.0 / (rate * shape)
    return lambda: rng.gammavariate(shape, scale)


def _operational_time(wall_s: float, ramp_up_s: float) -> float:
    """Expected sends by ``wall_s`` divided by ``rate``: the constant-rate clock ramp-up warps."""
    if ramp_up_s <= 0:
        return wall_s
    if wall_s <= ramp_up_s:
        return wall_s * wall_s / (2 * ramp_up_s)
    return ramp_up_s / 2 + (wall_s - ramp_up_s)


def _wall_time(operational_s: float, ramp_up_s: float) -> float:
    """Inverse of ``_operational_time``: when a send planned at ``operational_s`` happens."""
    if operational_s <= ramp_up_s / 2:
        return math.sqrt(2 * ramp_up_s * operational_s)
    return operational_s - ramp_up_s / 2 + ramp_up_s
