"""The sim's HTTP surface against a real sim on port 0: shapes, streams, usage, errors."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from typing import Any

import aiohttp
import orjson
import pytest

from llmops.openai import SSEParser

CHAT = {"model": "sim-model", "messages": [{"role": "user", "content": "one two three"}]}
COMPLETION = {"model": "sim-model", "prompt": "one two three four"}


async def read_events(response: aiohttp.ClientResponse) -> list[tuple[float, bytes]]:
    """Every SSE data payload of a stream with the time it arrived."""
    parser = SSEParser()
    events: list[tuple[float, bytes]] = []
    async for chunk in response.content.iter_any():
        now = time.perf_counter()
        events.extend((now, data) for data in parser.feed(chunk))
    return events


async def stream(
    http: aiohttp.ClientSession, url: str, path: str, body: dict[str, Any]
) -> tuple[aiohttp.ClientResponse, list[tuple[float, bytes]]]:
    async with http.post(f"{url}{path}", json={**body, "stream": True}) as response:
        return response, await read_events(response)


async def post_json(
    http: aiohttp.ClientSession, url: str, body: Any, path: str = "/v1/chat/completions"
) -> tuple[int, str, dict[str, Any]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(f"{url}{path}", data=data) as response:
        return response.status, response.content_type, orjson.loads(await response.read())


async def test_chat_stream_is_one_chunk_per_token_spread_over_time(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=30, itl_ms=20)
    body = {**CHAT, "max_tokens": 10, "ignore_eos": True, "stream_options": {"include_usage": True}}
    response, events = await stream(http, sim.url, "/v1/chat/completions", body)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    payloads = [orjson.loads(data) for _, data in events[:-1]]
    assert events[-1][1] == b"[DONE]"
    # role chunk, 10 token chunks, finish chunk, usage chunk
    assert len(payloads) == 13
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = payloads[1:11]
    assert all(p["choices"][0]["delta"]["content"].endswith(" ") for p in tokens)
    assert all(p["choices"][0]["finish_reason"] is None for p in tokens)
    assert payloads[11]["choices"][0]["finish_reason"] == "length"
    assert payloads[12]["choices"] == []
    assert payloads[12]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 10,
        "total_tokens": 13,
    }
    assert {p["id"] for p in payloads} == {payloads[0]["id"]}
    assert payloads[0]["id"].startswith("chatcmpl-")
    assert all(
        p["object"] == "chat.completion.chunk" and p["model"] == "sim-model" for p in payloads
    )
    # Paced: the 10 tokens span ~9 steps of 20 ms, not one burst at the end.
    token_times = [at for at, _ in events[1:11]]
    assert token_times[-1] - token_times[0] > 0.5 * 9 * 0.020


async def test_completion_stream_without_usage_option_has_no_usage_chunk(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=1, itl_ms=1, output_len=4)
    _, events = await stream(http, sim.url, "/v1/completions", COMPLETION)
    payloads = [orjson.loads(data) for _, data in events[:-1]]
    assert events[-1][1] == b"[DONE]"
    assert len(payloads) == 5  # 4 tokens (completions have no role chunk) + finish chunk
    assert all(p["object"] == "text_completion" and p["id"].startswith("cmpl-") for p in payloads)
    assert [p["choices"][0]["text"] != "" for p in payloads] == [True] * 4 + [False]
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in p for p in payloads)


async def test_non_streaming_chat_shape_and_usage(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=1, itl_ms=1, output_len=6)
    status, content_type, body = await post_json(http, sim.url, CHAT)
    assert (status, content_type) == (200, "application/json")
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "sim-model"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 6
    assert choice["finish_reason"] == "stop"  # the simulated EOS at --output-len
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}


@pytest.mark.parametrize(
    ("extra", "tokens", "finish_reason"),
    [
        ({}, 6, "stop"),
        ({"max_tokens": 3}, 3, "length"),
        ({"max_tokens": 50}, 6, "stop"),
        ({"max_tokens": 9, "ignore_eos": True}, 9, "length"),
        ({"max_completion_tokens": 2, "max_tokens": 5}, 2, "length"),
    ],
)
async def test_output_length_rules(start_sim, http, extra, tokens, finish_reason) -> None:
    sim = await start_sim(ttft_ms=1, itl_ms=1, output_len=6)
    _, _, body = await post_json(http, sim.url, {**CHAT, **extra})
    assert body["usage"]["completion_tokens"] == tokens
    assert len(body["choices"][0]["message"]["content"].split()) == tokens
    assert body["choices"][0]["finish_reason"] == finish_reason


async def test_completions_count_prompt_words_and_token_ids(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=1, itl_ms=1, output_len=2)
    path = "/v1/completions"
    for prompt, expected in [("a b  c\nd", 4), (["a b", "c"], 3), ([5, 6, 7, 8, 9], 5)]:
        status, _, body = await post_json(http, sim.url, {"prompt": prompt}, path)
        assert status == 200
        assert body["object"] == "text_completion"
        assert body["id"].startswith("cmpl-")
        assert body["usage"]["prompt_tokens"] == expected
        assert len(body["choices"][0]["text"].split()) == 2


async def test_generated_text_is_deterministic_per_prompt_and_seed(start_sim, http) -> None:
    a, b, other_seed = [await start_sim(ttft_ms=1, itl_ms=1, seed=s) for s in (1, 1, 2)]

    async def text(sim: Any, content: str) -> str:
        body = {"messages": [{"role": "user", "content": content}], "max_tokens": 12}
        _, _, answer = await post_json(http, sim.url, body)
        return str(answer["choices"][0]["message"]["content"])

    assert await text(a, "hello") == await text(b, "hello") == await text(a, "hello")
    assert await text(a, "hello") != await text(other_seed, "hello")
    assert await text(a, "hello") != await text(a, "goodbye")


async def test_embeddings_are_deterministic_unit_vectors(start_sim, http) -> None:
    sim = await start_sim(embedding_dim=16)
    path = "/v1/embeddings"
    status, content_type, body = await post_json(http, sim.url, {"input": ["a b", "c"]}, path)
    assert (status, content_type) == (200, "application/json")
    assert body["object"] == "list"
    assert [d["index"] for d in body["data"]] == [0, 1]
    vectors = [d["embedding"] for d in body["data"]]
    assert all(len(v) == 16 for v in vectors)
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-9 for v in vectors)
    assert vectors[0] != vectors[1]
    assert body["usage"]["prompt_tokens"] == 3
    _, _, single = await post_json(http, sim.url, {"input": "a b"}, path)
    assert single["data"][0]["embedding"] == vectors[0]
    _, _, encoded = await post_json(
        http, sim.url, {"input": "a b", "encoding_format": "base64"}, path
    )
    decoded = struct.unpack("<16f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert all(abs(x - y) < 1e-6 for x, y in zip(decoded, vectors[0], strict=True))


async def test_models_and_health_look_like_vllm(start_sim, http) -> None:
    sim = await start_sim(model="qwen", kv_cache_tokens=4096)
    async with http.get(f"{sim.url}/v1/models") as response:
        assert response.content_type == "application/json"
        models = await response.json()
    assert models["object"] == "list"
    (card,) = models["data"]
    assert card["id"] == card["root"] == "qwen"
    assert card["object"] == "model"
    assert card["owned_by"] == "vllm"
    assert card["max_model_len"] == 4096
    async with http.get(f"{sim.url}/health") as response:
        assert (response.status, await response.read()) == (200, b"")
    async with http.get(f"{sim.url}/get_model_info") as response:
        assert response.status == 404  # SGLang-only
        assert (await response.json())["error"]["type"] == "not_found_error"


async def test_sglang_flavour_endpoints(start_sim, http) -> None:
    sim = await start_sim(model="qwen", engine="sglang", ttft_ms=5)
    async with http.get(f"{sim.url}/v1/models") as response:
        assert (await response.json())["data"][0]["owned_by"] == "sglang"
    async with http.get(f"{sim.url}/get_model_info") as response:
        info = await response.json()
    assert info["model_path"] == "qwen"
    assert info["is_generation"] is True
    async with http.get(f"{sim.url}/health_generate") as response:
        assert response.status == 200
    assert sim.engine.snapshot().generation_tokens_total == 1  # it really ran one token


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        ("/v1/chat/completions", b"[1, 2]", 400, "JSON object"),
        (
            "/v1/chat/completions",
            {**CHAT, "model": "gpt-x"},
            404,
            "The model `gpt-x` does not exist.",
        ),
        ("/v1/chat/completions", {**CHAT, "model": 7}, 400, "`model` must be a string"),
        ("/v1/chat/completions", {"model": "sim-model"}, 400, "`messages`"),
        ("/v1/chat/completions", {"messages": ["hi"]}, 400, "every message"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, 400, "`max_tokens`"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": "5"}, 400, "`max_tokens`"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 40000}, 400, "maximum context length"),
        ("/v1/chat/completions", {**CHAT, "stream": "yes"}, 400, "`stream`"),
        ("/v1/completions", {"model": "sim-model"}, 400, "`prompt` is required"),
        ("/v1/completions", {"prompt": {"a": 1}}, 400, "`prompt` must be"),
        ("/v1/embeddings", {"input": 5}, 400, "`input` must be"),
        ("/v1/embeddings", {"input": "a", "model": "other"}, 404, "does not exist"),
    ],
)
async def test_bad_requests_get_openai_shaped_errors(
    start_sim, http, path, body, status, message
) -> None:
    sim = await start_sim()
    got_status, content_type, answer = await post_json(http, sim.url, body, path)
    assert (got_status, content_type) == (status, "application/json")
    assert message in answer["error"]["message"]
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == (
        "not_found_error" if status == 404 else "invalid_request_error"
    )
    # The sim keeps serving afterwards.
    ok_status, _, _ = await post_json(http, sim.url, {**CHAT, "max_tokens": 1})
    assert ok_status == 200


async def test_wrong_method_and_unknown_path_are_openai_shaped(start_sim, http) -> None:
    sim = await start_sim()
    async with http.get(f"{sim.url}/v1/chat/completions") as response:
        assert (response.status, response.content_type) == (405, "application/json")
        assert response.headers["Allow"] == "POST"
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    async with http.post(f"{sim.url}/v1/models") as response:
        assert response.status == 405
    async with http.get(f"{sim.url}/v2/nothing") as response:
        assert (response.status, response.content_type) == (404, "application/json")
    stats = await (await http.get(f"{sim.url}/sim/stats")).json()
    assert stats["errors"] == 3
    assert stats["by_path"]["/v1/chat/completions"] == 1


async def test_vllm_metrics_count_tokens_and_finish_reasons(start_sim, http) -> None:
    sim = await start_sim(model="m", ttft_ms=1, itl_ms=1, output_len=4)
    chat = {**CHAT, "model": "m"}
    await post_json(http, sim.url, chat)  # 3 prompt + 4 output, stop
    await post_json(http, sim.url, {**chat, "max_tokens": 2})  # 3 + 2, length
    await stream(http, sim.url, "/v1/chat/completions", {**chat, "max_tokens": 1})  # 3 + 1
    async with http.get(f"{sim.url}/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    labels = 'engine="0",model_name="m"'
    for line in [
        f"vllm:num_requests_running{{{labels}}} 0.0",
        f"vllm:num_requests_waiting{{{labels}}} 0.0",
        f"vllm:kv_cache_usage_perc{{{labels}}} 0.0",
        f"vllm:prompt_tokens_total{{{labels}}} 9.0",
        f"vllm:generation_tokens_total{{{labels}}} 7.0",
        'vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 1.0',
        'vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 2.0',
        'vllm:request_success_total{engine="0",finished_reason="abort",model_name="m"} 0.0',
        f"vllm:time_to_first_token_seconds_count{{{labels}}} 3.0",
        'vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 3.0',
        f"vllm:e2e_request_latency_seconds_count{{{labels}}} 3.0",
        "# TYPE vllm:request_success_total counter",
        "# TYPE vllm:time_to_first_token_seconds histogram",
    ]:
        assert line in text.splitlines(), line


async def test_sglang_metric_names(start_sim, http) -> None:
    sim = await start_sim(model="m", engine="sglang", ttft_ms=1, itl_ms=1, output_len=2)
    await post_json(http, sim.url, {**CHAT, "model": "m"})
    text = await (await http.get(f"{sim.url}/metrics")).text()
    lines = text.splitlines()
    for line in [
        'sglang:num_running_reqs{model_name="m"} 0.0',
        'sglang:num_queue_reqs{model_name="m"} 0.0',
        'sglang:token_usage{model_name="m"} 0.0',
        'sglang:prompt_tokens_total{model_name="m"} 3.0',
        'sglang:generation_tokens_total{model_name="m"} 2.0',
        'sglang:num_requests_total{model_name="m"} 1.0',
        'sglang:num_aborted_requests_total{model_name="m"} 0.0',
        'sglang:time_to_first_token_seconds_count{model_name="m"} 1.0',
    ]:
        assert line in lines, line
    assert not any(line.startswith("vllm:") for line in lines)


async def test_stats_count_requests_by_path(start_sim, http) -> None:
    sim = await start_sim(ttft_ms=1, itl_ms=1, output_len=1)
    await asyncio.gather(*(post_json(http, sim.url, CHAT) for _ in range(3)))
    await http.get(f"{sim.url}/health")
    stats = await (await http.get(f"{sim.url}/sim/stats")).json()
    assert stats["requests"] == 3
    assert stats["completed"] == 3
    assert (stats["running"], stats["waiting"], stats["aborted"], stats["errors"]) == (0, 0, 0, 0)
    assert stats["mode"] == "ok"
    assert stats["by_path"]["/v1/chat/completions"] == 3
    assert stats["by_path"]["/health"] == 1


async def test_api_key_guards_the_openai_endpoints_like_vllm(start_sim, http) -> None:
    sim = await start_sim(api_key="s3cret", ttft_ms=1, itl_ms=1, output_len=1)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        async with http.post(f"{sim.url}/v1/chat/completions", json=CHAT, headers=headers) as r:
            assert (r.status, r.content_type) == (401, "application/json")
            assert (await r.json())["error"]["type"] == "authentication_error"
        async with http.get(f"{sim.url}/v1/models", headers=headers) as r:
            assert r.status == 401
    good = {"Authorization": "Bearer s3cret"}
    async with http.post(f"{sim.url}/v1/chat/completions", json=CHAT, headers=good) as r:
        assert r.status == 200
    for path in ("/health", "/metrics"):  # like vLLM, only /v1/* needs the key
        async with http.get(f"{sim.url}{path}") as r:
            assert r.status == 200
    assert sim.engine.snapshot().finished["stop"] == 1  # refused requests never ran
