"""Sliding windows and local rate-limit decisions on a fake clock; the usage tap on streams."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.config.router import LimitsConfig
from llmops.openai import SSEParser
from llmops.router.limits import Limiter, LocalWindows, key_subject
from llmops.router.stream_usage import UsageTap, ask_for_usage
from llmops.router.windows import BucketCounter, SampleWindow, p50_p95, percentile


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=7.0), min_size=1, max_size=300),
    limit=st.integers(min_value=1, max_value=20),
)
def test_a_limit_is_never_exceeded_in_any_window(gaps: list[float], limit: int) -> None:
    window_s = 60.0
    windows = LocalWindows(window_s)
    now = 1000.0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        if windows.admit(now, "backend", "b", limit, None) is None:
            admitted.append(now)
    # Every window of 60 s that ends at an admission holds at most ``limit`` admissions.
    for index, end in enumerate(admitted):
        inside = [t for t in admitted[: index + 1] if t > end - window_s]
        assert len(inside) <= limit


def test_rpm_60_admits_60_then_refuses_with_a_retry_after_and_frees_up() -> None:
    windows = LocalWindows(60.0)
    now = 10_000.0
    for i in range(60):
        assert windows.admit(now + i * 0.1, "backend", "b", 60, None) is None
    refused = windows.admit(now + 6.5, "backend", "b", 60, None)
    assert refused is not None
    assert refused.kind == "requests" and refused.limit == 60 and refused.used == 60
    assert 53 <= refused.retry_after_s <= 62  # when the first second's bucket leaves
    later = now + 6.5 + refused.retry_after_s + 0.01
    assert windows.admit(later, "backend", "b", 60, None) is None
    headers = refused.headers()
    assert headers["Retry-After"] == str(int(-(-refused.retry_after_s // 1)))
    assert headers["x-ratelimit-limit-requests"] == "60"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_tpm_refuses_once_used_tokens_reach_the_limit() -> None:
    windows = LocalWindows(60.0)
    assert windows.admit(0.0, "key", "k", None, 100) is None
    windows.add_tokens(1.0, "key", "k", 99)
    assert windows.admit(2.0, "key", "k", None, 100) is None  # 99 used: one more may start
    windows.add_tokens(3.0, "key", "k", 5)
    refused = windows.admit(4.0, "key", "k", None, 100)
    assert refused is not None and refused.kind == "tokens" and refused.used == 104


def test_bucket_counter_rates_and_expiry() -> None:
    counter = BucketCounter(60.0, 60)
    for second in range(30):
        counter.add(100.0 + second, 2)
    assert counter.total(129.5) == 60
    assert counter.recent(129.5, 10) == 20
    assert counter.total(100.0 + 30 + 61) == 0  # all gone a window later
    counter.add(500.0, 1)
    assert counter.total(500.0) == 1


def test_percentiles_over_the_window_only() -> None:
    window = SampleWindow(window_s=10.0, capacity=100)
    for i in range(20):
        window.add(float(i), float(i))
    assert window.values(19.0) == [float(i) for i in range(9, 20)]
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert p50_p95([]) == {"p50": None, "p95": None}
    values = [float(v) for v in random.Random(1).sample(range(1, 101), 100)]
    assert p50_p95(values) == {"p50": 50.0, "p95": 95.0}


async def test_limiter_key_limits_and_decision_counts() -> None:
    clock = [0.0]
    limiter = Limiter(LimitsConfig(key_rpm=2), clock=lambda: clock[0])
    assert limiter.mode == "local"
    assert await limiter.admit_key("Bearer a") is None
    assert await limiter.admit_key("Bearer a") is None
    limited = await limiter.admit_key("Bearer a")
    assert limited is not None and limited.scope == "key"
    assert await limiter.admit_key("Bearer b") is None  # each key has its own window
    assert limiter.decisions == {("key", False): 3, ("key", True): 1}
    assert key_subject("Bearer secret") != "Bearer secret"  # secrets never name a window


def test_ask_for_usage_only_on_streams_that_did_not_ask() -> None:
    chat = "/v1/chat/completions"
    plain = {"model": "m", "stream": True}
    parsed, body, added = ask_for_usage(chat, plain, b"original")
    assert added and orjson.loads(body)["stream_options"] == {"include_usage": True}
    assert parsed["stream_options"] == {"include_usage": True}
    asked = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    assert ask_for_usage(chat, asked, b"original") == (asked, b"original", False)
    assert ask_for_usage(chat, {"model": "m"}, b"original") == ({"model": "m"}, b"original", False)
    # The Responses API has no stream_options: its body is left alone.
    assert ask_for_usage("/v1/responses", plain, b"original") == (plain, b"original", False)


def _stream(with_usage: bool) -> bytes:
    head = '{"id":"c","object":"chat.completion.chunk","model":"m",'
    events = [
        head + '"choices":[{"index":0,"delta":{"content":"hi \\"usage\\":{"}}]}',
        head + '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
    ]
    if with_usage:
        events.append(
            head
            + '"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}'
        )
    return b"".join(b"data: " + e.encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("strip", [True, False])
def test_usage_tap_finds_usage_across_any_chunking_and_strips_only_its_own(strip: bool) -> None:
    raw = _stream(with_usage=True)
    rng = random.Random(2)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(raw)), 6))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        tap = UsageTap(strip=strip)
        forwarded = b"".join(tap.feed(p) for p in pieces) + tap.flush()
        assert tap.usage is not None and tap.usage.total_tokens == 10
        expected = _stream(with_usage=False) if strip else raw
        assert forwarded == expected
        payloads = SSEParser().feed(forwarded)
        assert payloads[-1] == b"[DONE]"


async def test_workers_sharing_a_port_each_enforce_their_part_of_a_local_limit() -> None:
    limiter = Limiter(LimitsConfig(key_rpm=10))
    limiter.local_share = 1 / 4  # what each of 4 workers enforces without Redis
    admitted = [await limiter.admit_key("Bearer k") for _ in range(5)]
    assert [v is None for v in admitted] == [True, True, False, False, False]  # 10 // 4
