"""Webhooks: fleet events and a periodic traffic report, batched, cooled down, never blocking.

``EventLog.record`` runs on the request path, so the listener only puts the event on a
bounded queue (a full queue counts what it drops, and the next message says so). One task,
started with the app, waits ``batch_window`` seconds after an event, sifts the batch through
each webhook's cool-down and hands each webhook its message; every webhook delivers from its
own outbox (``notify_sender``), so a slow receiver delays nobody else. A stopping router
sends what it still holds, for at most ``FINAL_FLUSH_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import aiohttp

from llmops.router.events import Event
from llmops.router.notify_formats import Digest
from llmops.router.notify_report import TrafficCounter, TrafficReport
from llmops.router.notify_sender import WebhookSender
from llmops.router.state import RouterState

log = logging.getLogger("llmops.router.notify")

FINAL_FLUSH_S = 2.0  # how long a stopping router waits for its last deliveries


class Notifier:
    """Delivers the router's events to the configured webhooks; ``run`` until cancelled."""

    def __init__(self, router: RouterState) -> None:
        self._router = router
        self._queue: asyncio.Queue[Event] = asyncio.Queue(router.config.notify.queue_size)
        self._dropped = 0
        self._closed = False
        self._first: list[Event] = []  # the event that opened the batch being collected
        self._senders: list[WebhookSender] = []
        self._host = socket.gethostname()
        self._traffic: TrafficCounter | None = None
        self._next_report: float | None = None  # monotonic

    def on_event(self, event: Event) -> None:
        """The event log's listener: runs on the request path, so it only enqueues."""
        if self._closed or not self._router.config.notify.webhooks:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._dropped += 1

    async def run(self) -> None:
        # Events of the app's start (first health probes) came before this listener did.
        for event in self._router.events.recent(self._queue.maxsize):
            self.on_event(event)
        self._router.events.listen(self.on_event)
        self._report_due(time.monotonic())  # starts the first report period
        try:
            async with aiohttp.ClientSession() as session:
                try:
                    while True:
                        await self._wait_for_batch()
                        try:
                            self._dispatch(session, self._take_batch())
                        except Exception:  # a bug here must not end webhooks for good
                            log.exception("webhooks: a batch could not be dispatched")
                except asyncio.CancelledError:
                    await self._flush(session)
                    raise
        finally:
            self._closed = True
            for sender in self._senders:
                sender.close()

    async def _flush(self, session: aiohttp.ClientSession) -> None:
        """The router is stopping: what is queued, held or unsent still goes out, briefly."""
        self._closed = True
        self._dispatch(session, self._take_batch(), final=True)
        await asyncio.gather(*(sender.stop() for sender in self._senders))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FINAL_FLUSH_S):
                await asyncio.gather(*(sender.flush() for sender in self._senders))

    async def _wait_for_batch(self) -> None:
        """Until ``batch_window`` s after the next event, or until a timer is due."""
        wake_at = self._next_wake()
        wait_s = None if wake_at is None else max(wake_at - time.monotonic(), 0.0)
        try:
            async with asyncio.timeout(wait_s):
                self._first.append(await self._queue.get())
        except TimeoutError:
            return
        await asyncio.sleep(self._router.config.notify.batch_window)  # the rest queue up

    def _take_batch(self) -> list[Event]:
        batch, self._first = self._first, []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    def _next_wake(self) -> float | None:
        """When a summary held by a cool-down or the traffic report is due (monotonic)."""
        due = [sender.cooldown.next_due() for sender in self._senders]
        due.append(self._next_report)
        return min((d for d in due if d is not None), default=None)

    def _dispatch(
        self, session: aiohttp.ClientSession, batch: list[Event], final: bool = False
    ) -> None:
        now = time.monotonic()
        report = self._report_due(now)
        dropped, self._dropped = self._dropped, 0
        for sender in self._sync_senders(session):
            events = [event for event in batch if event.kind in sender.kinds]
            sent, repeats = sender.cooldown.sift(events, now)
            if final:
                repeats += sender.cooldown.release_all()
            digest = Digest(
                tuple(sent),
                tuple(repeats),
                report if "report" in sender.kinds else None,
                dropped,
            )
            if digest:
                sender.post(digest)

    def _sync_senders(self, session: aiohttp.ClientSession) -> list[WebhookSender]:
        """The webhooks of the live config; unchanged ones keep their state on reload."""
        previous = list(self._senders)
        current = []
        for config in self._router.config.notify.webhooks:
            kept = next((sender for sender in previous if sender.config == config), None)
            if kept is not None:
                previous.remove(kept)
            else:
                kept = WebhookSender(config, session, self._host, self._timeout_s)
            current.append(kept)
        for removed in previous:
            removed.close()
        self._senders = current
        return current

    def _timeout_s(self) -> float:
        return self._router.config.notify.timeout

    def _report_due(self, now: float) -> TrafficReport | None:
        interval = self._router.config.notify.report_interval
        if interval is None or not self._router.config.notify.webhooks:
            self._traffic = self._next_report = None
            return None
        states = self._router.snapshot.states
        if self._traffic is None or self._next_report is None:
            self._traffic = TrafficCounter(states, time.time())
            self._next_report = now + interval
            return None
        if now < self._next_report:
            return None
        self._next_report = max(self._next_report + interval, now + interval / 2)
        return self._traffic.report(states, time.time())


async def run_notifier(router: RouterState) -> None:
    """Deliver ``router``'s events to its webhooks until cancelled."""
    await Notifier(router).run()
