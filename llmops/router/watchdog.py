"""One timer for every open stream: ends streams that go idle or outlive the total timeout.

A per-chunk timer would cost a timer handle per relayed chunk; instead each stream stores
when its last byte came (one float per chunk) and a single task sweeps them all.
"""

from __future__ import annotations

import asyncio
from typing import Literal, Protocol

Expiry = Literal["idle", "total"]


class Closable(Protocol):
    def close(self) -> None: ...


class WatchedStream:
    __slots__ = ("deadline", "expired", "last_byte_at", "upstream")

    def __init__(self, upstream: Closable, now: float, total_s: float | None) -> None:
        self.upstream = upstream
        self.last_byte_at = now
        self.deadline = now + total_s if total_s is not None else None
        self.expired: Expiry | None = None


class StreamWatchdog:
    def __init__(self) -> None:
        self._streams: set[WatchedStream] = set()
        self.idle_s: float | None = None

    def watch(self, upstream: Closable, total_s: float | None) -> WatchedStream:
        stream = WatchedStream(upstream, asyncio.get_running_loop().time(), total_s)
        self._streams.add(stream)
        return stream

    def forget(self, stream: WatchedStream) -> None:
        self._streams.discard(stream)

    def sweep(self, now: float) -> int:
        """Close the upstream of every expired stream; returns how many were closed."""
        expired = 0
        idle_s = self.idle_s
        for stream in list(self._streams):
            if stream.deadline is not None and now >= stream.deadline:
                stream.expired = "total"
            elif idle_s is not None and now - stream.last_byte_at >= idle_s:
                stream.expired = "idle"
            else:
                continue
            self._streams.discard(stream)
            stream.upstream.close()  # the relay's pending read fails at once
            expired += 1
        return expired

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # A tenth of the idle timeout keeps detection close to it without a busy sweep.
            await asyncio.sleep(min(1.0, max(0.05, (self.idle_s or 10.0) / 10)))
            self.sweep(loop.time())
