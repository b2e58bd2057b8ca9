"""The sim's pure pieces: tokenizer contract, request rules, histogram, metrics text, engine."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from llmops.errors import SimError
from llmops.sim import SimOptions, count_prompt_tokens
from llmops.sim.bodies import StreamChunks, embedding_vector
from llmops.sim.engine import Engine, SeqState, Sequence
from llmops.sim.histogram import Histogram
from llmops.sim.metrics import render_metrics
from llmops.sim.requests import RequestError, parse_generation
from llmops.sim.tokens import chat_prompt_text, completion_prompt_text, generated_words


@pytest.mark.parametrize(
    ("text", "tokens"),
    [("", 0), ("one", 1), ("  one   two\tthree\nfour ", 4), ("w " * 1000, 1000)],
)
def test_one_token_per_whitespace_separated_word(text: str, tokens: int) -> None:
    assert count_prompt_tokens(text) == tokens


def test_chat_text_joins_string_and_text_part_contents() -> None:
    messages: list[object] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a b"}, {"type": "image_url"}]},
        {"role": "assistant", "content": None},
    ]
    text = chat_prompt_text(messages)
    assert text is not None
    assert count_prompt_tokens(text) == 4
    assert chat_prompt_text(["not a dict"]) is None
    assert chat_prompt_text([{"content": 5}]) is None


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [("a b", 2), (["a b", "c"], 3), ([1, 2, 3], 3), ([[1, 2], [3]], 3)],
)
def test_completion_prompt_forms(prompt: object, tokens: int) -> None:
    text = completion_prompt_text(prompt)
    assert text is not None
    assert count_prompt_tokens(text) == tokens


@pytest.mark.parametrize("prompt", [None, 5, [], [True], ["a", 1], {"a": 1}])
def test_invalid_completion_prompts(prompt: object) -> None:
    assert completion_prompt_text(prompt) is None


def test_generated_words_are_seeded_and_one_per_token() -> None:
    words = generated_words(3, "hello", 50)
    assert len(words) == 50
    assert all(w.endswith(" ") and count_prompt_tokens(w) == 1 for w in words)
    assert words == generated_words(3, "hello", 50)
    assert words != generated_words(4, "hello", 50)


def _parse(body: dict[str, object], **options: object) -> tuple[int, str]:
    parsed = parse_generation(orjson.dumps(body), "chat", SimOptions(**options))
    return parsed.output_tokens, parsed.finish_reason


def test_output_length_without_max_tokens_is_capped_by_the_context() -> None:
    body = {"messages": [{"content": "w " * 90}]}
    assert _parse(body, output_len=20, kv_cache_tokens=1000) == (20, "stop")
    assert _parse(body, output_len=20, kv_cache_tokens=1000, max_model_len=100) == (10, "length")
    with pytest.raises(RequestError) as error:
        _parse(body, max_model_len=90)
    assert error.value.status == 400


def test_sim_options_report_every_problem() -> None:
    with pytest.raises(SimError) as error:
        SimOptions(port=70000, itl_ms=0, fail_rate=-1, max_model_len=10, kv_cache_tokens=5)
    message = str(error.value)
    for part in ["port", "itl_ms", "fail_rate", "max_model_len"]:
        assert part in message
    assert SimOptions(kv_cache_tokens=1000).context_len == 1000
    assert SimOptions().context_len == 32768


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 2.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.cumulative_counts == (2, 3, 4)  # le=0.1 includes 0.1 itself
    assert snapshot.count == 4
    assert snapshot.total == pytest.approx(2.65)


def test_metrics_text_escapes_label_values() -> None:
    engine = Engine(SimOptions())
    text = render_metrics("vllm", 'a"b\\c', engine.snapshot())
    assert 'vllm:num_requests_running{engine="0",model_name="a\\"b\\\\c"} 0.0' in text.splitlines()
    assert text.endswith("\n")


def test_stream_chunks_are_valid_json_for_any_word() -> None:
    chunks = StreamChunks("chat", 'we"ird\nmodel', 123)
    for word in ['quote" ', "back\\slash ", "ünï ", "\n"]:
        event = chunks.token(word)
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        payload = orjson.loads(event[6:])
        assert payload["choices"][0]["delta"]["content"] == word
        assert payload["model"] == 'we"ird\nmodel'


def test_embedding_vectors_are_deterministic_and_normalised() -> None:
    vector = embedding_vector("x", 64)
    assert vector == embedding_vector("x", 64)
    assert vector != embedding_vector("y", 64)
    assert sum(v * v for v in vector) == pytest.approx(1.0)


async def test_engine_accounting_returns_to_zero_after_finish_and_aborts() -> None:
    engine = Engine(SimOptions(ttft_ms=5, itl_ms=2, kv_cache_tokens=1000))
    engine.start()
    try:
        single = Sequence(prompt_tokens=4, target_tokens=1, finish_reason="length")
        longer = Sequence(prompt_tokens=4, target_tokens=5, finish_reason="stop")
        aborted_in_prefill = Sequence(prompt_tokens=4, target_tokens=50, finish_reason="stop")
        for seq in (single, longer, aborted_in_prefill):
            engine.submit(seq)
        await asyncio.sleep(0)
        engine.abort(aborted_in_prefill)
        await asyncio.wait_for(asyncio.gather(single.wait_done(), longer.wait_done()), 2)
        assert (single.state, single.generated) == (SeqState.FINISHED, 1)
        assert (longer.state, longer.generated) == (SeqState.FINISHED, 5)
        assert aborted_in_prefill.state is SeqState.ABORTED
        snapshot = engine.snapshot()
        assert (snapshot.running, snapshot.waiting, snapshot.kv_used_tokens) == (0, 0, 0)
        assert snapshot.finished == {"stop": 1, "length": 1, "abort": 1}
        assert snapshot.prompt_tokens_total == 12
        assert snapshot.generation_tokens_total == 6
    finally:
        await engine.close()


async def test_paused_engine_produces_nothing_until_resumed() -> None:
    engine = Engine(SimOptions(ttft_ms=1, itl_ms=1))
    engine.start()
    try:
        engine.pause()
        seq = Sequence(prompt_tokens=1, target_tokens=3, finish_reason="length")
        engine.submit(seq)
        await asyncio.sleep(0.05)
        assert seq.generated == 0
        engine.resume()
        await asyncio.wait_for(seq.wait_done(), 2)
        assert seq.generated == 3
    finally:
        await engine.close()


async def test_closing_the_engine_aborts_every_sequence() -> None:
    engine = Engine(SimOptions(ttft_ms=1, itl_ms=1, max_num_seqs=1))
    engine.start()
    running = Sequence(prompt_tokens=1, target_tokens=10_000, finish_reason="length")
    waiting = Sequence(prompt_tokens=1, target_tokens=10, finish_reason="length")
    engine.submit(running)
    engine.submit(waiting)
    await asyncio.sleep(0.02)
    await engine.close()
    assert running.state is waiting.state is SeqState.ABORTED
    assert engine.snapshot().finished["abort"] == 2
