"""One timer for every upstream request: time to first byte, idle gaps and total time.

A timer per request (or per relayed chunk) costs a timer handle each time; instead each
request stores when its last byte came (one float per chunk) and a single task sweeps them
all, closing the upstream connection of any that ran out of time. The pending read then
fails at once and the proxy reports the timeout by the name recorded in ``expired``.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

Expiry = Literal["ttfb", "idle", "total"]


class Closable(Protocol):
    def close(self) -> None: ...


class WatchedRequest:
    __slots__ = ("connection", "deadline", "expired", "first_byte_deadline", "last_byte_at")

    def __init__(
        self, connection: Closable, now: float, ttfb_s: float | None, total_s: float | None
    ) -> None:
        self.connection = connection
        self.last_byte_at: float | None = None  # None until the first byte
        self.first_byte_deadline = now + ttfb_s if ttfb_s is not None else None
        self.deadline = now + total_s if total_s is not None else None
        self.expired: Expiry | None = None


class RequestWatchdog:
    def __init__(self) -> None:
        self._requests: set[WatchedRequest] = set()
        self.ttfb_s: float | None = None
        self.idle_s: float | None = None
        self.total_s: float | None = None

    def configure(self, ttfb_s: float | None, idle_s: float | None, total_s: float | None) -> None:
        self.ttfb_s, self.idle_s, self.total_s = ttfb_s, idle_s, total_s

    def watch(self, connection: Closable) -> WatchedRequest:
        now = asyncio.get_running_loop().time()
        watched = WatchedRequest(connection, now, self.ttfb_s, self.total_s)
        self._requests.add(watched)
        return watched

    def forget(self, watched: WatchedRequest) -> None:
        self._requests.discard(watched)

    def sweep(self, now: float) -> int:
        """Close the upstream of every request out of time; returns how many were closed."""
        expired = 0
        idle_s = self.idle_s
        for watched in list(self._requests):
            if watched.deadline is not None and now >= watched.deadline:
                watched.expired = "total"
            elif watched.last_byte_at is None:
                if watched.first_byte_deadline is None or now < watched.first_byte_deadline:
                    continue
                watched.expired = "ttfb"
            elif idle_s is None or now - watched.last_byte_at < idle_s:
                continue
            else:
                watched.expired = "idle"
            self._requests.discard(watched)
            watched.connection.close()
            expired += 1
        return expired

    @property
    def tick_s(self) -> float:
        """A tenth of the shortest timeout: detection close to it, without a busy sweep."""
        limits = [t for t in (self.ttfb_s, self.idle_s, self.total_s) if t is not None]
        return min(1.0, max(0.02, min(limits, default=10.0) / 10))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.tick_s)
            self.sweep(loop.time())
