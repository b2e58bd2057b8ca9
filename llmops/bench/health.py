"""Was the client the bottleneck? Client-side health figures and the saturation verdict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmops.bench.histogram import merged
from llmops.bench.worker import WorkerHealth

#: A worker busier than this (percent of one core) cannot be trusted to send on time.
CPU_SATURATED_PERCENT = 90.0
#: Event-loop wake-up delay (p99) beyond which timings carry client-side delay.
LOOP_LAG_P99_LIMIT_MS = 20.0
#: Sends later than their scheduled time by this much (p99) mean the schedule was not kept.
SCHEDULE_LAG_P99_LIMIT_MS = 20.0
#: Achieved send rate below this share of the scheduled one means the client fell behind.
MIN_RATE_SHARE = 0.9


def client_health(
    workers: Sequence[WorkerHealth],
    *,
    scheduled_rate: float | None,
    achieved_rate: float | None,
    rate_capped: bool,
    peak_in_flight: int,
) -> dict[str, Any]:
    """The ``client_health`` section of a result, with ``client_saturated`` and its reasons."""
    schedule_lag = merged(w.schedule_lag_ms for w in workers)
    reasons: list[str] = []
    per_worker: list[dict[str, Any]] = []
    for worker in workers:
        loop_p99 = worker.loop_lag_ms.percentile(99)
        per_worker.append(
            {
                "worker": worker.worker_id,
                "cpu_percent": round(worker.cpu_percent, 1),
                "cpu_percent_max": round(worker.cpu_percent_max, 1),
                "loop_lag_p50_ms": round(worker.loop_lag_ms.percentile(50), 3),
                "loop_lag_p99_ms": round(loop_p99, 3),
                "loop_lag_max_ms": round(worker.loop_lag_ms_max, 3),
                "peak_in_flight": worker.peak_in_flight,
                "max_rss_bytes": worker.max_rss_bytes,
            }
        )
        if worker.cpu_percent >= CPU_SATURATED_PERCENT:
            reasons.append(f"worker {worker.worker_id} used {worker.cpu_percent:.0f}% of a core")
        if loop_p99 > LOOP_LAG_P99_LIMIT_MS:
            reasons.append(f"worker {worker.worker_id} event-loop lag p99 {loop_p99:.0f} ms")
    schedule_p99 = schedule_lag.percentile(99)
    if schedule_lag.count and schedule_p99 > SCHEDULE_LAG_P99_LIMIT_MS:
        reasons.append(f"sends ran {schedule_p99:.0f} ms behind schedule (p99)")
    if (
        scheduled_rate
        and achieved_rate is not None
        and not rate_capped
        and achieved_rate < MIN_RATE_SHARE * scheduled_rate
    ):
        reasons.append(f"achieved {achieved_rate:.1f} req/s of {scheduled_rate:.1f} scheduled")
    return {
        "client_saturated": bool(reasons),
        "saturation_reasons": reasons,
        "schedule_lag_p50_ms": schedule_lag.percentile(50),
        "schedule_lag_p99_ms": schedule_p99,
        "schedule_lag_max_ms": max((w.schedule_lag_ms_max for w in workers), default=0.0),
        "scheduled_request_rate": scheduled_rate,
        "achieved_request_rate": achieved_rate,
        "peak_in_flight": peak_in_flight,
        "max_rss_bytes_total": sum(w.max_rss_bytes for w in workers),
        "workers": per_worker,
    }
