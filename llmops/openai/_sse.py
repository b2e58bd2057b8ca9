"""Server-sent events as the OpenAI streaming API uses them: ``data: <json>\\n\\n`` frames."""

from __future__ import annotations

DONE_EVENT = b"data: [DONE]\n\n"


def sse_event(payload: bytes) -> bytes:
    """Frame one ``data:`` event."""
    return b"data: " + payload + b"\n\n"


class SSEParser:
    """Incremental SSE parser: feed raw bytes, get the ``data`` payload of each complete event.

    Accepts ``\\n\\n``, ``\\r\\n\\r\\n`` and mixed line endings, multi-line ``data:`` fields
    (joined with ``\\n``) and ignores comments and other fields, as the SSE spec says.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            data = _event_data(buffer[start:end])
            if data is not None:
                events.append(data)
            start = end + 2
        self._buffer = buffer[start:]
        return events


def _event_data(block: bytes) -> bytes | None:
    lines = [
        line[5:].removeprefix(b" ") for line in block.split(b"\n") if line.startswith(b"data:")
    ]
    if not lines:
        return None
    return b"\n".join(lines)
