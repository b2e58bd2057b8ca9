"""Webhooks: fleet events and a periodic traffic report, batched, cooled down, never blocking.

``EventLog.record`` runs on the request path, so the listener only puts the event on a
bounded queue (a full queue counts what it drops, and the next message says so). One task,
started with the app, collects events for ``batch_window`` seconds, sifts them through each
webhook's cool-down, renders each webhook's format and posts it with its own session and a
short timeout. A failing webhook is logged once per failure streak, naming only the scheme
and host of its URL: webhook URLs often carry tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from urllib.parse import urlsplit

import aiohttp

from llmops.config.router import WebhookConfig
from llmops.router.events import Event
from llmops.router.notify_cooldown import CoolDown
from llmops.router.notify_formats import Digest, delivery_problem, render_delivery
from llmops.router.notify_report import TrafficCounter, TrafficReport
from llmops.router.state import RouterState

log = logging.getLogger("llmops.router.notify")

FINAL_FLUSH_S = 2.0  # how long a stopping router waits for its last deliveries
RETRY_DELAY_S = 1.0  # one retry per delivery, after this or the receiver's Retry-After
MAX_RETRY_DELAY_S = 5.0
_ANSWER_BYTES = 64 * 1024  # enough of a receiver's answer to find an error code


def redact_url(url: str) -> str:
    """What people may see of a webhook URL: scheme and host, no user, path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class _Webhook:
    """One configured webhook and its delivery state (kept while its config is unchanged)."""

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.kinds = frozenset(config.events)
        self.cooldown = CoolDown(config.min_interval)
        self.target = redact_url(config.url)
        self.failure_streak = 0


class Notifier:
    """Delivers the router's events to the configured webhooks; ``run`` until cancelled."""

    def __init__(self, router: RouterState) -> None:
        self._router = router
        self._queue: asyncio.Queue[Event] = asyncio.Queue(router.config.notify.queue_size)
        self._dropped = 0
        self._closed = False
        self._first: list[Event] = []  # the event that opened the batch being collected
        self._webhooks: list[_Webhook] = []
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
                            await self._dispatch(session, self._take_batch())
                        except Exception:  # a bug here must not end webhooks for good
                            log.exception("webhooks: a batch could not be delivered")
                except asyncio.CancelledError:
                    # The router is stopping: what is queued or held still goes out, briefly.
                    self._closed = True
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(FINAL_FLUSH_S):
                            await self._dispatch(session, self._take_batch(), final=True)
                    raise
        finally:
            self._closed = True

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
        due = [hook.cooldown.next_due() for hook in self._webhooks]
        due.append(self._next_report)
        return min((d for d in due if d is not None), default=None)

    async def _dispatch(
        self, session: aiohttp.ClientSession, batch: list[Event], final: bool = False
    ) -> None:
        now = time.monotonic()
        report = self._report_due(now)
        dropped, self._dropped = self._dropped, 0
        deliveries = []
        for hook in self._sync_webhooks():
            events = [event for event in batch if event.kind in hook.kinds]
            sent, repeats = hook.cooldown.sift(events, now)
            if final:
                repeats += hook.cooldown.release_all()
            digest = Digest(
                tuple(sent),
                tuple(repeats),
                report if "report" in hook.kinds else None,
                dropped,
            )
            if digest:
                deliveries.append(self._deliver(session, hook, digest))
        await asyncio.gather(*deliveries)

    def _sync_webhooks(self) -> list[_Webhook]:
        """The webhooks of the live config; unchanged ones keep their cool-downs on reload."""
        previous = list(self._webhooks)
        current = []
        for config in self._router.config.notify.webhooks:
            kept = next((hook for hook in previous if hook.config == config), None)
            if kept is not None:
                previous.remove(kept)
            current.append(kept if kept is not None else _Webhook(config))
        self._webhooks = current
        return current

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

    async def _deliver(
        self, session: aiohttp.ClientSession, hook: _Webhook, digest: Digest
    ) -> None:
        config = hook.config
        body, headers = render_delivery(config.format, digest, self._host, config.secret)
        headers.update(config.headers)
        problem, retry_after = await self._post(session, hook, body, headers)
        if problem is not None and retry_after is not None:
            await asyncio.sleep(retry_after)
            problem, _ = await self._post(session, hook, body, headers)
        if problem is None:
            if hook.failure_streak:
                log.info(
                    "webhook %s: delivered again after %d failed deliveries",
                    hook.target,
                    hook.failure_streak,
                )
            hook.failure_streak = 0
            return
        hook.failure_streak += 1
        if hook.failure_streak == 1:
            log.warning(
                "webhook %s: delivery failed (%s); further failures are not logged "
                "until a delivery succeeds",
                hook.target,
                problem,
            )

    async def _post(
        self, session: aiohttp.ClientSession, hook: _Webhook, body: bytes, headers: dict[str, str]
    ) -> tuple[str | None, float | None]:
        """One POST: the problem (None if delivered) and, if worth a retry, the delay."""
        timeout_s = self._router.config.notify.timeout
        try:
            async with session.post(
                hook.config.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as response:
                answer = await _read_up_to(response, _ANSWER_BYTES)
                problem = delivery_problem(hook.config.format, response.status, answer)
                if problem is None or not (response.status == 429 or response.status >= 500):
                    return problem, None
                return problem, _retry_delay(response.headers.get("Retry-After"))
        except TimeoutError:
            return f"no answer within {timeout_s:g}s", RETRY_DELAY_S
        except aiohttp.ClientError as exc:
            return _scrub(f"{type(exc).__name__}: {exc}", hook.config.url), RETRY_DELAY_S
        except ValueError as exc:  # a header aiohttp refuses to send: retrying cannot help
            return _scrub(f"{type(exc).__name__}: {exc}", hook.config.url), None


async def _read_up_to(response: aiohttp.ClientResponse, limit_bytes: int) -> bytes:
    """The answer's first ``limit_bytes`` (a read returns one chunk; a JSON answer may be two)."""
    answer = b""
    while len(answer) < limit_bytes:
        chunk = await response.content.read(limit_bytes - len(answer))
        if not chunk:
            break
        answer += chunk
    return answer


def _retry_delay(retry_after: str | None) -> float:
    try:
        wanted = float(retry_after) if retry_after is not None else RETRY_DELAY_S
    except ValueError:
        wanted = RETRY_DELAY_S  # an HTTP date: not worth parsing for one retry
    return min(max(wanted, 0.0), MAX_RETRY_DELAY_S)


def _scrub(text: str, url: str) -> str:
    """``text`` without the parts of ``url`` that may hold a token (some errors quote it)."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.username, parts.password):
        if secret and secret != "/":
            text = text.replace(secret, "***")
    return text


async def run_notifier(router: RouterState) -> None:
    """Deliver ``router``'s events to its webhooks until cancelled."""
    await Notifier(router).run()
