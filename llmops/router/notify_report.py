"""The periodic traffic report: requests and errors per backend since the last report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llmops.router.pool import BackendState


@dataclass(frozen=True, slots=True)
class TrafficRow:
    model: str
    backend: str
    state: str
    requests: int  # since the last report
    errors: int  # since the last report
    in_flight: int  # now

    def as_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "backend": self.backend,
            "state": self.state,
            "requests": self.requests,
            "errors": self.errors,
            "in_flight": self.in_flight,
        }


@dataclass(frozen=True, slots=True)
class ModelTraffic:
    model: str
    backends: int
    healthy: int
    requests: int
    errors: int
    in_flight: int

    def as_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "backends": self.backends,
            "healthy": self.healthy,
            "requests": self.requests,
            "errors": self.errors,
            "in_flight": self.in_flight,
        }


@dataclass(frozen=True, slots=True)
class TrafficReport:
    since: float  # unix time of the previous report (or of the start)
    until: float  # unix time of this one
    rows: tuple[TrafficRow, ...]  # sorted by model, then backend

    @property
    def at(self) -> float:
        return self.until

    @property
    def period_s(self) -> float:
        return max(self.until - self.since, 1e-9)

    @property
    def models(self) -> list[ModelTraffic]:
        by_model: dict[str, list[TrafficRow]] = {}
        for row in self.rows:
            by_model.setdefault(row.model, []).append(row)
        return [
            ModelTraffic(
                model,
                len(rows),
                sum(1 for r in rows if r.state == "healthy"),
                sum(r.requests for r in rows),
                sum(r.errors for r in rows),
                sum(r.in_flight for r in rows),
            )
            for model, rows in by_model.items()
        ]

    @property
    def message(self) -> str:
        requests = sum(r.requests for r in self.rows)
        errors = sum(r.errors for r in self.rows)
        in_flight = sum(r.in_flight for r in self.rows)
        healthy = sum(1 for r in self.rows if r.state == "healthy")
        return (
            f"{traffic_summary(requests, errors, in_flight, self.period_s)}; "
            f"{healthy}/{len(self.rows)} backends healthy"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.until,
            "kind": "report",
            "level": "info",
            "backend": None,
            "message": self.message,
            "since": self.since,
            "period_s": self.until - self.since,
            "models": [m.as_json() for m in self.models],
            "backends": [r.as_json() for r in self.rows],
        }


def traffic_summary(requests: int, errors: int, in_flight: int, period_s: float) -> str:
    """``5 requests (1.67/s), 1 error (20.0%), 2 in flight``; no rates without requests."""
    if not requests:  # errors can come from health checks alone: no share to speak of
        return f"0 requests, {counted(errors, 'error')}, {in_flight} in flight"
    return (
        f"{counted(requests, 'request')} ({requests / period_s:.2f}/s), "
        f"{counted(errors, 'error')} ({100 * errors / requests:.1f}%), {in_flight} in flight"
    )


def counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class TrafficCounter:
    """Turns the backends' running totals into counts per report period."""

    def __init__(self, states: Iterable[BackendState], now: float) -> None:
        self._since = now
        self._seen = self._totals(states)

    def report(self, states: Iterable[BackendState], now: float) -> TrafficReport:
        """Traffic since the previous call (or creation); ``now`` is unix time."""
        states = list(states)
        rows = []
        for state in states:
            before = self._seen.get(state.id)
            # A backend replaced on reload (new settings) starts its counters from zero.
            base_requests, base_errors = (
                (before[1], before[2]) if before is not None and before[0] is state else (0, 0)
            )
            rows.append(
                TrafficRow(
                    state.backend.model,
                    state.id,
                    state.state,
                    state.requests - base_requests,
                    state.errors - base_errors,
                    state.in_flight,
                )
            )
        report = TrafficReport(
            self._since, now, tuple(sorted(rows, key=lambda r: (r.model, r.backend)))
        )
        self._since = now
        self._seen = self._totals(states)
        return report

    @staticmethod
    def _totals(states: Iterable[BackendState]) -> dict[str, tuple[BackendState, int, int]]:
        return {s.id: (s, s.requests, s.errors) for s in states}
