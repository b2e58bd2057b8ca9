"""Whether the data on screen is fresh, and how long to wait before the next poll.

Polls are re-armed one at a time after each answer; while the router is unreachable the
delay doubles up to a cap so a dead router is not hammered, and the first good answer
brings the delay straight back to the normal interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmops.tui.text import clock

BACKOFF_CAP_S = 10.0


def next_delay_s(interval_s: float, failures: int, cap_s: float = BACKOFF_CAP_S) -> float:
    """The normal interval after a success; interval * 2**failures (capped) after failures.

    The cap never shortens an interval the user asked to be longer than it.
    """
    if failures <= 0:
        return interval_s
    backoff_s = interval_s * 2.0 ** min(failures, 30)
    return max(interval_s, min(cap_s, backoff_s))


@dataclass
class PollHealth:
    """Outcome of the recent polls: feeds the header's live/stale indicator and the back-off."""

    interval_s: float
    failures: int = 0
    failing_since: float | None = None  # Unix time of the first failure in the current run
    last_error: str | None = None
    last_ok_at: float | None = None

    def succeeded(self, at: float) -> None:
        self.failures = 0
        self.failing_since = None
        self.last_error = None
        self.last_ok_at = at

    def failed(self, at: float, reason: str) -> None:
        if self.failures == 0:
            self.failing_since = at
        self.failures += 1
        self.last_error = reason

    @property
    def stale(self) -> bool:
        return self.failures > 0

    def next_delay_s(self) -> float:
        return next_delay_s(self.interval_s, self.failures)

    def describe(self) -> str:
        """``STALE since HH:MM:SS: reason`` while failing, else empty."""
        if not self.stale or self.failing_since is None:
            return ""
        return f"STALE since {clock(self.failing_since)}: {self.last_error}"
