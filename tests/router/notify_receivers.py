"""Real webhook receivers on loopback port 0 for the notify tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.conftest import serving

# Webhook URLs carry tokens in the path and the query, like Slack's and WeCom's do.
TOKEN_PATH = "/hook/T0KEN-IN-PATH"
TOKEN_QUERY = "key=T0KEN-IN-QUERY"


@dataclass(frozen=True)
class Delivery:
    path_qs: str
    headers: dict[str, str]
    raw: bytes
    at: float  # monotonic

    @property
    def body(self) -> Any:
        return orjson.loads(self.raw)


@dataclass(eq=False)
class Receiver:
    """Records every POST; answers ``status`` (or hangs when ``hang`` is set)."""

    url: str = ""
    status: int = 200
    answer: bytes = b"ok"
    hang: bool = False
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        async with self._arrived:
            self.attempts += 1
            if self.status < 300 and not self.hang:
                delivery = Delivery(request.path_qs, dict(request.headers), raw, time.monotonic())
                self.deliveries.append(delivery)
            self._arrived.notify_all()
        if self.hang:
            await asyncio.sleep(3600)
        return web.Response(status=self.status, body=self.answer, headers={"Retry-After": "0"})

    async def wait_for(
        self, predicate: Callable[[list[Delivery]], bool], timeout_s: float = 10.0
    ) -> list[Delivery]:
        """The deliveries once ``predicate`` holds (checked at every POST, delivered or not)."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: predicate(self.deliveries))
        return list(self.deliveries)

    async def wait_for_attempts(self, count: int, timeout_s: float = 10.0) -> None:
        """Until ``count`` POSTs have arrived, answered or not."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: self.attempts >= count)


async def started_receiver(stack: contextlib.AsyncExitStack, **settings: Any) -> Receiver:
    """A receiver serving until ``stack`` closes; its ``url`` holds a token."""
    receiver = Receiver(**settings)
    app = web.Application()
    app.router.add_post(TOKEN_PATH, receiver.handle)
    base = await stack.enter_async_context(serving(app, shutdown_timeout=0.5))
    receiver.url = f"{base}{TOKEN_PATH}?{TOKEN_QUERY}"
    return receiver


def closed_port_url() -> str:
    """A webhook URL on a loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{TOKEN_PATH}?{TOKEN_QUERY}"


FAST_HEALTH = {
    "interval": 0.1,
    "timeout": 0.2,
    "failure_threshold": 1,
    "success_threshold": 1,
}
