"""Protection at the edge: who may use admin endpoints, which paths may be forwarded, and
the limits aiohttp's request handler enforces on a client's head and idle connection.

``admin_refusal`` and ``escapes_api_root`` are pure functions; ``protocol_options`` are the
limits aiohttp's request handler enforces; ``SERVER_LOG`` keeps client mistakes out of the
error log.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any, Literal
from urllib.parse import unquote

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from llmops.config.router import ServerConfig

AdminRefusal = Literal["unauthorized", "forbidden"]

LINGER_S = 2.0  # reading (and dropping) an unread body after an early answer


def is_loopback(peer: str | None) -> bool:
    """Whether ``peer`` (an IP address as aiohttp reports it) is this machine's loopback."""
    if not peer:
        return False  # unknown peer: never trusted
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def escapes_api_root(raw_path: str) -> bool:
    """Whether a request path has dot segments (also percent-encoded) or backslashes: a
    backend or a proxy in front of it may resolve them to a path outside ``/v1``."""
    path = raw_path.partition("?")[0]
    if "." not in path and "%" not in path and "\\" not in path:
        return False  # the usual path: nothing to decode or resolve
    decoded = unquote(path)
    return "\\" in decoded or any(part in (".", "..") for part in decoded.split("/"))


def admin_refusal(
    peer: str | None, admin_tokens_configured: bool, token_accepted: bool
) -> AdminRefusal | None:
    """Why an admin request is refused, or None when it may go on.

    With admin tokens configured the token decides, wherever the client is; without any,
    only a loopback client gets in (an unprotected router must not be managed from afar).
    """
    if admin_tokens_configured:
        return None if token_accepted else "unauthorized"
    return None if is_loopback(peer) else "forbidden"


def protocol_options(server: ServerConfig) -> dict[str, Any]:
    """Options of aiohttp's request handler that bound a client's head (size, count) and
    how long an idle keep-alive connection stays open."""
    return {
        "keepalive_timeout": server.keepalive_timeout,
        "max_line_size": server.max_header_bytes,
        "max_field_size": server.max_header_bytes,
        "max_headers": server.max_headers,
        # After an early answer (408, 413), drain an unread body this long, then close.
        "lingering_time": LINGER_S,
        "logger": SERVER_LOG,
    }


class _ClientMistakesAtDebug(logging.Filter):
    """aiohttp logs every malformed request at ERROR with a traceback: a client could fill
    the logs at will. Those (answered 400 already) go to DEBUG; real failures stay ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, (HttpProcessingError, RequestPayloadError)):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return SERVER_LOG.isEnabledFor(logging.DEBUG)


SERVER_LOG = logging.getLogger("llmops.router.http")
SERVER_LOG.addFilter(_ClientMistakesAtDebug())
