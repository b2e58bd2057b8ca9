"""What happened to the fleet (health, ejections, reloads), kept for /status and webhooks."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from llmops.config.router import EventKind

log = logging.getLogger("llmops.router")

EventLevel = Literal["info", "warning", "error"]
_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dataclass(frozen=True, slots=True)
class Event:
    at: float  # unix time
    kind: EventKind
    level: EventLevel
    backend: str | None
    message: str

    def as_json(self) -> dict[str, object]:
        return {
            "at": self.at,
            "kind": self.kind,
            "level": self.level,
            "backend": self.backend,
            "message": self.message,
        }


class EventLog:
    """The most recent events, newest last; each is logged once and passed to listeners."""

    def __init__(self, capacity: int = 200) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._listeners: list[Callable[[Event], None]] = []

    def record(
        self, kind: EventKind, level: EventLevel, message: str, backend: str | None = None
    ) -> Event:
        event = Event(time.time(), kind, level, backend, message)
        self._events.append(event)
        log.log(_LOG_LEVELS[level], "%s", message)
        for listener in self._listeners:
            listener(event)
        return event

    def listen(self, listener: Callable[[Event], None]) -> None:
        self._listeners.append(listener)

    def recent(self, limit: int = 50) -> list[Event]:
        return list(self._events)[-limit:]
