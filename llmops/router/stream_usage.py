"""Token usage of streamed responses, for TPM limits: ask for it, read it, hide it again.

A stream reports usage only when asked (``stream_options.include_usage``); the router asks
on behalf of clients that did not, and removes that extra event from what they receive.
The tap looks only for ``"usage":{`` in each chunk (a C-speed byte search) and parses one
event, the usage one at the tail; the only bytes it delays are an event cut across reads.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmops.openai import Usage, usage_from_body

_USAGE = b'"usage":{'
_EVENT_END = b"\n\n"


# Where ``stream_options`` exists; other endpoints (``/v1/responses``) would reject it.
STREAM_OPTIONS_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


def ask_for_usage(
    path: str, parsed: dict[str, Any], body: bytes
) -> tuple[dict[str, Any], bytes, bool]:
    """The request with ``include_usage`` set on a stream, and whether the router added it."""
    if parsed.get("stream") is not True or path not in STREAM_OPTIONS_PATHS:
        return parsed, body, False
    options = parsed.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return parsed, body, False
    asked = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    parsed = {**parsed, "stream_options": asked}
    return parsed, orjson.dumps(parsed), True


class UsageTap:
    """Fed each chunk of an SSE stream; returns what to forward and keeps the usage seen."""

    __slots__ = ("_held", "strip", "usage")

    def __init__(self, strip: bool) -> None:
        self.strip = strip  # the router asked for usage, so the client must not see it
        self.usage: Usage | None = None
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        if self._held:
            chunk, self._held = self._held + chunk, b""
        if not chunk.endswith(_EVENT_END):
            # An event cut across reads goes on whole once its end arrives: no client can use
            # half an event anyway, and the usage marker itself may be what was cut.
            last_end = chunk.rfind(_EVENT_END)
            cut = last_end + len(_EVENT_END) if last_end >= 0 else 0
            chunk, self._held = chunk[:cut], chunk[cut:]
        if _USAGE not in chunk:
            return chunk
        return self._take_usage(chunk)

    def flush(self) -> bytes:
        """What is still held when the stream ends (an unterminated last event)."""
        held, self._held = self._held, b""
        return held

    def _take_usage(self, chunk: bytes) -> bytes:
        at = chunk.find(_USAGE)
        if at < 0:
            return chunk
        start = chunk.rfind(b"data:", 0, at)
        if start < 0:  # not an SSE data field: nothing to account or strip
            return chunk
        end = chunk.find(_EVENT_END, at) + len(_EVENT_END)
        payload = chunk[start + 5 : end].strip()
        usage = usage_from_body(payload)
        if usage is not None:
            self.usage = usage
        if self.strip and b'"choices":[]' in payload:  # the usage-only event the router added
            return chunk[:start] + self._take_usage(chunk[end:])
        return chunk[:end] + self._take_usage(chunk[end:])
