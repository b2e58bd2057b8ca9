"""``llmops bench compare A.json B.json``: every shared metric side by side, with the change.

Works on any result file with vLLM's keys (ours or ``vllm bench serve --save-result``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from llmops.errors import BenchError

#: Shown first, in this order, when present; other numeric keys follow alphabetically.
LEADING_KEYS = (
    "completed",
    "failed",
    "duration",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "total_input_tokens",
    "total_output_tokens",
    "max_output_tokens_per_s",
    "max_concurrent_requests",
    "peak_in_flight",
)
#: Run settings, not measurements: never compared.
_SKIPPED = {"burstiness", "max_concurrency", "request_rate", "num_prompts", "percentiles"}


def load_result(path: str) -> dict[str, Any]:
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError:
        raise BenchError(f"{path}: not a JSON result file") from None
    if not isinstance(data, dict) or "completed" not in data:
        raise BenchError(f"{path}: not a bench result (no 'completed' key)")
    return data


def compare_rows(
    a: dict[str, Any], b: dict[str, Any]
) -> list[tuple[str, float, float, float | None]]:
    """(key, a, b, relative change or None) for every numeric metric both results have."""
    shared = [k for k in a if k in b and _number(a[k]) and _number(b[k]) and k not in _SKIPPED]
    ordered = [k for k in LEADING_KEYS if k in shared]
    ordered += sorted(k for k in shared if k not in LEADING_KEYS)
    rows = []
    for key in ordered:
        before, after = float(a[key]), float(b[key])
        change = (after - before) / before if before else None
        rows.append((key, before, after, change))
    return rows


def compare_text(path_a: str, path_b: str) -> str:
    a, b = load_result(path_a), load_result(path_b)
    rows = compare_rows(a, b)
    width = max((len(key) for key, *_ in rows), default=10)
    name_a, name_b = Path(path_a).name, Path(path_b).name
    lines = [f"{'metric':<{width}}  {name_a:>14}  {name_b:>14}  {'change':>8}"]
    for key, before, after, change in rows:
        change_text = "n/a" if change is None else f"{change:+.1%}"
        lines.append(f"{key:<{width}}  {_fmt(before):>14}  {_fmt(after):>14}  {change_text:>8}")
    saturated = [name for name, data in ((name_a, a), (name_b, b)) if data.get("client_saturated")]
    if saturated:
        lines.append(
            f"note: client saturated in {', '.join(saturated)}: its latencies include client delay"
        )
    return "\n".join(lines)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: float) -> str:
    return f"{int(value)}" if value == int(value) and abs(value) < 1e15 else f"{value:.2f}"
