"""What every part shares about the OpenAI wire: SSE framing, error bodies, usage."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from llmops.openai import DONE_EVENT, SSEParser, Usage, error_json, sse_event, usage_from_body

payloads = st.lists(
    st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b),
    max_size=8,
)


@given(
    payloads=payloads,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    crlf=st.booleans(),
)
def test_events_come_out_whole_whatever_the_read_boundaries(
    payloads: list[bytes], cuts: list[int], crlf: bool
) -> None:
    stream = b"".join(sse_event(p) for p in payloads) + DONE_EVENT
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    parser, events, start = SSEParser(), [], 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        if start <= cut <= len(stream):
            events.extend(parser.feed(stream[start:cut]))
            start = cut
    assert events == [*payloads, b"[DONE]"]  # exactly what was framed


def test_comments_other_fields_and_multiline_data() -> None:
    parser = SSEParser()
    assert parser.feed(b": keep-alive\n\nevent: x\nid: 1\ndata: a\ndata: b\n\ndata:c\n\n") == [
        b"a\nb",
        b"c",
    ]


def test_error_bodies_are_openai_shaped() -> None:
    body = orjson.loads(error_json(404, "The model `x` does not exist.", "model_not_found"))
    assert body == {
        "error": {
            "message": "The model `x` does not exist.",
            "type": "not_found_error",
            "param": None,
            "code": "model_not_found",
        }
    }
    assert orjson.loads(error_json(429, "slow down"))["error"]["type"] == "rate_limit_error"
    assert orjson.loads(error_json(599, "odd"))["error"]["type"] == "server_error"


def test_usage_from_bodies_and_chunks() -> None:
    assert usage_from_body(b'{"usage": {"prompt_tokens": 3, "completion_tokens": 5}}') == Usage(
        3, 5
    )
    assert Usage(3, 5).total_tokens == 8
    assert usage_from_body(b'{"choices": []}') is None
    assert usage_from_body(b"not json") is None
    assert usage_from_body(b'{"usage": {"prompt_tokens": "3"}}') is None
