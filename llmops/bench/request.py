"""One request on the wire: send, time the stream's events, classify failures.

The hot path only counts SSE event terminators in each read and stamps them with the read's
arrival time; nothing is decoded per chunk. After the stream ends, the last few reads are
parsed once to drop the ``[DONE]`` event and the usage-only chunk and to read the usage.
"""

from __future__ import annotations

import errno
import itertools
from collections import deque
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import aiohttp
import orjson

from llmops.openai import SSEParser

_DETAIL_BYTES = 200
_TAIL_BYTES = 16384


@dataclass(slots=True)
class Outcome:
    """What one request measured (absolute ``perf_counter`` times) or how it failed."""

    sent: float
    end: float
    ttft_s: float
    itls_s: list[float]
    output_tokens: int
    input_tokens: int | None
    from_usage: bool
    error: str = ""
    detail: str = ""


async def send_request(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], stream: bool
) -> Outcome:
    """POST ``body`` to ``url`` and measure it; never raises for network or HTTP failures."""
    sent = perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                text = await response.read()
                return _failed(
                    sent, f"http_{response.status}", text[:_DETAIL_BYTES].decode(errors="replace")
                )
            if stream:
                return await _read_stream(sent, response)
            return await _read_body(sent, response)
    except TimeoutError:
        return _failed(sent, "timeout", "no complete response within --timeout")
    except aiohttp.ClientConnectorError as exc:
        return _failed(sent, "connect", str(exc))
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        return _failed(sent, "stream_error", str(exc) or type(exc).__name__)
    except aiohttp.ClientError as exc:
        return _failed(sent, "client_error", str(exc) or type(exc).__name__)
    except OSError as exc:
        kind = "fd_limit" if exc.errno == errno.EMFILE else "connect"
        return _failed(sent, kind, str(exc))


async def _read_stream(sent: float, response: aiohttp.ClientResponse) -> Outcome:
    stamps: list[float] = []
    append = stamps.append
    # A terminator split across reads: the previous read ended with one newline.
    half_terminator = False
    # The last reads, at least _TAIL_BYTES of them: the usage chunk and [DONE] are in there
    # however the server split its writes.
    tail: deque[bytes] = deque()
    tail_bytes = 0
    async for data in response.content.iter_any():
        now = perf_counter()
        tail.append(data)
        tail_bytes += len(data)
        while tail_bytes - len(tail[0]) >= _TAIL_BYTES:
            tail_bytes -= len(tail.popleft())
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        count = data.count(b"\n\n")
        if half_terminator and data[:1] == b"\n":
            count += 1
        half_terminator = data[-1:] == b"\n" and data[-2:] != b"\n\n"
        for _ in range(count):
            append(now)
    return _finish_stream(sent, stamps, b"".join(tail))


def _finish_stream(sent: float, stamps: list[float], tail: bytes) -> Outcome:
    events = SSEParser().feed(_last_events(tail, 2))
    done = bool(events) and events[-1] == b"[DONE]"
    if done:
        events.pop()
        if stamps:
            stamps.pop()
    usage: dict[str, Any] | None = None
    if events:
        final = _parse(events[-1]) if b'"usage"' in events[-1] or b'"error"' in events[-1] else None
        if final is not None and isinstance(final.get("error"), dict):
            message = str(final["error"].get("message", ""))[:_DETAIL_BYTES]
            return _failed(sent, "stream_error", message or "error event in stream")
        if final is not None and isinstance(final.get("usage"), dict) and not final.get("choices"):
            usage = final["usage"]
            if stamps:
                stamps.pop()
    if not done:
        return _failed(sent, "stream_error", "stream ended before data: [DONE]")
    if not stamps:
        return _failed(sent, "stream_error", "no content chunk before [DONE]")
    itls = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    completion = usage.get("completion_tokens") if usage else None
    prompt = usage.get("prompt_tokens") if usage else None
    from_usage = isinstance(completion, int)
    return Outcome(
        sent=sent,
        end=stamps[-1],
        ttft_s=stamps[0] - sent,
        itls_s=itls,
        output_tokens=completion if isinstance(completion, int) else len(stamps),
        input_tokens=prompt if isinstance(prompt, int) else None,
        from_usage=from_usage,
    )


async def _read_body(sent: float, response: aiohttp.ClientResponse) -> Outcome:
    body = await response.read()
    end = perf_counter()
    parsed = _parse(body)
    usage = parsed.get("usage") if parsed else None
    completion = usage.get("completion_tokens") if isinstance(usage, dict) else None
    prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if parsed is None or not parsed.get("choices"):
        return _failed(sent, "stream_error", body[:_DETAIL_BYTES].decode(errors="replace"))
    return Outcome(
        sent=sent,
        end=end,
        ttft_s=end - sent,
        itls_s=[],
        output_tokens=completion if isinstance(completion, int) else 1,
        input_tokens=prompt if isinstance(prompt, int) else None,
        from_usage=isinstance(completion, int),
    )


def _last_events(tail: bytes, count: int) -> bytes:
    """The bytes of the last ``count`` complete events of ``tail`` (all of it if fewer)."""
    if b"\r" in tail:
        tail = tail.replace(b"\r\n", b"\n")
    end = len(tail)
    for _ in range(count + 1):
        end = tail.rfind(b"\n\n", 0, end)
        if end < 0:
            return tail
    return tail[end + 2 :]


def _parse(payload: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _failed(sent: float, error: str, detail: str) -> Outcome:
    return Outcome(sent, perf_counter(), float("nan"), [], 0, None, False, error, detail)
