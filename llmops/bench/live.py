"""The live view: merges worker snapshots into run-wide figures; rich or one-line rendering."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from rich.table import Table

from llmops.bench.histogram import LogHistogram, merged
from llmops.bench.worker import Snapshot

#: The sliding window of the live percentiles and rates, in snapshot intervals (0.5 s each).
WINDOW_INTERVALS = 10


@dataclass(slots=True)
class LiveState:
    """Latest cumulative counters per worker plus a sliding window of interval sketches."""

    planned: int | None
    latest: dict[int, Snapshot] = field(default_factory=dict)
    #: Per worker: its last snapshots, oldest first (each worker reports on its own clock).
    recent: dict[int, deque[Snapshot]] = field(default_factory=dict)
    peak_in_flight: int = 0

    def add(self, snapshot: Snapshot) -> None:
        self.latest[snapshot.worker_id] = snapshot
        window = self.recent.setdefault(snapshot.worker_id, deque(maxlen=WINDOW_INTERVALS + 1))
        window.append(snapshot)
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self.latest.values())

    @property
    def completed(self) -> int:
        return sum(s.completed for s in self.latest.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.latest.values())

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.latest.values())

    @property
    def output_tokens(self) -> int:
        return sum(s.output_tokens for s in self.latest.values())

    def errors(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for snapshot in self.latest.values():
            for kind, count in snapshot.errors.items():
                total[kind] = total.get(kind, 0) + count
        return total

    def rates(self) -> tuple[float, float]:
        """Completed requests/s and output tokens/s over the sliding window, all workers."""
        requests_s = tokens_s = 0.0
        for window in self.recent.values():
            first, last = window[0], window[-1]
            span = last.at_s - first.at_s
            if span > 0:
                requests_s += (last.completed - first.completed) / span
                tokens_s += (last.output_tokens - first.output_tokens) / span
        return requests_s, tokens_s

    def sliding(self) -> tuple[LogHistogram, LogHistogram]:
        """TTFT and ITL sketches of the window (each snapshot holds its own interval)."""
        snapshots = [s for window in self.recent.values() for s in window]
        return merged(s.ttft_ms for s in snapshots), merged(s.itl_ms for s in snapshots)

    def health_line(self) -> str:
        parts = []
        for worker_id in sorted(self.latest):
            s = self.latest[worker_id]
            parts.append(
                f"w{worker_id} cpu {s.cpu_percent:.0f}% loop-lag {s.loop_lag_ms_max:.0f}ms "
                f"sched-lag {s.schedule_lag_ms_max:.0f}ms"
            )
        return "  ".join(parts)

    def plain_line(self) -> str:
        """One log line: progress, rates, sliding percentiles, errors, client health."""
        ttft, itl = self.sliding()
        req_s, tok_s = self.rates()
        at = max((s.at_s for s in self.latest.values()), default=0.0)
        planned = f"/{self.planned}" if self.planned else ""
        errors = ",".join(f"{k}={v}" for k, v in sorted(self.errors().items())) or "0"
        return (
            f"[{at:6.1f}s] sent {self.sent}{planned} done {self.completed} "
            f"in-flight {self.in_flight} "
            f"errors {errors} | {req_s:.1f} req/s {tok_s:.0f} tok/s | "
            f"ttft p50 {ttft.percentile(50):.1f} p99 {ttft.percentile(99):.1f} ms "
            f"itl p50 {itl.percentile(50):.1f} p99 {itl.percentile(99):.1f} ms | "
            f"{self.health_line()}"
        )

    def table(self) -> Table:
        """The rich table the live view redraws."""
        ttft, itl = self.sliding()
        req_s, tok_s = self.rates()
        table = Table(title="llmops bench", show_header=False, expand=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        planned = f" / {self.planned}" if self.planned else ""
        table.add_row("sent", f"{self.sent}{planned}")
        table.add_row("completed", str(self.completed))
        table.add_row("in flight (peak)", f"{self.in_flight} ({self.peak_in_flight})")
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors().items()))
        table.add_row("errors", errors or "0", style="red" if errors else None)
        table.add_row("throughput", f"{req_s:.1f} req/s  {tok_s:.0f} tok/s")
        table.add_row("TTFT p50 / p99", f"{ttft.percentile(50):.1f} / {ttft.percentile(99):.1f} ms")
        table.add_row("ITL p50 / p99", f"{itl.percentile(50):.1f} / {itl.percentile(99):.1f} ms")
        for worker_id in sorted(self.latest):
            s = self.latest[worker_id]
            busy = s.cpu_percent >= 90 or s.loop_lag_ms_max > 50
            table.add_row(
                f"worker {worker_id}",
                f"cpu {s.cpu_percent:.0f}%  loop lag {s.loop_lag_ms_max:.1f} ms  "
                f"schedule lag {s.schedule_lag_ms_max:.1f} ms",
                style="yellow" if busy else None,
            )
        return table
