"""Ring buffers of what the dashboard has seen, and the rates derived from counter deltas.

``/status`` gives counters (requests, errors) per backend and a router-computed req/s only for
the totals, so per-backend req/s is derived here from two consecutive snapshots. A counter
that goes down means the router restarted: that sample has no rate instead of a negative one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from llmops.tui.snapshot import BackendStatus, StatusSnapshot

HISTORY_SAMPLES = 600  # ten minutes at the default 1 s interval
ERRORS_KEPT = 20
# Per-backend req/s spans a few polls: counts of whole requests over one second are too jumpy.
RATE_WINDOW_S = 5.0


def rate_per_s(before: int | None, after: int | None, elapsed_s: float) -> float | None:
    """Events per second between two readings of a counter, or None when it cannot be known."""
    if before is None or after is None or elapsed_s <= 0 or after < before:
        return None
    return (after - before) / elapsed_s


@dataclass
class BackendHistory:
    """One backend's recent samples; None marks a poll where the value was unknown."""

    rps: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))
    ttft_p50_ms: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY_SAMPLES))
    # (first seen, message) each time last_error changed to a new non-empty value.
    errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=ERRORS_KEPT))
    # (received at, requests counter) of the polls inside the rate window.
    counts: deque[tuple[float, int]] = field(default_factory=deque)

    def windowed_rps(self, now: float, requests: int | None) -> float | None:
        """Requests/s from the oldest reading at most RATE_WINDOW_S old to this one."""
        if requests is None:
            self.counts.clear()
            return None
        if self.counts and requests < self.counts[-1][1]:
            self.counts.clear()  # the counter went back: the router restarted
        self.counts.append((now, requests))
        while len(self.counts) > 2 and now - self.counts[1][0] >= RATE_WINDOW_S:
            self.counts.popleft()
        then, before = self.counts[0]
        return rate_per_s(before, requests, now - then)

    @property
    def last_rps(self) -> float | None:
        return self.rps[-1] if self.rps else None


@dataclass
class FleetHistory:
    """Everything the dashboard remembers between polls; fed one snapshot at a time."""

    samples: int = HISTORY_SAMPLES
    total_rps: deque[float | None] = field(default_factory=deque)
    total_ttft_p50_ms: deque[float | None] = field(default_factory=deque)
    error_rate_per_s: float | None = None
    backends: dict[str, BackendHistory] = field(default_factory=dict)
    latest: StatusSnapshot | None = None

    def __post_init__(self) -> None:
        self.total_rps = deque(maxlen=self.samples)
        self.total_ttft_p50_ms = deque(maxlen=self.samples)

    def record(self, snapshot: StatusSnapshot) -> None:
        """Append one poll's values to every ring buffer and derive the rates."""
        previous = self.latest if not _restarted(self.latest, snapshot) else None
        elapsed_s = snapshot.received_at - previous.received_at if previous else 0.0
        derived_rps = rate_per_s(
            previous.totals.requests if previous else None, snapshot.totals.requests, elapsed_s
        )
        self.total_rps.append(
            snapshot.totals.rps if snapshot.totals.rps is not None else derived_rps
        )
        self.total_ttft_p50_ms.append(snapshot.totals.ttft_ms.p50)
        self.error_rate_per_s = rate_per_s(
            previous.totals.errors if previous else None, snapshot.totals.errors, elapsed_s
        )
        for backend in snapshot.backends:
            self._record_backend(backend, previous, snapshot.received_at)
        # Backends removed by a reload take their history with them.
        current = {b.id for b in snapshot.backends}
        for gone in self.backends.keys() - current:
            del self.backends[gone]
        self.latest = snapshot

    def record_gap(self) -> None:
        """A failed poll: a blank column in every sparkline, so outages show as gaps."""
        self.total_rps.append(None)
        self.total_ttft_p50_ms.append(None)
        for history in self.backends.values():
            history.rps.append(None)
            history.ttft_p50_ms.append(None)

    def backend_rps(self, backend_id: str) -> float | None:
        history = self.backends.get(backend_id)
        return history.last_rps if history else None

    def _record_backend(
        self, backend: BackendStatus, previous: StatusSnapshot | None, now: float
    ) -> None:
        history = self.backends.setdefault(backend.id, _new_backend_history(self.samples))
        if previous is None:
            history.counts.clear()  # first poll, or the router restarted
        history.rps.append(history.windowed_rps(now, backend.requests))
        history.ttft_p50_ms.append(backend.ttft_ms.p50)
        if backend.last_error and (
            not history.errors or history.errors[-1][1] != backend.last_error
        ):
            history.errors.append((now, backend.last_error))


def _new_backend_history(samples: int) -> BackendHistory:
    return BackendHistory(
        rps=deque(maxlen=samples),
        ttft_p50_ms=deque(maxlen=samples),
        errors=deque(maxlen=ERRORS_KEPT),
    )


def _restarted(previous: StatusSnapshot | None, current: StatusSnapshot) -> bool:
    if previous is None:
        return False
    before, after = previous.router.uptime_s, current.router.uptime_s
    return before is not None and after is not None and after < before
