"""Cool-down for webhook events: repeats are held back and summarized, never dropped.

The first event of each (backend, kind) goes out at once; repeats of it within
``min_interval`` seconds are held. When the cool-down of any held kind ends, everything held
for that backend goes out as one ``Repeats`` summary whose latest event says where the
backend is now (so does it when an event of a new kind goes out for that backend, so that
one message tells the whole story). A flapping backend thus costs one message per cool-down,
not one per flap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llmops.router.events import Event

_Key = tuple[str | None, str]  # (backend, kind)


@dataclass(frozen=True, slots=True)
class Repeats:
    """Events of one backend (or of the router, ``backend=None``) held by the cool-down."""

    backend: str | None
    counts: tuple[tuple[str, int], ...]  # (kind, how many), in the order first held
    first_at: float  # unix time of the oldest held event
    latest: Event  # the newest held event: where the backend is now
    until: float  # unix time the summary was made

    @property
    def at(self) -> float:
        return self.latest.at

    @property
    def total(self) -> int:
        return sum(count for _kind, count in self.counts)

    @property
    def message(self) -> str:
        subject = f"backend {self.backend}" if self.backend is not None else "router"
        counts = ", ".join(
            f"{kind} {count} more time{'s' * (count != 1)}" for kind, count in self.counts
        )
        span = format_duration(self.until - self.first_at)
        return f"{subject}: {counts} in the last {span}; latest: {self.latest.message}"

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "kind": "repeated",
            "level": self.latest.level,
            "backend": self.backend,
            "message": self.message,
            "counts": dict(self.counts),
            "since": self.first_at,
            "latest": self.latest.as_json(),
        }


class CoolDown:
    """One webhook's cool-down state; ``now`` is a monotonic time in seconds."""

    def __init__(self, min_interval_s: float, wall_clock: Callable[[], float] = time.time) -> None:
        self.min_interval_s = min_interval_s
        self._wall_clock = wall_clock
        self._last_sent: dict[_Key, float] = {}
        self._held: dict[str | None, list[Event]] = {}

    def sift(self, events: Sequence[Event], now: float) -> tuple[list[Event], list[Repeats]]:
        """The events to send now and the summaries that are due (including older holds)."""
        sent: list[Event] = []
        flush: set[str | None] = set()
        for event in events:
            key = (event.backend, event.kind)
            if self._cooled(key, now):
                sent.append(event)
                self._last_sent[key] = now
                flush.add(event.backend)  # what was held for it goes out in the same message
            else:
                self._held.setdefault(event.backend, []).append(event)
        flush.update(
            backend
            for backend, held in self._held.items()
            if any(self._cooled((e.backend, e.kind), now) for e in held)
        )
        repeats = [self._release(backend, now) for backend in flush if backend in self._held]
        self._forget_idle(now)
        return sent, repeats

    def release_all(self) -> list[Repeats]:
        """Every held summary now, due or not (the router is stopping)."""
        return [self._release(backend, math.inf) for backend in list(self._held)]

    def next_due(self) -> float | None:
        """When the earliest held summary becomes due (monotonic), or None if nothing is held."""
        due = [
            self._last_sent.get((e.backend, e.kind), 0.0) + self.min_interval_s
            for held in self._held.values()
            for e in held
        ]
        return min(due, default=None)

    def _cooled(self, key: _Key, now: float) -> bool:
        last = self._last_sent.get(key)
        return last is None or now >= last + self.min_interval_s  # the same sum as next_due

    def _release(self, backend: str | None, now: float) -> Repeats:
        held = self._held.pop(backend)
        counts: dict[str, int] = {}
        for event in held:
            counts[event.kind] = counts.get(event.kind, 0) + 1
            # A summary restarts the cool-down: a backend that keeps flapping gets one per interval.
            self._last_sent[(backend, event.kind)] = now
        return Repeats(backend, tuple(counts.items()), held[0].at, held[-1], self._wall_clock())

    def _forget_idle(self, now: float) -> None:
        idle = [
            key
            for key, last in self._last_sent.items()
            if now >= last + self.min_interval_s and key[0] not in self._held
        ]
        for key in idle:
            del self._last_sent[key]


def format_duration(seconds: float) -> str:
    """A short human duration: ``45 s``, ``3 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
