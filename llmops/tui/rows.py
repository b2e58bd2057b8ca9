"""What the backends table shows: its columns, the filter, and the sort cycle (no Textual)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from llmops.tui import text
from llmops.tui.history import FleetHistory
from llmops.tui.snapshot import BackendStatus

STATE_COLOURS = {
    "healthy": "green",
    "unhealthy": "red",
    "draining": "yellow",
    "ejected": "magenta",
    "probing": "cyan",
}
# Problems first when sorting by state: what needs attention is at the top.
_STATE_RANK = {"unhealthy": 0, "ejected": 1, "probing": 2, "draining": 3, "healthy": 4}

# What an operator scans first comes first: 80 columns show up to the error count.
COLUMNS = (
    "model",
    "backend",
    "state",
    "infl",
    "req/s",
    "TTFT ms",
    "lat ms",
    "err",
    "run/wait",
    "KV",
    "RPM",
    "last error",
)
LAST_ERROR_WIDTH = 40


@dataclass(frozen=True)
class SortKey:
    name: str
    label: str
    descending: bool


SORT_KEYS = (
    SortKey("model", "model", descending=False),
    SortKey("state", "state", descending=False),
    SortKey("in_flight", "in flight", descending=True),
    SortKey("rps", "req/s", descending=True),
    SortKey("latency", "latency p95", descending=True),
    SortKey("ttft", "TTFT p95", descending=True),
    SortKey("errors", "errors", descending=True),
)


def next_sort(current: SortKey) -> SortKey:
    return SORT_KEYS[(SORT_KEYS.index(current) + 1) % len(SORT_KEYS)]


def matches(backend: BackendStatus, query: str) -> bool:
    """Every whitespace-separated word of ``query`` appears (case-insensitively) in the row."""
    haystack = " ".join(
        part or ""
        for part in (backend.id, backend.model, backend.url, backend.state, backend.last_error)
    ).lower()
    return all(word in haystack for word in query.lower().split())


def visible_backends(
    backends: Iterable[BackendStatus], history: FleetHistory, query: str, sort: SortKey
) -> list[BackendStatus]:
    """Filter by ``query`` and order by ``sort``; unknown values sort last, ties by model/id."""
    chosen = [b for b in backends if matches(b, query)]
    chosen.sort(key=lambda b: (b.model or "", b.id))
    if sort.name == "model":
        return chosen
    number = _sort_value(sort.name, history)
    known = [b for b in chosen if number(b) is not None]
    unknown = [b for b in chosen if number(b) is None]
    known.sort(key=lambda b: number(b) or 0.0, reverse=sort.descending)
    return known + unknown


def _sort_value(name: str, history: FleetHistory) -> Callable[[BackendStatus], float | None]:
    if name == "state":
        return lambda b: float(_STATE_RANK.get(b.state or "", len(_STATE_RANK)))
    if name == "in_flight":
        return lambda b: _maybe_float(b.in_flight)
    if name == "rps":
        return lambda b: history.backend_rps(b.id)
    if name == "latency":
        return lambda b: b.latency_ms.p95
    if name == "ttft":
        return lambda b: b.ttft_ms.p95
    if name == "errors":
        return lambda b: _maybe_float(b.errors)
    raise ValueError(f"unknown sort key {name!r}")


def _maybe_float(value: int | None) -> float | None:
    return None if value is None else float(value)


def backend_cells(backend: BackendStatus, rps: float | None) -> tuple[str, ...]:
    """One table row as text, in COLUMNS order."""
    engine = backend.engine
    return (
        backend.model or text.UNKNOWN,
        text.short_url(backend.url),
        backend.state or text.UNKNOWN,
        text.count(backend.in_flight),
        text.rate(rps),
        text.ms_pair(backend.ttft_ms),
        text.ms_pair(backend.latency_ms),
        text.count(backend.errors),
        f"{text.count(engine.running)}/{text.count(engine.waiting)}",
        text.percent(engine.kv_cache_usage),
        text.used_of(backend.rpm_used, backend.rpm_limit),
        text.one_line(backend.last_error, LAST_ERROR_WIDTH),
    )
