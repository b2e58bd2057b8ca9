"""The router's HTTP server side: aiohttp's request handler with a deadline for each request
head, OpenAI-shaped answers for aiohttp's own errors, the fast lane for inference
requests, and a site that refuses connections past a cap.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from llmops.openai import error_json
from llmops.router.fastlane import FastLane
from llmops.router.guard import LINGER_S, SERVER_LOG
from llmops.router.inbound import Head, Inbound, encode_reply
from llmops.router.proxy import error_reply

_BUSY_BODY = error_json(
    503, "the router has too many open connections; retry shortly", "too_many_connections"
)
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)
_REFUSAL_WAIT_S = 1.0  # for the refused client's request head, so it reads the 503
_MAX_HEAD_BYTES = 65536
_STATUSES = frozenset(HTTPStatus)
_ROUTING_STATUSES = frozenset({404, 405})


class _Refusal(asyncio.Protocol):
    """Answers a connection past the cap with one 503 once its request head is in, then closes.

    Waiting for the head (briefly) and lingering after the answer keeps the kernel from
    resetting the connection before the client has read the 503.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._head = b""
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._loop.call_later(_REFUSAL_WAIT_S, self._answer)
        self._loop.call_later(2 * _REFUSAL_WAIT_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._head += data
        if b"\r\n\r\n" in self._head or len(self._head) > _MAX_HEAD_BYTES:
            self._answer()

    def _answer(self) -> None:
        transport = self._transport
        if self._answered or transport is None or transport.is_closing():
            return
        self._answered = True
        self._head = b""
        transport.write(BUSY_RESPONSE)
        if transport.can_write_eof():
            transport.write_eof()
        else:  # TLS cannot half-close: close once the 503 is flushed
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def _json_answer(status: int, detail: str | None) -> web.Response:
    phrase = HTTPStatus(status).phrase if status in _STATUSES else "error"
    first_line = (detail or "").strip().partition("\n")[0]
    text = f"{phrase}: {first_line}" if first_line and status < 500 else phrase
    response = web.Response(
        status=status, body=error_json(status, text, "bad_request"), content_type="application/json"
    )
    response.force_close()
    return response


def _routing_answer(exc: web.HTTPException) -> web.Response:
    """aiohttp's URL dispatcher found no such path (404) or method (405): answered like
    the router's own errors, and the connection stays open."""
    allow = exc.headers.get("Allow")
    return web.Response(
        status=exc.status,
        body=error_json(exc.status, exc.reason, None),
        content_type="application/json",
        headers={"Allow": allow} if allow is not None else None,
    )


class _GuardedHandler(RequestHandler):
    """aiohttp's request handler with a deadline for each request head, with the answers
    aiohttp makes itself (a head it cannot parse, bad body framing, an unknown ``Expect``)
    as OpenAI-shaped JSON like every other error of the router, and with the fast lane in
    front of aiohttp's parser until the first request the lane does not take. A lane
    request whose head or body comes in pieces is gathered here (the body within
    ``body_timeout_s``).

    A head must be complete ``head_timeout_s`` after the connection opened (first request)
    or after its first byte arrived (later ones); an idle keep-alive connection is aiohttp's
    ``keepalive_timeout``'s business. The body has its own limit (``server.body_timeout``).
    A fast-lane request counts as aiohttp's request in progress, so that a graceful
    shutdown waits for it as for any other.
    """

    __slots__ = (
        "_body_timeout_s",
        "_discarding",
        "_gather_timer",
        "_gathered",
        "_gathering",
        "_head_started",
        "_head_timeout_s",
        "_head_timer",
        "_held",
        "_lane",
        "_lane_task",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        head_timeout_s: float,
        body_timeout_s: float,
        lane: FastLane | None,
        **options: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **options)
        self._head_timeout_s = head_timeout_s
        self._body_timeout_s = body_timeout_s
        self._head_started: float | None = None  # when the awaited head began (None: not yet)
        self._head_timer: asyncio.TimerHandle | None = None
        self._lane = lane  # None once aiohttp parses this connection
        self._lane_task: asyncio.Task[None] | None = None
        self._held = b""  # what arrived while the fast lane was answering
        # A lane request that comes in pieces: its bytes so far, and its head once parsed.
        self._gathered = bytearray()
        self._gathering: Head | None = None
        self._gather_timer: asyncio.TimerHandle | None = None
        self._discarding = False  # after a 408: read and drop until the connection closes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_started = self._loop.time()
        # One timer per connection, re-armed as it fires: a request costs a clock read only.
        self._head_timer = self._loop.call_at(
            self._head_started + self._head_timeout_s, self._check_head
        )

    def data_received(self, data: bytes) -> None:
        if self._lane is not None:
            if self._lane_task is not None:  # the next request waits for this answer
                self._held += data
                if len(self._held) > _MAX_HEAD_BYTES and self.transport is not None:
                    self.transport.pause_reading()  # resumed when the answer is done
                return
            if self._discarding:
                return
            if self._gathered:  # more of a lane request that came in pieces
                gathered = self._gathered
                gathered += data
                if not self._all_gathered(len(data)):
                    return
                head, data = self._gathering, bytes(gathered)
                self._stop_gathering()
                if head is not None:
                    self._start_lane(head, data)
                    return
            if self._enter_lane(data):
                return
            if len(data) <= _MAX_HEAD_BYTES and self._lane.head_coming(data):
                self._gathered = bytearray(data)  # the rest comes within the head timeout
                if self._head_started is None:
                    self._head_started = self._loop.time()
                return
            self._lane.hand_off()
            self._lane = None
        if self._head_started is None and self._awaiting_head():
            self._head_started = self._loop.time()
        super().data_received(data)
        if self._messages:  # a whole head is in
            self._head_started = None

    def _all_gathered(self, added: int) -> bool:
        """Whether the request being gathered is in: its body (its head is parsed), or its
        head (the terminator, looked for in the bytes just added) or more than a head may be."""
        gathered = self._gathered
        if self._gathering is not None:
            return len(gathered) >= self._gathering.length
        return len(gathered) > _MAX_HEAD_BYTES or b"\r\n\r\n" in gathered[-added - 3 :]

    def _enter_lane(self, data: bytes) -> bool:
        """Start answering the request at the start of ``data`` if the fast lane takes it."""
        assert self._lane is not None
        head = None if self._force_close else self._lane.head(data)
        if head is None:
            return False
        self._request_in_progress = True  # aiohttp's flag: its shutdown waits for the answer
        self._head_started = None  # the head is in: the body has its own deadline
        if len(data) < head.length:  # the body is still coming
            self._gathering = head
            self._gathered = bytearray(data)
            self._gather_timer = self._loop.call_later(self._body_timeout_s, self._body_too_slow)
        else:
            self._start_lane(head, data)
        return True

    def _start_lane(self, head: Head, data: bytes) -> None:
        assert self._lane is not None and self.transport is not None
        inbound = self._lane.inbound(head, data, self.transport)
        self._held = data[head.length :]
        self._lane_task = self._loop.create_task(self._answer(inbound))

    async def _answer(self, inbound: Inbound) -> None:
        assert self._lane is not None
        try:
            goes_on = await self._lane.answer(inbound)
        except Exception:
            SERVER_LOG.exception("error answering %s %s", inbound.method, inbound.target)
            goes_on = False
        finally:
            self._lane_task = None
            self._request_done()
        if not goes_on or self._force_close:
            self.force_close()
            return
        self._keepalive = True  # as aiohttp's own loop does after a kept-alive answer
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if self._keepalive_handle is None and self._keepalive_timeout > 0:
            self._keepalive_handle = self._loop.call_at(
                self._next_keepalive_close_time, self._process_keepalive
            )
        held, self._held = self._held, b""
        if len(held) > _MAX_HEAD_BYTES and self.transport is not None:
            self.transport.resume_reading()
        if held:
            self.data_received(held)

    def _request_done(self) -> None:
        self._request_in_progress = False
        waiter = self._handler_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # a graceful shutdown was waiting for it

    def _stop_gathering(self) -> None:
        self._gathering = None
        self._gathered = bytearray()
        if self._gather_timer is not None:
            self._gather_timer.cancel()
            self._gather_timer = None

    def _body_too_slow(self) -> None:
        """A 408, as aiohttp's side answers a slow body; what the client still sends is read
        and dropped for a moment, so that the answer is not lost to a reset."""
        self._gather_timer = None
        self._stop_gathering()
        self._request_done()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        message = f"request body not received within {self._body_timeout_s:g} s"
        transport.write(encode_reply(error_reply(408, message, "body_timeout"), False))
        self._discarding = True
        self._loop.call_later(LINGER_S, self.force_close)

    def _process_keepalive(self) -> None:
        if self._lane_task is not None or self._gathering is not None:  # not idle
            self._keepalive_handle = None  # the idle clock restarts when the answer is out
            return
        super()._process_keepalive()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._lane_task is not None:
            self._lane_task.cancel()  # the client went away: so does its request
        if self._gathering is not None:
            self._stop_gathering()
            self._request_done()
        super().connection_lost(exc)

    def _awaiting_head(self) -> bool:
        return not self._request_in_progress and not self._messages

    def _check_head(self) -> None:
        now = self._loop.time()
        started = self._head_started
        if started is not None and not self._awaiting_head():
            started = self._head_started = None  # a request is being handled
        if started is not None and now - started >= self._head_timeout_s:
            self._head_timer = None
            self.force_close()
            return
        deadline = now + self._head_timeout_s if started is None else started + self._head_timeout_s
        self._head_timer = self._loop.call_at(deadline, self._check_head)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if already answering
        return _json_answer(status, message)

    def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> Coroutine[Any, Any, tuple[web.StreamResponse, bool]]:
        # The router's handlers answer with Response objects; an HTTPException here comes
        # from aiohttp itself: its URL dispatcher (no middleware in between, none costs
        # every request a frame) or its Expect handling. Not a coroutine itself: the
        # base's is returned as it is, no extra frame per response.
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            if resp.status in _ROUTING_STATUSES:
                resp = _routing_answer(resp)
            else:
                resp = _json_answer(resp.status, resp.text)
        return super().finish_response(request, resp, start_time)


class GuardedSite(web.TCPSite):
    """A TCP (or TLS) site that refuses connections past ``max_connections`` with a 503.

    The cap is per process: with several router processes on one port (``reuse_port``)
    each holds up to ``max_connections``.
    """

    __slots__ = ("_body_timeout_s", "_head_timeout_s", "_lane", "_max_connections")

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        max_connections: int,
        header_timeout_s: float,
        body_timeout_s: float,
        lane: FastLane | None,
        ssl_context: ssl.SSLContext | None,
        backlog: int,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(
            runner, host, port, ssl_context=ssl_context, backlog=backlog, reuse_port=reuse_port
        )
        self._max_connections = max_connections
        self._head_timeout_s = header_timeout_s
        self._body_timeout_s = body_timeout_s
        self._lane = lane

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would listen unguarded
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        cap = self._max_connections

        options = server._kwargs  # what AppRunner was given for its request handlers
        timeouts = {"head_timeout_s": self._head_timeout_s, "body_timeout_s": self._body_timeout_s}
        lane = self._lane

        def guarded_protocol() -> asyncio.Protocol:
            # The server's own table of open connections: O(1), and exactly what it serves.
            if len(server._connections) >= cap:
                return _Refusal(loop)
            return _GuardedHandler(server, loop=loop, lane=lane, **timeouts, **options)

        self._server = await loop.create_server(
            guarded_protocol,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        if sockets:
            self._bound_port = sockets[0].getsockname()[1]
