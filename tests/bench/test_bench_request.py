"""The hot path's SSE reading against a real aiohttp server writing awkward byte splits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from llmops.bench.request import send_request
from tests.conftest import serving

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"w "}}]}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}\n\n'
DONE = b"data: [DONE]\n\n"
GAP_S = 0.03

#: Each script is the list of writes the server makes, with a pause between them.
SCRIPTS: dict[str, list[bytes]] = {
    "whole": [CHUNK, CHUNK, CHUNK, USAGE + DONE],
    # A terminator split between two writes, an event split mid-JSON, usage split in three.
    "split": [
        CHUNK[:-1],
        b"\n" + CHUNK[:20],
        CHUNK[20:],
        CHUNK,
        USAGE[:15],
        USAGE[15:40],
        USAGE[40:],
        DONE,
    ],
    "crlf": [c.replace(b"\n", b"\r\n") for c in (CHUNK, CHUNK, CHUNK, USAGE, DONE)],
    "no_usage": [CHUNK, CHUNK, CHUNK, CHUNK, DONE],
    "no_done": [CHUNK, CHUNK],
    "error_event": [CHUNK, b'data: {"error":{"message":"engine died","code":500}}\n\n', DONE],
}


@pytest.fixture
async def sse_url() -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        script = SCRIPTS[request.match_info["name"]]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for piece in script:
                await asyncio.sleep(GAP_S)
                await response.write(piece)
        except ConnectionResetError:
            pass  # the client gave up (the timeout test)
        return response

    async def limited(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "slow down"}}, status=429)

    async def whole(request: web.Request) -> web.Response:
        body = b'{"choices":[{"message":{"content":"a b"}}],"usage":{"prompt_tokens":4,"completion_tokens":2}}'
        await asyncio.sleep(GAP_S)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/limited", limited)
    app.router.add_post("/whole", whole)
    app.router.add_post("/sse/{name}", handler)
    async with serving(app) as url:
        yield url


async def _send(url: str, stream: bool = True):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as session:
        return await send_request(session, url, b"{}", {}, stream)


@pytest.mark.parametrize("name", ["whole", "split", "crlf"])
async def test_content_chunks_are_timed_and_usage_is_read(sse_url: str, name: str) -> None:
    outcome = await _send(f"{sse_url}/sse/{name}")
    assert outcome.error == "", outcome.detail
    assert outcome.output_tokens == 3 and outcome.input_tokens == 7 and outcome.from_usage
    # Three content chunks: the first is TTFT, then two gaps; usage and [DONE] are not tokens.
    assert len(outcome.itls_s) == 2
    assert outcome.ttft_s >= GAP_S * 0.5
    assert outcome.end >= outcome.sent + outcome.ttft_s + sum(outcome.itls_s) - 1e-9


async def test_without_usage_the_chunks_are_counted(sse_url: str) -> None:
    outcome = await _send(f"{sse_url}/sse/no_usage")
    assert outcome.error == ""
    assert outcome.output_tokens == 4 and not outcome.from_usage and outcome.input_tokens is None
    assert len(outcome.itls_s) == 3
    assert all(gap >= GAP_S * 0.5 for gap in outcome.itls_s)


async def test_broken_streams_are_stream_errors(sse_url: str) -> None:
    cut = await _send(f"{sse_url}/sse/no_done")
    assert cut.error == "stream_error" and "[DONE]" in cut.detail
    failed = await _send(f"{sse_url}/sse/error_event")
    assert failed.error == "stream_error" and failed.detail == "engine died"


async def test_http_errors_keep_their_status_and_body(sse_url: str) -> None:
    outcome = await _send(f"{sse_url}/limited")
    assert outcome.error == "http_429" and "slow down" in outcome.detail


async def test_whole_responses_read_usage(sse_url: str) -> None:
    outcome = await _send(f"{sse_url}/whole", stream=False)
    assert outcome.error == ""
    assert outcome.output_tokens == 2 and outcome.input_tokens == 4 and outcome.from_usage
    assert outcome.ttft_s == pytest.approx(outcome.end - outcome.sent)


async def test_refused_connections_are_connect_errors(unused_tcp_port: int) -> None:
    outcome = await _send(f"http://127.0.0.1:{unused_tcp_port}/v1/chat/completions")
    assert outcome.error == "connect"


async def test_timeouts_are_their_own_class(sse_url: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=GAP_S)) as session:
        outcome = await send_request(session, f"{sse_url}/sse/whole", b"{}", {}, True)
    assert outcome.error == "timeout"
