"""The metrics of ``vllm bench serve`` (``calculate_metrics``), same names, formulas and units.

- TTFT: send → first content chunk. ITL: gap between consecutive content chunks.
- E2EL: send → last chunk. TPOT: (E2EL - TTFT) / (output_tokens - 1), requests with > 1 token.
- Throughputs divide by the run duration; goodput counts requests meeting every SLO (a
  request with one token has TPOT 0 for goodput, as in vLLM).
- mean/std (population)/median/percentiles (linear interpolation, numpy's default) in ms;
  an empty list counts as [0], as ``np.mean(xs or 0)`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from llmops.bench.records import RequestRecords

METRICS = ("ttft", "tpot", "itl", "e2el")


def percentile(values: Sequence[float], p: float) -> float:
    """numpy.percentile(values, p) with linear interpolation; ``values`` must be sorted."""
    if not values:
        return 0.0
    rank = p / 100 * (len(values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def std(values: Sequence[float]) -> float:
    """Population standard deviation (numpy's default ``ddof=0``)."""
    if not values:
        return 0.0
    average = mean(values)
    return math.sqrt(math.fsum((v - average) ** 2 for v in values) / len(values))


def percentile_key(p: float) -> str:
    """vLLM's spelling of a percentile in a key: 99 → "99", 99.9 → "99.9"."""
    return str(int(p)) if int(p) == p else str(p)


def summarize(
    values_s: Sequence[float], name: str, percentiles: Sequence[float]
) -> dict[str, float]:
    """``mean_<name>_ms``, ``median_…``, ``std_…``, ``p<P>_<name>_ms`` of ``values_s`` (seconds)."""
    ordered = sorted(values_s)
    out = {
        f"mean_{name}_ms": mean(ordered) * 1000,
        f"median_{name}_ms": percentile(ordered, 50) * 1000,
        f"std_{name}_ms": std(ordered) * 1000,
    }
    for p in percentiles:
        out[f"p{percentile_key(p)}_{name}_ms"] = percentile(ordered, p) * 1000
    return out


def calculate_metrics(
    records: RequestRecords,
    duration_s: float,
    percentiles: Sequence[float],
    goodput_ms: dict[str, float],
) -> dict[str, Any]:
    """vLLM's result metrics for the measured ``records`` (failed ones included, and counted)."""
    ttfts: list[float] = []
    tpots: list[float] = []
    all_tpots: list[float] = []
    itls: list[float] = []
    e2els: list[float] = []
    total_input = total_output = failed = 0
    ok_rows: list[int] = []
    for row, request_itls in enumerate(records.itls_of()):
        if records.errors[row]:
            failed += 1
            continue
        ok_rows.append(row)
        output_len = records.output_tokens[row]
        total_input += records.input_tokens[row]
        total_output += output_len
        ttft = records.ttft_s[row]
        e2el = records.end_s[row] - records.sent_s[row]
        tpot = 0.0
        if output_len > 1:
            tpot = (e2el - ttft) / (output_len - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)
        itls.extend(request_itls)
        ttfts.append(ttft)
        e2els.append(e2el)
    completed = len(ok_rows)
    good = _count_good(goodput_ms, ttfts, all_tpots, e2els) if goodput_ms else 0
    peak_tokens_s, peak_requests = _peak_second(records, ok_rows)
    duration_s = duration_s if duration_s > 0 else math.inf
    result: dict[str, Any] = {
        "duration": 0.0 if math.isinf(duration_s) else duration_s,
        "completed": completed,
        "failed": failed,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput": completed / duration_s,
        "request_goodput": good / duration_s if goodput_ms else None,
        "output_throughput": total_output / duration_s,
        "total_token_throughput": (total_input + total_output) / duration_s,
        "max_output_tokens_per_s": peak_tokens_s,
        "max_concurrent_requests": peak_requests,
    }
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        result.update(summarize(values, name, percentiles))
    return result


def peak_in_flight(records: RequestRecords) -> int:
    """The exact maximum number of requests between send and end at any instant."""
    events = [(t, 1) for t in records.sent_s] + [(t, -1) for t in records.end_s]
    # Ends sort before sends at the same instant: a slot freed and refilled is not two.
    events.sort(key=lambda event: (event[0], event[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def _count_good(
    goodput_ms: dict[str, float], ttfts: list[float], tpots: list[float], e2els: list[float]
) -> int:
    columns = {"ttft": ttfts, "tpot": tpots, "e2el": e2els}
    chosen = [(columns[name], slo / 1000) for name, slo in goodput_ms.items()]
    return sum(1 for row in range(len(ttfts)) if all(values[row] <= slo for values, slo in chosen))


def _peak_second(records: RequestRecords, ok_rows: list[int]) -> tuple[float, int]:
    """vLLM's max_output_tokens_per_s and max_concurrent_requests: one-second buckets."""
    if not ok_rows:
        return 0.0, 0
    start = min(records.sent_s[row] for row in ok_rows)
    end = max(records.end_s[row] for row in ok_rows)
    buckets = math.ceil(end - start) + 1
    tokens = [0] * buckets
    concurrent = [0] * buckets
    itls_by_row = records.itls_of()
    for row in ok_rows:
        sent = records.sent_s[row]
        token_time = sent + records.ttft_s[row]
        times = [token_time]
        for gap in itls_by_row[row]:
            token_time += gap
            times.append(token_time)
        for moment in times:
            bucket = int(moment - start)
            if 0 <= bucket < buckets:
                tokens[bucket] += 1
        for second in range(
            int(sent - start), min(int(records.end_s[row] - start), buckets - 1) + 1
        ):
            concurrent[second] += 1
    return float(max(tokens)), max(concurrent)
