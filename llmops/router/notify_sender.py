"""One webhook's deliveries: an outbox worked by its own task, so a slow receiver delays only
itself. Each message is tried twice at most; a failing webhook is logged once per failure
streak, naming only the scheme and host of its URL (webhook URLs often carry tokens).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from llmops.config.router import WebhookConfig
from llmops.router.notify_cooldown import CoolDown
from llmops.router.notify_formats import Digest, delivery_problem, render_delivery

log = logging.getLogger("llmops.router.notify")

OUTBOX_MESSAGES = 32  # undelivered messages per webhook; the oldest give way (and are counted)
RETRY_DELAY_S = 1.0  # one retry per message, after this or the receiver's Retry-After
MAX_RETRY_DELAY_S = 5.0
_ANSWER_BYTES = 64 * 1024  # enough of a receiver's answer to find an error code


def redact_url(url: str) -> str:
    """What people may see of a webhook URL: scheme and host, no user, path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class WebhookSender:
    """Delivers one webhook's messages in order; its cool-down lives here across reloads."""

    def __init__(
        self,
        config: WebhookConfig,
        session: aiohttp.ClientSession,
        host: str,
        timeout_s: Callable[[], float],
    ) -> None:
        self.config = config
        self.kinds = frozenset(config.events)
        self.cooldown = CoolDown(config.min_interval)
        self.target = redact_url(config.url)
        self.failure_streak = 0
        self._session = session
        self._host = host
        self._timeout_s = timeout_s
        self._outbox: deque[Digest] = deque()
        self._sending: Digest | None = None  # taken from the outbox, not yet answered
        self._lost_events = 0  # in messages a full outbox gave up
        self._ready = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name=f"webhook {self.target}")

    def post(self, digest: Digest) -> None:
        """Queue a message; never waits."""
        if len(self._outbox) >= OUTBOX_MESSAGES:
            self._lost_events += self._outbox.popleft().size
        self._outbox.append(digest)
        self._ready.set()

    def close(self) -> None:
        """Stop delivering (the webhook left the config, or the router is stopping)."""
        self._worker.cancel()

    async def stop(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)

    async def flush(self) -> None:
        """Deliver whatever is left, the interrupted message first; for after ``stop``."""
        await self._deliver_outbox()

    async def _work(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self._deliver_outbox()
            except Exception:  # a bug here must not end this webhook's deliveries for good
                log.exception("webhook %s: a message could not be delivered", self.target)
                self._sending = None

    async def _deliver_outbox(self) -> None:
        while self._sending is not None or self._outbox:
            if self._sending is None:
                self._sending = self._take()
            await self._deliver(self._sending)
            self._sending = None

    def _take(self) -> Digest:
        digest = self._outbox.popleft()
        if self._lost_events:
            digest = dataclasses.replace(digest, dropped=digest.dropped + self._lost_events)
            self._lost_events = 0
        return digest

    async def _deliver(self, digest: Digest) -> None:
        config = self.config
        body, headers = render_delivery(config.format, digest, self._host, config.secret)
        headers.update(config.headers)
        problem, retry_after = await self._post(body, headers)
        if problem is not None and retry_after is not None:
            await asyncio.sleep(retry_after)
            problem, _ = await self._post(body, headers)
        if problem is None:
            if self.failure_streak:
                log.info(
                    "webhook %s: delivered again after %d failed deliveries",
                    self.target,
                    self.failure_streak,
                )
            self.failure_streak = 0
            return
        self.failure_streak += 1
        if self.failure_streak == 1:
            log.warning(
                "webhook %s: delivery failed (%s); further failures are not logged "
                "until a delivery succeeds",
                self.target,
                _scrub(problem, config.url),  # a receiver may echo the URL it was called on
            )

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str | None, float | None]:
        """One POST: the problem (None if delivered) and, if worth a retry, the delay."""
        timeout_s = self._timeout_s()
        url = self.config.url
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as response:
                answer = await _read_up_to(response, _ANSWER_BYTES)
                problem = delivery_problem(self.config.format, response.status, answer)
                if problem is None or not (response.status == 429 or response.status >= 500):
                    return problem, None
                return problem, _retry_delay(response.headers.get("Retry-After"))
        except TimeoutError:
            return f"no answer within {timeout_s:g}s", RETRY_DELAY_S
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}", RETRY_DELAY_S
        except ValueError as exc:  # a header aiohttp refuses to send: retrying cannot help
            return f"{type(exc).__name__}: {exc}", None


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
