"""Relaying an upstream event stream to the client as it arrives.

After the response head, each piece of the body the upstream socket delivers is framed and
written to the client socket from the upstream's read callback: no task switch, no
per-chunk objects. A client that reads slowly pauses the upstream socket (backpressure to
the engine).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from llmops.openai import DONE_EVENT, sse_event
from llmops.router.accounting import account_failure
from llmops.router.exchange import Exchange
from llmops.router.pool import BackendState
from llmops.router.state import RouterState
from llmops.router.stream_usage import UsageTap
from llmops.router.upstream import classify_failure
from llmops.router.upstream_http import UpstreamConnection, UpstreamError
from llmops.router.watchdog import WatchedRequest


def response_headers(connection: UpstreamConnection, request_id: str) -> list[tuple[str, str]]:
    return [*connection.headers, ("x-request-id", request_id)]


async def relay_stream(
    request: web.Request,
    router: RouterState,
    connection: UpstreamConnection,
    watched: WatchedRequest,
    first_chunk: bytes,
    backend: BackendState,
    exchange: Exchange,
) -> web.StreamResponse:
    """Send the stream on; returns the prepared response in every case.

    A client that went away is counted as a cancellation; the caller's release of the
    connection then aborts the engine's work.
    """
    response = web.StreamResponse(
        status=connection.status, headers=response_headers(connection, exchange.request_id)
    )
    try:
        writer = await response.prepare(request)
    except ConnectionResetError:
        return _client_gone(router, exchange, response)
    transport = request.transport
    if writer is None or transport is None:
        return _client_gone(router, exchange, response)
    chunked = response.headers.get("Transfer-Encoding") == "chunked"  # not for HTTP/1.0
    sink = _ClientSink(transport, connection, watched, exchange.usage_tap, chunked)
    try:
        sink(first_chunk)
        await connection.relay(sink)
    except UpstreamError as exc:
        if sink.client_gone:
            return _client_gone(router, exchange, response)
        failure = classify_failure(exc, watched.expired, backend.id, "idle")
        account_failure(router, backend, failure)
        exchange.error_kind = failure.kind
        router.stream_errors += 1
        sink.event(sse_event(failure.body) + DONE_EVENT)
    if sink.client_gone:
        return _client_gone(router, exchange, response)
    tap = exchange.usage_tap
    if tap is not None:
        sink.event(tap.flush())
    try:
        await response.write_eof()
    except ConnectionResetError:
        return _client_gone(router, exchange, response)
    if tap is not None:
        exchange.usage = tap.usage
        auth = request.headers.get("Authorization")
        await router.limits.record_usage(backend, auth, tap.usage)
    return response


def _client_gone(
    router: RouterState, exchange: Exchange, response: web.StreamResponse
) -> web.StreamResponse:
    router.cancelled += 1
    exchange.cancelled = True
    return response


_CLIENT_HIGH_WATER_BYTES = 64 * 1024
_CLIENT_LOW_WATER_BYTES = 16 * 1024
_DRAIN_POLL_S = 0.01


class _ClientSink:
    """Writes relayed body bytes to the client socket, framed as HTTP/1.1 chunks."""

    __slots__ = ("_chunked", "_connection", "_now", "_tap", "_transport", "_watched", "client_gone")

    def __init__(
        self,
        transport: asyncio.Transport,
        connection: UpstreamConnection,
        watched: WatchedRequest,
        tap: UsageTap | None,
        chunked: bool,
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._watched = watched
        self._tap = tap
        self._chunked = chunked
        self._now = asyncio.get_running_loop().time
        self.client_gone = False

    def __call__(self, data: bytes) -> None:
        self._watched.last_byte_at = self._now()
        if self._tap is not None:
            data = self._tap.feed(data)
        self.event(data)

    def event(self, data: bytes) -> None:
        if not data or self.client_gone:
            return
        transport = self._transport
        if transport.is_closing():
            self.client_gone = True
            self._connection.close()  # stop the engine's work now
            return
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        if transport.get_write_buffer_size() > _CLIENT_HIGH_WATER_BYTES:
            self._connection.pause_reading()
            asyncio.get_running_loop().call_later(_DRAIN_POLL_S, self._resume_when_drained)

    def _resume_when_drained(self) -> None:
        if self._transport.is_closing():
            self.client_gone = True
            self._connection.close()
        elif self._transport.get_write_buffer_size() <= _CLIENT_LOW_WATER_BYTES:
            self._connection.resume_reading()
        else:
            asyncio.get_running_loop().call_later(_DRAIN_POLL_S, self._resume_when_drained)
