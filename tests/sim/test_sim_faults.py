"""Failure injection on a real sim: seeded 500s, error/hang/stall modes, cut streams, shutdown."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from llmops.openai import SSEParser
from llmops.sim import SimOptions, running_sim

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "one two three"}]}


async def set_mode(http: aiohttp.ClientSession, url: str, **body: Any) -> dict[str, Any]:
    async with http.post(f"{url}/sim/mode", json=body) as response:
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def chat_status(http: aiohttp.ClientSession, url: str, **extra: Any) -> int:
    async with http.post(f"{url}/v1/chat/completions", json={**CHAT, **extra}) as response:
        await response.read()
        return response.status


async def test_fail_rate_answers_a_seeded_fraction_with_500(start_sim, http) -> None:
    sims = [await start_sim(fail_rate=0.3, seed=7, ttft_ms=1, itl_ms=1, output_len=1) for _ in "ab"]
    patterns = []
    for sim in sims:
        patterns.append([await chat_status(http, sim.url) for _ in range(60)])
    assert patterns[0] == patterns[1]  # same seed, same failures
    assert set(patterns[0]) == {200, 500}
    assert 8 <= patterns[0].count(500) <= 30
    async with http.post(f"{sims[0].url}/v1/embeddings", json={"input": "x"}) as response:
        assert response.status in (200, 500)
    stats = await (await http.get(f"{sims[1].url}/sim/stats")).json()
    assert stats["errors"] == patterns[1].count(500)


async def test_error_mode_fails_inference_but_not_health(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=1, itl_ms=1, output_len=1)
    assert (await set_mode(http, sim.url, mode="error"))["mode"] == "error"
    async with http.post(f"{sim.url}/v1/chat/completions", json=CHAT) as response:
        assert (response.status, response.content_type) == (500, "application/json")
        assert (await response.json())["error"]["type"] == "server_error"
    async with http.get(f"{sim.url}/health") as response:
        assert response.status == 200
    await set_mode(http, sim.url, mode="ok")
    assert await chat_status(http, sim.url) == 200


async def test_hang_mode_holds_requests_until_the_mode_changes(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=1, itl_ms=1, output_len=2)
    await set_mode(http, sim.url, mode="hang")
    pending = [
        asyncio.create_task(_status(http.get(f"{sim.url}/health"))),
        asyncio.create_task(_status(http.get(f"{sim.url}/v1/models"))),
        asyncio.create_task(chat_status(http, sim.url)),
    ]
    done, _ = await asyncio.wait(pending, timeout=0.3)
    assert not done  # nobody got an answer
    async with http.get(f"{sim.url}/metrics") as response:
        assert response.status == 200  # /metrics and the admin endpoints still answer
    assert (await set_mode(http, sim.url, mode="ok"))["mode"] == "ok"
    assert await asyncio.gather(*pending) == [200, 200, 200]  # served once it recovers


async def _status(request: Any) -> int:
    async with request as response:
        await response.read()
        return int(response.status)


async def test_stall_mode_sends_headers_then_no_tokens(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=5, itl_ms=5)
    await set_mode(http, sim.url, mode="stall")
    async with http.get(f"{sim.url}/health") as response:
        assert response.status == 200
    body = {**CHAT, "stream": True, "max_tokens": 3}
    async with http.post(f"{sim.url}/v1/chat/completions", json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(response.content.readany(), timeout=0.3)
        assert sim.engine.snapshot().generation_tokens_total == 0
        await set_mode(http, sim.url, mode="ok")
        rest = await response.content.read()
    assert rest.endswith(b"data: [DONE]\n\n")
    assert rest.count(b'"content":') == 1 + 3  # role chunk + 3 tokens


@pytest.mark.parametrize("cut_after", [0, 3])
async def test_abort_after_tokens_cuts_streams_like_a_dying_engine(
    start_sim, http, cut_after
) -> None:
    sim = await start_sim(ttft_ms=1, itl_ms=2)
    await set_mode(http, sim.url, mode="ok", abort_after_tokens=cut_after)
    parser = SSEParser()
    events: list[bytes] = []
    body = {**CHAT, "stream": True, "max_tokens": 20, "ignore_eos": True}
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{sim.url}/v1/chat/completions", json=body) as response:
            assert response.status == 200
            async for chunk in response.content.iter_any():
                events.extend(parser.feed(chunk))
    payloads = [orjson.loads(data) for data in events]
    # The role chunk and N tokens; then the connection closed: no finish chunk, no [DONE].
    contents = [p["choices"][0]["delta"]["content"] for p in payloads]
    assert [text != "" for text in contents] == ([False] + [True] * cut_after if cut_after else [])
    assert all(p["choices"][0]["finish_reason"] is None for p in payloads)
    await asyncio.sleep(0.05)
    assert (await (await http.get(f"{sim.url}/sim/stats")).json())["aborted"] == 1
    # Non-streaming requests are not cut.
    sim.set_mode("ok")  # the in-process way to switch modes
    assert await chat_status(http, sim.url, max_tokens=5) == 200
    sim.set_mode("ok", abort_after_tokens=cut_after)
    assert await chat_status(http, sim.url, max_tokens=5) == 200


@pytest.mark.parametrize(
    "body",
    [b"nope", b"[]", b'{"mode": "broken"}', b'{"mode": "ok", "abort_after_tokens": -1}'],
)
async def test_bad_mode_requests_are_rejected(start_sim, http, body) -> None:
    sim = await start_sim()
    async with http.post(f"{sim.url}/sim/mode", data=body) as response:
        assert (response.status, response.content_type) == (400, "application/json")
    assert (await (await http.get(f"{sim.url}/sim/stats")).json())["mode"] == "ok"


async def test_starting_in_a_mode_from_options(start_sim, http) -> None:
    sim = await start_sim(mode="error")
    assert await chat_status(http, sim.url) == 500


async def test_shutdown_with_open_streams_and_hung_requests_is_prompt(http) -> None:
    options = SimOptions(port=0, ttft_ms=1, itl_ms=5)
    body = {**CHAT, "stream": True, "max_tokens": 10_000, "ignore_eos": True}
    async with running_sim(options) as sim:
        streams = [asyncio.create_task(_drain(http, sim.url, body)) for _ in range(5)]
        while sim.engine.snapshot().running < 5:
            await asyncio.sleep(0.01)
        await set_mode(http, sim.url, mode="hang")
        hung = asyncio.create_task(_status(http.get(f"{sim.url}/health")))
        await asyncio.sleep(0.05)
        started = time.monotonic()
    assert time.monotonic() - started < 2.0
    results = await asyncio.gather(*streams, hung, return_exceptions=True)
    # Streams were cut (no [DONE]); the hung request got an answer or a closed connection.
    assert all(result is not True for result in results[:5])
    assert sim.engine.snapshot().running == 0
    assert sim.engine.snapshot().finished["abort"] == 5


async def _drain(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> bool:
    """Read a stream to its end; True if it ended with [DONE]."""
    async with http.post(f"{url}/v1/chat/completions", json=body) as response:
        data = await response.content.read()
    return data.endswith(b"data: [DONE]\n\n")
