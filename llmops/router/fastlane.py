"""The fast lane: inference requests answered without aiohttp's request machinery.

Every connection starts in the fast lane. An ordinary request (``parse_head``: an
HTTP/1.1 ``POST /v1/...`` with a ``Content-Length`` body) is gathered until its head and
body are in (they may come in pieces), proxied from here, and its answer written straight
to the socket. The first request that is not ordinary hands the connection to aiohttp for
good, its bytes untouched, so every edge of HTTP (chunked or compressed bodies,
``Expect``, HTTP/1.0, bad heads, other paths) keeps aiohttp's handling. The request
handler in ``server`` does the gathering and the handing.
"""

from __future__ import annotations

import asyncio

from llmops.router.auth import REFUSED_KEY
from llmops.router.guard import escapes_api_root
from llmops.router.inbound import Head, HeadLimits, Inbound, parse_head, send_reply
from llmops.router.proxy import error_reply, proxy_request
from llmops.router.state import RouterState

#: Every request the lane takes starts so.
_LANE_START = b"POST /v1/"


class FastLane:
    """Parses and answers fast-lane requests for one router."""

    __slots__ = ("_limits", "_router")

    def __init__(self, router: RouterState, limits: HeadLimits) -> None:
        self._router = router
        self._limits = limits

    @staticmethod
    def head_coming(data: bytes) -> bool:
        """Whether ``data`` may be the start of a head the lane would take, still incomplete
        (a head longer than a network packet, or a client that writes it in pieces)."""
        return data[: len(_LANE_START)] == _LANE_START[: len(data)] and b"\r\n\r\n" not in data

    def hand_off(self) -> None:
        """A connection leaves the lane for aiohttp's side: counted for ``/metrics``."""
        self._router.lane_handoffs += 1

    def head(self, data: bytes) -> Head | None:
        """The head at the start of ``data`` if the fast lane takes its request."""
        head = parse_head(data, self._limits)
        if head is None or escapes_api_root(head.target):  # aiohttp's side answers those
            return None
        return head

    def inbound(self, head: Head, data: bytes, transport: asyncio.Transport) -> Inbound:
        """The request of ``head``, whose whole body is in ``data``."""
        return Inbound(
            "POST",
            head.target,
            head.target.partition("?")[0],
            head.headers,
            head.forward,
            data[head.body_start : head.length],
            head.keep_alive,
            True,
            transport,
            (),
        )

    async def answer(self, inbound: Inbound) -> bool:
        """Answer the request; whether the connection can carry another one."""
        allowed = self._router.inference_tokens.allowed_models(inbound.headers.get("Authorization"))
        if allowed is None:
            return not send_reply(inbound, error_reply(401, *REFUSED_KEY)).close
        inbound.allowed = allowed
        return not (await proxy_request(inbound, self._router)).close
