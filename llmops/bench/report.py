"""The run's result: vLLM's ``--save-result`` keys plus ours, the summary, per-request JSONL."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from llmops.bench.health import client_health
from llmops.bench.metrics import METRICS, calculate_metrics, peak_in_flight, percentile_key
from llmops.bench.options import BenchOptions
from llmops.bench.records import RequestRecords, error_family
from llmops.bench.worker import WorkerHealth
from llmops.errors import BenchError


def build_result(
    options: BenchOptions,
    model: str,
    records: RequestRecords,
    workers: Sequence[WorkerHealth],
    *,
    scheduled_rate: float | None,
    interrupted: bool,
) -> dict[str, Any]:
    """The result document: vLLM's keys (same names and units) first, then llmops extras."""
    measured = records.select([index >= options.warmup for index in records.index])
    duration = _duration(measured, options)
    metrics = calculate_metrics(measured, duration, options.percentiles, dict(options.goodput))
    achieved = _achieved_rate(records) if not options.closed_loop else None
    health = client_health(
        workers,
        scheduled_rate=scheduled_rate,
        achieved_rate=achieved,
        rate_capped=options.concurrency is not None,
        peak_in_flight=peak_in_flight(records),
    )
    ok = [not error for error in measured.errors]
    from_usage = [measured.tokens_from_usage[row] for row, good in enumerate(ok) if good]
    result: dict[str, Any] = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": "openai-chat" if options.endpoint == "chat" else "openai",
        "backend": "openai-chat" if options.endpoint == "chat" else "openai",
        "label": options.label,
        "model_id": model,
        "tokenizer_id": None,
        "num_prompts": len(measured),
        "request_rate": options.rate if options.rate is not None else "inf",
        "burstiness": options.burstiness,
        "max_concurrency": options.concurrency,
        **metrics,
        "percentiles": list(options.percentiles),
        "output_tokens_source": _token_source(from_usage),
        "errors_by_class": dict(Counter(e for e in measured.errors if e)),
        "errors_by_family": dict(Counter(error_family(e) for e in measured.errors if e)),
        "error_samples": dict(measured.error_samples),
        "warmup_requests": len(records) - len(measured),
        "interrupted": interrupted,
        "client_saturated": health["client_saturated"],
        "peak_in_flight": health["peak_in_flight"],
        "client_health": health,
        "config": options.to_dict(),
    }
    return result


def summary_text(result: dict[str, Any]) -> str:
    """vLLM's printed summary block, plus errors and client health."""
    lines = [f"{' Serving Benchmark Result ':=^50}"]

    def row(label: str, value: Any) -> None:
        text = f"{value:<10.2f}" if isinstance(value, float) else f"{value!s:<10}"
        lines.append(f"{label:<40} {text}")

    row("Successful requests:", result["completed"])
    row("Failed requests:", result["failed"])
    if result["max_concurrency"] is not None:
        row("Maximum request concurrency:", result["max_concurrency"])
    if result["request_rate"] != "inf":
        row("Request rate configured (RPS):", float(result["request_rate"]))
    row("Benchmark duration (s):", float(result["duration"]))
    row("Total input tokens:", result["total_input_tokens"])
    row("Total generated tokens:", result["total_output_tokens"])
    row("Request throughput (req/s):", float(result["request_throughput"]))
    if result["request_goodput"] is not None:
        row("Request goodput (req/s):", float(result["request_goodput"]))
    row("Output token throughput (tok/s):", float(result["output_throughput"]))
    row("Peak output token throughput (tok/s):", float(result["max_output_tokens_per_s"]))
    row("Peak concurrent requests:", result["max_concurrent_requests"])
    row("Total Token throughput (tok/s):", float(result["total_token_throughput"]))
    titles = {
        "ttft": ("Time to First Token", "TTFT"),
        "tpot": ("Time per Output Token (excl. 1st token)", "TPOT"),
        "itl": ("Inter-token Latency", "ITL"),
        "e2el": ("End-to-end Latency", "E2EL"),
    }
    for metric in METRICS:
        header, short = titles[metric]
        lines.append(f"{header:-^50}")
        row(f"Mean {short} (ms):", float(result[f"mean_{metric}_ms"]))
        row(f"Median {short} (ms):", float(result[f"median_{metric}_ms"]))
        for p in result["percentiles"]:
            word = percentile_key(p)
            row(f"P{word} {short} (ms):", float(result[f"p{word}_{metric}_ms"]))
    lines.append(f"{'Client':-^50}")
    health = result["client_health"]
    row("Output tokens from:", result["output_tokens_source"])
    row("Peak in flight:", result["peak_in_flight"])
    row("Schedule lag p50/p99/max (ms):", _triple(health, "schedule_lag"))
    if health["achieved_request_rate"] is not None:
        row("Achieved send rate (req/s):", float(health["achieved_request_rate"]))
    for worker in health["workers"]:
        row(
            f"Worker {worker['worker']} CPU % / loop lag p99 (ms):",
            f"{worker['cpu_percent']:.0f} / {worker['loop_lag_p99_ms']:.1f}",
        )
    verdict = (
        "yes: " + "; ".join(health["saturation_reasons"]) if result["client_saturated"] else "no"
    )
    row("Client saturated:", verdict)
    if result["errors_by_class"]:
        lines.append(f"{'Errors':-^50}")
        for kind, count in sorted(result["errors_by_class"].items()):
            sample = result["error_samples"].get(kind, "")
            lines.append(f"{kind + ':':<40} {count:<10} {sample[:80]}")
    if result["interrupted"]:
        lines.append("(interrupted: partial results)")
    lines.append("=" * 50)
    return "\n".join(lines)


def write_result(path: str, result: dict[str, Any]) -> None:
    _write(path, orjson.dumps(result, option=orjson.OPT_INDENT_2))


def write_requests(path: str, records: RequestRecords, warmup: int) -> None:
    """One JSON line per request, in send order: timings in ms, tokens, error class."""
    rows = sorted(range(len(records)), key=lambda row: records.sent_s[row])
    itls = records.itls_of()
    lines = []
    for row in rows:
        error = records.errors[row]
        ttft = records.ttft_s[row]
        lines.append(
            orjson.dumps(
                {
                    "index": records.index[row],
                    "warmup": records.index[row] < warmup,
                    "intended_s": records.intended_s[row],
                    "sent_s": records.sent_s[row],
                    "end_s": records.end_s[row],
                    "ttft_ms": None if math.isnan(ttft) else ttft * 1000,
                    "e2el_ms": (records.end_s[row] - records.sent_s[row]) * 1000,
                    "input_tokens": records.input_tokens[row],
                    "output_tokens": records.output_tokens[row],
                    "itl_ms": [gap * 1000 for gap in itls[row]],
                    "error": error or None,
                }
            )
        )
    _write(path, b"\n".join(lines) + b"\n" if lines else b"")


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror}") from None


def _duration(measured: RequestRecords, options: BenchOptions) -> float:
    """From the run's start (or the first measured send after a warm-up) to the last end."""
    if not len(measured):
        return 0.0
    start = 0.0 if options.warmup == 0 else min(measured.sent_s)
    return max(measured.end_s) - start


def _achieved_rate(records: RequestRecords) -> float | None:
    """Sends per second from t0 to the last send (the schedule's own rate is n / last offset)."""
    last = max(records.sent_s, default=0.0)
    return len(records) / last if last > 0 else None


def _triple(health: dict[str, Any], name: str) -> str:
    p50, p99, top = (health[f"{name}_{stat}_ms"] for stat in ("p50", "p99", "max"))
    return f"{p50:.1f} / {p99:.1f} / {top:.1f}"


def _token_source(from_usage: list[int]) -> str:
    if not from_usage:
        return "none"
    if all(from_usage):
        return "usage"
    if not any(from_usage):
        return "chunks"
    return "mixed"
