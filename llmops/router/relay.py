"""Relaying an upstream event stream to the client as it arrives.

The response head leaves with the first chunk; after it, each piece of the body the
upstream socket delivers is written to the client socket from the upstream's read
callback: no task switch, no per-chunk objects, and whole chunks of a chunked upstream body
pass to a chunked client as they came (anything else is framed here). A client that reads
slowly pauses the upstream socket (backpressure to the engine). The stream's last bytes
and its end marker leave together.
"""

from __future__ import annotations

import asyncio

from llmops.openai import DONE_EVENT, sse_event
from llmops.router.accounting import account_failure
from llmops.router.exchange import Exchange
from llmops.router.inbound import Inbound, Sent, status_line
from llmops.router.pool import BackendState
from llmops.router.state import RouterState
from llmops.router.stream_usage import UsageTap
from llmops.router.upstream import classify_failure
from llmops.router.upstream_http import UpstreamConnection, UpstreamError
from llmops.router.watchdog import WatchedRequest


def answer_fields(connection: UpstreamConnection, request_id: str) -> bytes:
    """The header lines of the backend's answer as the client gets them."""
    return b"%bx-request-id: %b\r\n" % (connection.fields, request_id.encode())


_CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n"
_CLOSE = b"Connection: close\r\n\r\n"  # HTTP/1.0: the end of the connection ends the body
_LAST_CHUNK = b"0\r\n\r\n"


def _frame(data: bytes, chunked: bool) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data) if chunked and data else data


async def relay_stream(
    inbound: Inbound,
    router: RouterState,
    connection: UpstreamConnection,
    watched: WatchedRequest,
    first_chunk: bytes,
    backend: BackendState,
    exchange: Exchange,
) -> Sent:
    """Send the stream on, from its head to its end.

    A client that went away is counted as a cancellation; the caller's release of the
    connection then aborts the engine's work.
    """
    transport, chunked = inbound.transport, inbound.chunked
    head = (
        status_line(connection.status)
        + answer_fields(connection, exchange.request_id)
        + (_CHUNKED if chunked else _CLOSE)
    )
    tap = exchange.usage_tap
    last = first_chunk if tap is None else tap.feed(first_chunk)
    if not connection.complete:  # more to come: the head and first chunk go out now
        if transport.is_closing():
            return _client_gone(exchange, connection.status)
        transport.write(head + _frame(last, chunked))
        head = b""
        rest = await _relay_rest(transport, router, connection, watched, backend, exchange, chunked)
        if rest is None:
            return _client_gone(exchange, connection.status)
        last = rest
    if tap is not None:
        last += tap.flush()
    if transport.is_closing():
        return _client_gone(exchange, connection.status)
    transport.write(head + _frame(last, chunked) + (_LAST_CHUNK if chunked else b""))
    if tap is not None:
        exchange.usage = tap.usage
        auth = inbound.headers.get("Authorization")
        await router.limits.record_usage(backend, auth, tap.usage)
    return Sent(connection.status, close=not chunked or not inbound.keep_alive)


async def _relay_rest(
    transport: asyncio.Transport,
    router: RouterState,
    connection: UpstreamConnection,
    watched: WatchedRequest,
    backend: BackendState,
    exchange: Exchange,
    chunked: bool,
) -> bytes | None:
    """Relay the rest of the body; what still has to be sent at the end (an error event if
    the upstream failed), or None if the client went away."""
    tap = exchange.usage_tap
    sink = _ClientSink(transport, connection, watched, tap, chunked)
    try:
        await connection.relay(sink, sink.frames if chunked and tap is None else None)
    except UpstreamError as exc:
        if sink.client_gone:
            return None
        failure = classify_failure(exc, watched.expired, backend.id, "idle")
        account_failure(router, backend, failure)
        exchange.error_kind = failure.kind
        router.stream_errors += 1
        return sse_event(failure.body) + DONE_EVENT
    return None if sink.client_gone else b""


def _client_gone(exchange: Exchange, status: int) -> Sent:
    exchange.cancelled = True  # counted once, when the exchange is finished
    return Sent(status, close=True)


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
        """Body bytes, framed here for the client."""
        self._watched.last_byte_at = self._now()
        if self._tap is not None:
            data = self._tap.feed(data)
        if data:
            self._write(_frame(data, self._chunked))

    def frames(self, chunks: bytes) -> None:
        """Whole chunks as the upstream framed them, for a client that reads chunks."""
        self._watched.last_byte_at = self._now()
        self._write(chunks)

    def _write(self, framed: bytes) -> None:
        transport = self._transport
        if self.client_gone:
            return
        if transport.is_closing():
            self.client_gone = True
            self._connection.close()  # stop the engine's work now
            return
        transport.write(framed)
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
