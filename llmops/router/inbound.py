"""A client's request and the router's answer as the data path sees them, whichever server
side parsed the request, and the bytes of an answer on the wire.

``parse_head`` is the fast lane's parser: it accepts only the common case (an HTTP/1.1
``POST /v1/...`` with a ``Content-Length`` body and an ordinary head) and says None to
anything else, which aiohttp's parser then handles.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from multidict import CIMultiDict, CIMultiDictProxy

from llmops.router.upstream_http import HOP_BY_HOP

_PHRASES = {status.value: status.phrase for status in HTTPStatus}
# Visible ASCII, no percent-encoding, backslash or space: nothing to decode in the path.
_REQUEST_LINE = re.compile(rb"POST (/v1/[!-$&-\[\]-~]+) HTTP/1\.1")
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[ \t]*([!-~](?:[ \t!-~]*[!-~])?)?[ \t]*")
# Request headers that ask for more than the fast lane does: aiohttp handles those.
_DECLINED = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"content-encoding"})
#: Client headers a backend never sees: hop-by-hop ones, the client's own key (the backend's
#: is sent instead), its request id (the router's goes), and a body encoding already undone.
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "x-request-id", "content-encoding"}
_NOT_FORWARDED_BYTES = frozenset(name.encode() for name in NOT_FORWARDED)


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """The server's limits on a request head and body; a request past one goes to aiohttp,
    which answers it with the right error."""

    max_field_bytes: int
    max_headers: int
    max_body_bytes: int


@dataclass(slots=True)
class Inbound:
    """One client request on its way through the data path."""

    method: str
    target: str  # the path and query as the client sent them
    path: str  # the decoded path
    headers: CIMultiDict[str] | CIMultiDictProxy[str]
    forward: bytes  # the header lines the backend gets, each with its CRLF
    body: bytes
    keep_alive: bool  # the client keeps the connection after this answer
    chunked: bool  # the client reads chunked bodies (HTTP/1.1)
    transport: asyncio.Transport
    allowed: Collection[str]  # the models the client's token may use


@dataclass(slots=True)
class Reply:
    """A whole answer, to be framed by its length."""

    status: int
    fields: bytes  # its header lines, each with its CRLF
    body: bytes
    close: bool = False  # close the connection after it


@dataclass(slots=True)
class Sent:
    """An answer written to the client: the data path writes each one itself, as soon as
    it has it, whichever server side the request came through."""

    status: int
    close: bool  # the connection cannot carry another request


@dataclass(slots=True)
class Head:
    """The head of an ordinary inference request, parsed by the fast lane."""

    target: str
    headers: CIMultiDict[str]
    forward: bytes  # the header lines the backend gets
    keep_alive: bool
    body_start: int  # where the body starts in the data
    length: int  # the whole request's length: head and body


def parse_head(data: bytes, limits: HeadLimits) -> Head | None:
    """The head of the ordinary inference request at the start of ``data`` (its body may
    still be coming), or None: not all of a head yet, or not an ordinary one."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    too_long = len(lines[0]) > limits.max_field_bytes or len(lines) - 1 > limits.max_headers
    if line is None or too_long:
        return None
    headers: CIMultiDict[str] = CIMultiDict()
    forward = []
    length: int | None = None
    keep_alive = True
    for field in lines[1:]:
        name, colon, raw_value = field.partition(b":")
        value = _FIELD_VALUE.fullmatch(raw_value)
        if (
            not colon
            or len(field) > limits.max_field_bytes
            or _FIELD_NAME.fullmatch(name) is None
            or value is None
        ):
            return None
        text = value.group(1) or b""
        lower = name.lower()
        if lower in _DECLINED:
            return None
        if lower == b"content-length":
            if length is not None or not text.isdigit():
                return None
            length = int(text)
        elif lower == b"connection":
            options = {option.strip() for option in text.lower().split(b",")}
            if not options <= {b"keep-alive", b"close"}:
                return None
            keep_alive = b"close" not in options
        headers.add(name.decode("ascii"), text.decode("ascii"))
        if lower not in _NOT_FORWARDED_BYTES:
            forward.append(field + b"\r\n")
    if length is None or length > limits.max_body_bytes:
        return None
    target = line.group(1).decode("ascii")
    return Head(target, headers, b"".join(forward), keep_alive, end + 4, end + 4 + length)


_date: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """The ``Date`` header line, formatted once a second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n")
    return _date[1]


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES.get(status, "Unknown").encode())


def encode_fields(headers: Iterable[tuple[str, str]]) -> bytes:
    """Header lines, each with its CRLF."""
    text = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return text.encode("utf-8", "surrogateescape")


def forwarded_fields(headers: Mapping[str, str]) -> bytes:
    """The header lines of a client's request that its backend gets."""
    return encode_fields((k, v) for k, v in headers.items() if k.lower() not in NOT_FORWARDED)


def own_fields(headers: Iterable[tuple[str, str]]) -> bytes:
    """The header lines of an answer the router makes itself, with a ``Date``."""
    return encode_fields(headers) + _date_header()


def encode_reply(reply: Reply, keep_alive: bool) -> bytes:
    """The bytes of a whole answer."""
    close = b"Connection: close\r\n" if reply.close or not keep_alive else b""
    return b"%b%bContent-Length: %d\r\n%b\r\n%b" % (
        status_line(reply.status),
        reply.fields,
        len(reply.body),
        close,
        reply.body,
    )


def send_reply(inbound: Inbound, reply: Reply) -> Sent:
    close = reply.close or not inbound.keep_alive
    if inbound.transport.is_closing():
        return Sent(reply.status, close=True)
    inbound.transport.write(encode_reply(reply, not close))
    return Sent(reply.status, close)
