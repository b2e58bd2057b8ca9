"""A lean HTTP/1.1 client for the proxy path: keep-alive connections pooled per backend.

aiohttp's ClientSession builds request and response objects, header multidicts, cookie
jars, trace hooks and timers for every request; a proxy needs none of it. Here a request
is one ``transport.write`` of a head built from pre-encoded parts, and a response is parsed
just enough to frame it: the status line, the headers, and the body by Content-Length or
chunked encoding (the bytes between the framing are handed on untouched).

Reading is flow-controlled: when more than ``_HIGH_WATER_BYTES`` wait for a slow consumer,
the socket stops being read, so a slow client slows the engine instead of growing memory.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass

from llmops.errors import LlmopsError

# Headers about one connection, not the message: a proxy never passes them on.
HOP_BY_HOP = frozenset(
    (
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    )
)
_HOP_BY_HOP_BYTES = frozenset(name.encode() for name in HOP_BY_HOP)
# What the client reads of a response head; the rest only passes through.
_READ_FIELDS = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"content-type", b"retry-after")
)
_HIGH_WATER_BYTES = 256 * 1024
_MAX_HEAD_BYTES = 64 * 1024
_IDLE_REUSE_S = 4.0  # engines behind uvicorn drop idle keep-alive connections after 5 s


class UpstreamError(LlmopsError):
    """Talking to a backend failed; ``kind`` is the metric label of the failure."""

    kind = "connection"


class UpstreamConnectError(UpstreamError):
    kind = "connect"


class UpstreamConnectTimeout(UpstreamError, TimeoutError):
    kind = "connect_timeout"


class UpstreamNoResources(UpstreamError):
    """The router itself lacks what a new connection needs (open files, local ports,
    buffers): its own shortage, not the backend's fault."""

    kind = "router_resources"


_NO_RESOURCES = frozenset(
    (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL)
)


class UpstreamDisconnected(UpstreamError):
    """The backend closed the connection before a complete response head."""

    kind = "disconnected"


class UpstreamBodyError(UpstreamError):
    """The connection broke (or was closed by us) before the body was complete."""


class UpstreamProtocolError(UpstreamError):
    kind = "bad_response"


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends a request, parses the response, frames its body."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._head = b""
        self._in_use = False  # a request was sent and its answer is awaited
        self._head_done: asyncio.Future[None] = self._loop.create_future()
        self.status = 0
        self.fields = b""  # the end-to-end header lines, each with its CRLF
        self.retry_after: str | None = None
        self.content_type = ""
        self._keep_alive = True
        self._remaining = -1  # body bytes still to come; -1 = until close
        self._chunked = False
        self._chunk_state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._pending = b""  # an incomplete framing line
        self._body: list[bytes] = []
        self._buffered = 0
        self._body_done = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: UpstreamError | None = None
        self._sink: Callable[[bytes], None] | None = None  # set while relaying (push mode)
        self._frames: Callable[[bytes], None] | None = None  # takes whole chunks as they came
        self._relay_done: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if not self._in_use:
            return  # an idle connection the backend closed: nobody is waiting on it
        if not self._head_done.done():
            self._head_done.set_exception(
                UpstreamDisconnected("connection closed before a response")
            )
        elif not self._body_done:
            if self._remaining == -1 and not self._chunked:
                self._body_done = True  # a body framed by the end of the connection
            elif self._error is None:
                self._error = UpstreamBodyError("connection closed in the middle of the body")
        self._wake()

    def data_received(self, data: bytes) -> None:
        frames = self._frames  # relaying a chunked body to a client that reads chunks
        at_chunk_start = not self._chunk_state and not self._pending
        if frames is not None and at_chunk_start and whole_chunks(data):
            frames(data)  # the usual read: a token's chunk, passed on as it came
            return  # nothing waits on a chunk that is not the last
        if not self._in_use:  # bytes nobody asked for: never let them answer the next request
            self.close()
            return
        if not self._head_done.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD_BYTES:
                    self._fail_head("response head too large")
                return
            head, data = self._head[:end], self._head[end + 4 :]
            self._head = b""
            if not self._parse_head(head):
                return
            if self.status < 200:  # 1xx: an interim answer, the real one follows
                self.data_received(data)
                return
            self._head_done.set_result(None)
        if data:
            self._feed_body(data)

    # -- parsing ---------------------------------------------------------------------------
    def _parse_head(self, head: bytes) -> bool:
        self._remaining, self._chunked = -1, False
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            self._fail_head(f"bad status line {lines[0][:60]!r}")
            return False
        self.status = int(parts[1])
        self._keep_alive = parts[0] == b"HTTP/1.1"
        fields = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                self._fail_head("bad header line")
                return False
            lower = name.strip().lower()
            if lower not in _HOP_BY_HOP_BYTES:
                fields.append(line)
            if lower not in _READ_FIELDS:
                continue
            text = value.strip().decode("latin-1")
            if lower == b"content-length":
                if not text.isdigit():
                    self._fail_head("bad content-length")
                    return False
                self._remaining = int(text)
            elif lower == b"transfer-encoding":
                self._chunked = "chunked" in text.lower()
            elif lower == b"connection":
                self._keep_alive = "close" not in text.lower() and self._keep_alive
            elif lower == b"content-type":
                self.content_type = text.partition(";")[0].strip().lower()
            else:
                self.retry_after = text
        # End to end only, as the backend sent them: what a proxy passes on.
        self.fields = b"".join(line + b"\r\n" for line in fields)
        if self._chunked:
            self._remaining = 0
        elif self.status in (204, 304) or (100 <= self.status < 200):
            self._remaining = 0
            self._body_done = self.status >= 200
        elif self._remaining == 0:
            self._body_done = True
        if self._remaining == -1:
            self._keep_alive = False
        return True

    def _fail_head(self, message: str) -> None:
        if not self._head_done.done():
            self._head_done.set_exception(UpstreamProtocolError(message))
        self.close()

    def _feed_body(self, data: bytes) -> None:
        if self._body_done:
            self._keep_alive = False  # bytes after a complete response: never reuse it
            return
        if not self._chunked:
            if self._remaining >= 0:
                if len(data) > self._remaining:
                    self._keep_alive = False
                data = data[: self._remaining]
                self._remaining -= len(data)
                if self._remaining == 0:
                    self._body_done = True
            self._deliver(data)
            return
        self._feed_chunked(data)

    def _feed_chunked(self, data: bytes) -> None:
        pieces: list[bytes] = []
        position = 0
        if self._pending:
            data, self._pending = self._pending + data, b""
        size = len(data)
        while position < size and not self._body_done:
            state = self._chunk_state
            if state == 1:  # chunk data
                take = min(self._remaining, size - position)
                pieces.append(data[position : position + take])
                position += take
                self._remaining -= take
                if self._remaining == 0:
                    self._chunk_state = 2
                continue
            end = data.find(b"\r\n", position)
            if end < 0:
                self._pending = data[position:]
                break
            line = data[position:end]
            position = end + 2
            if state == 0:
                try:
                    self._remaining = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self._error = UpstreamProtocolError("bad chunk size")
                    self.close()
                    return
                self._chunk_state = 1 if self._remaining else 3
            elif state == 2:
                self._chunk_state = 0
            elif not line:  # state 3: the empty line after the (usually absent) trailers
                self._body_done = True
                self._keep_alive = self._keep_alive and position == size
        self._deliver(b"".join(pieces) if len(pieces) != 1 else pieces[0])

    def _deliver(self, data: bytes) -> None:
        if self._sink is not None:
            if data:
                self._sink(data)
            self._wake()
            return
        if data:
            self._body.append(data)
            self._buffered += len(data)
            if self._buffered > _HIGH_WATER_BYTES:
                self.pause_reading()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        done = self._relay_done
        if done is not None and not done.done():
            if self._error is not None:
                done.set_exception(self._error)
            elif self._body_done or self.closed:
                done.set_result(None)

    # -- what the proxy calls --------------------------------------------------------------
    def send(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        self._in_use = True
        self.transport.writelines((head, body))  # one writev with uvloop

    async def response_head(self) -> None:
        """Wait for the status line and headers."""
        await self._head_done

    async def read_chunk(self) -> bytes:
        """The body bytes that have arrived (waiting for some), or b"" once it is complete."""
        while not self._body:
            if self._error is not None:
                raise self._error
            if self._body_done or self.closed:
                return b""
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        self.resume_reading()
        return data

    def relay(
        self, sink: Callable[[bytes], None], frames: Callable[[bytes], None] | None = None
    ) -> asyncio.Future[None]:
        """Hand every body byte to ``sink`` as it arrives, with no task switch per chunk;
        a chunked body's reads that hold whole chunks go to ``frames`` as they are, if given.

        The returned future completes with the body, or fails with the error that cut it.
        """
        self._sink = sink
        self._frames = frames if self._chunked else None
        self._relay_done = self._loop.create_future()
        pending = b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        if pending:
            sink(pending)
        self.resume_reading()
        self._wake()
        return self._relay_done

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    async def read_body(self) -> bytes:
        """The whole body."""
        parts = []
        while chunk := await self.read_chunk():
            parts.append(chunk)
        return b"".join(parts)

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (and been read)."""
        return self._body_done and not self._body

    @property
    def reusable(self) -> bool:
        return self._keep_alive and self._body_done and not self._body and not self.closed

    def close(self) -> None:
        """Drop the connection: the backend sees the request aborted; whoever waits on the
        response (head, body or relay) gets an error at once."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        if not self._in_use:
            return
        if not self._head_done.done():
            self._head_done.set_exception(UpstreamDisconnected("connection closed by the router"))
        elif not self._body_done and self._error is None:
            self._error = UpstreamBodyError("connection closed by the router")
        self._wake()

    def release(self) -> None:
        """Hand the connection back: pooled if the response was complete, closed otherwise.

        Called by the one task that used it, when done: nothing waits on it any more.
        """
        if self.reusable:
            self._reset()
            self.reused = True
            self.idle_since = time.monotonic()
            self._pool.put_idle(self)
            return
        for pending in (self._head_done, self._relay_done):
            if pending is not None and not pending.done():
                pending.cancel()  # no one will read it: an error set later would go unheard
        self.close()


def whole_chunks(data: bytes) -> bool:
    """Whether ``data`` is one or more whole chunks of a chunked body (size line, data,
    CRLF), none of them the last one, each size plain hex digits."""
    position, size = 0, len(data)
    while position < size:
        end = data.find(b"\r\n", position)
        digits = data[position:end]
        if end < 0 or not digits.isalnum():
            return False
        try:
            length = int(digits, 16)
        except ValueError:
            return False
        position = end + 4 + length
        if not length or position > size or data[position - 2 : position] != b"\r\n":
            return False
    return True


class UpstreamPool:
    """Keep-alive connections to one backend (scheme, host, port)."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context
        # Insertion-ordered, so popitem() hands out the most recently used connection.
        self._idle: dict[UpstreamConnection, None] = {}
        host_header = host if ":" not in host else f"[{host}]"
        default_port = 443 if ssl_context is not None else 80
        self.host_header = host_header if port == default_port else f"{host_header}:{port}"

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def acquire(self, connect_timeout_s: float | None) -> UpstreamConnection:
        """An idle connection that is still fresh, or a new one."""
        now = time.monotonic()
        while self._idle:
            connection, _ = self._idle.popitem()  # the most recently used is likeliest alive
            if not connection.closed and now - connection.idle_since < _IDLE_REUSE_S:
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: UpstreamConnection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise UpstreamConnectTimeout(f"no connection within {connect_timeout_s:g}s") from None
        except (OSError, ssl.SSLError) as exc:
            if exc.errno in _NO_RESOURCES:
                raise UpstreamNoResources(exc.strerror or str(exc)) from None
            raise UpstreamConnectError(exc.strerror or str(exc)) from None
        return protocol

    def put_idle(self, connection: UpstreamConnection) -> None:
        self._idle[connection] = None

    def forget(self, connection: UpstreamConnection) -> None:
        self._idle.pop(connection, None)

    def close(self) -> None:
        while self._idle:
            self._idle.popitem()[0].close()


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    """How requests reach one backend: its connection pool and what every request carries."""

    pool: UpstreamPool
    path_prefix: str  # the api_base path, e.g. "/v1": requests for /v1/<rest> go to <prefix>/<rest>
    extra_fields: bytes  # header lines every request carries (the backend's Authorization)


def encode_head(method: str, target: str, host_header: str, fields: bytes, body_len: int) -> bytes:
    """The request line and headers, ready for the socket; ``fields`` are header lines,
    each with its CRLF."""
    return b"%b %b HTTP/1.1\r\nHost: %b\r\n%bContent-Length: %d\r\n\r\n" % (
        method.encode(),
        target.encode("utf-8", "surrogateescape"),
        host_header.encode(),
        fields,
        body_len,
    )
