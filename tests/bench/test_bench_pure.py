"""The pure parts of bench: schedules, workloads, metric math, sketches, options, compare."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path

import orjson
import pytest

from llmops.bench.arrivals import (
    closed_loop_start_offsets,
    open_loop_offsets,
    split_evenly,
    split_round_robin,
)
from llmops.bench.compare import compare_rows, compare_text
from llmops.bench.health import client_health
from llmops.bench.histogram import LogHistogram
from llmops.bench.metrics import calculate_metrics, peak_in_flight, percentile, std
from llmops.bench.options import BenchOptions, check_options, parse_goodput, parse_percentiles
from llmops.bench.records import RequestRecords, error_family
from llmops.bench.worker import WorkerHealth
from llmops.bench.workload import PooledBodies, RandomBodies, body_source
from llmops.errors import BenchError

# --- arrivals -------------------------------------------------------------------------------


def test_fixed_count_schedule_ends_exactly_at_n_over_rate_like_vllm() -> None:
    offsets = open_loop_offsets(50.0, num_requests=500, seed=1)
    assert len(offsets) == 500
    assert offsets[-1] == pytest.approx(500 / 50.0)
    assert all(b >= a for a, b in itertools.pairwise(offsets))
    assert offsets[0] > 0  # the first request also waits for its drawn gap


def test_poisson_gaps_are_exponential_and_gamma_burstiness_changes_their_spread() -> None:
    def gap_cv(offsets: list[float]) -> float:
        gaps = [b - a for a, b in itertools.pairwise(offsets)]
        return statistics.pstdev(gaps) / statistics.mean(gaps)

    poisson = list(open_loop_offsets(100.0, num_requests=20000, seed=3))
    bursty = list(open_loop_offsets(100.0, arrival="gamma", burstiness=0.25, num_requests=20000))
    smooth = list(open_loop_offsets(100.0, arrival="gamma", burstiness=4.0, num_requests=20000))
    # The coefficient of variation of gamma gaps is 1/sqrt(shape).
    assert gap_cv(poisson) == pytest.approx(1.0, rel=0.05)
    assert gap_cv(bursty) == pytest.approx(2.0, rel=0.08)
    assert gap_cv(smooth) == pytest.approx(0.5, rel=0.05)


def test_constant_arrivals_are_evenly_spaced() -> None:
    offsets = open_loop_offsets(4.0, arrival="constant", num_requests=8)
    assert list(offsets) == pytest.approx([0.25 * (i + 1) for i in range(8)])


def test_seed_reproduces_the_schedule_and_changes_with_it() -> None:
    a = open_loop_offsets(10.0, num_requests=100, seed=7)
    assert a == open_loop_offsets(10.0, num_requests=100, seed=7)
    assert a != open_loop_offsets(10.0, num_requests=100, seed=8)


def test_duration_schedule_covers_the_duration_at_the_rate() -> None:
    offsets = open_loop_offsets(200.0, duration_s=10.0, seed=2)
    assert len(offsets) == pytest.approx(2000, rel=0.06)
    assert offsets[-1] < 10.0


def test_ramp_up_grows_the_rate_linearly_then_holds_it() -> None:
    offsets = list(open_loop_offsets(100.0, duration_s=20.0, ramp_up_s=10.0, seed=4))
    first_half_of_ramp = sum(1 for t in offsets if t < 5)
    second_half_of_ramp = sum(1 for t in offsets if 5 <= t < 10)
    after_ramp = sum(1 for t in offsets if 10 <= t < 20)
    # Expected sends: 125 in [0,5), 375 in [5,10), 1000 in [10,20).
    assert first_half_of_ramp == pytest.approx(125, rel=0.2)
    assert second_half_of_ramp == pytest.approx(375, rel=0.12)
    assert after_ramp == pytest.approx(1000, rel=0.08)


def test_closed_loop_slots_start_together_or_spread_over_the_ramp() -> None:
    assert closed_loop_start_offsets(3, 0.0) == [0.0, 0.0, 0.0]
    assert closed_loop_start_offsets(4, 2.0) == [0.0, 0.5, 1.0, 1.5]


def test_splits_deal_every_index_once() -> None:
    parts = [list(split_round_robin(10, 3, part)) for part in range(3)]
    assert sorted(i for part in parts for i in part) == list(range(10))
    assert split_evenly(10, 3) == [4, 3, 3]
    assert sum(split_evenly(10_000, 7)) == 10_000


def test_open_loop_needs_a_bound() -> None:
    with pytest.raises(BenchError):
        open_loop_offsets(1.0)


# --- metrics (vLLM's calculate_metrics) -----------------------------------------------------


def _records(rows: list[tuple[float, float, float, int, list[float], str]]) -> RequestRecords:
    """rows of (sent_s, ttft_s, end_s, output_tokens, itls_s, error)."""
    records = RequestRecords()
    for index, (sent, ttft, end, tokens, itls, error) in enumerate(rows):
        records.add(
            index=index, intended_s=sent, sent_s=sent, end_s=end, ttft_s=ttft,
            output_tokens=tokens, input_tokens=10, from_usage=True, itls_s=itls, error=error,
        )  # fmt: skip
    return records


def test_percentile_and_std_match_numpy_defaults() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    # numpy.percentile(values, [50, 90, 99]) and numpy.std(values).
    assert percentile(values, 50) == 3.0
    assert percentile(values, 90) == pytest.approx(7.6)
    assert percentile(values, 99) == pytest.approx(9.76)
    assert std(values) == pytest.approx(3.1622776601683795)
    assert percentile([], 50) == 0.0 and std([]) == 0.0


def test_metrics_follow_vllm_formulas() -> None:
    records = _records(
        [
            (0.0, 0.1, 1.1, 11, [0.1] * 10, ""),  # TPOT (1.1-0.1)/10 = 0.1
            (0.5, 0.2, 2.5, 21, [0.09] * 20, ""),  # TPOT (2.0-0.2)/20 = 0.09
            (1.0, 0.3, 1.3, 1, [], ""),  # one token: no TPOT (0 for goodput)
            (1.0, math.nan, 1.2, 0, [], "http_500"),
        ]
    )
    result = calculate_metrics(records, 4.0, [50, 99], {"ttft": 250.0, "tpot": 95.0})
    assert result["completed"] == 3 and result["failed"] == 1
    assert result["total_input_tokens"] == 30 and result["total_output_tokens"] == 33
    assert result["request_throughput"] == 3 / 4.0
    assert result["output_throughput"] == 33 / 4.0
    assert result["total_token_throughput"] == 63 / 4.0
    assert result["mean_tpot_ms"] == pytest.approx(95.0)
    assert result["median_ttft_ms"] == pytest.approx(200.0)
    assert result["mean_e2el_ms"] == pytest.approx((1100 + 2000 + 300) / 3)
    assert result["mean_itl_ms"] == pytest.approx((10 * 100 + 20 * 90) / 30)
    assert result["p99_itl_ms"] == pytest.approx(100.0)
    # Good: request 2 (ttft 200, tpot 90) and 3 (ttft 300 fails); request 1 tpot 100 fails.
    assert result["request_goodput"] == pytest.approx(1 / 4.0)
    assert result["max_concurrent_requests"] == 3


def test_goodput_is_none_without_slos_and_empty_runs_are_zero() -> None:
    result = calculate_metrics(RequestRecords(), 0.0, [99], {})
    assert result["request_goodput"] is None
    assert result["completed"] == 0 and result["mean_ttft_ms"] == 0.0 and result["duration"] == 0.0


def test_peak_in_flight_is_exact_and_a_refilled_slot_is_not_two() -> None:
    records = _records(
        [
            (0.0, 0.1, 1.0, 1, [], ""),
            (1.0, 0.1, 2.0, 1, [], ""),  # starts exactly when the first ends
            (0.5, 0.1, 1.5, 1, [], ""),
            (0.6, 0.1, 0.7, 1, [], "timeout"),  # failed requests were in flight too
        ]
    )
    assert peak_in_flight(records) == 3


def test_error_families() -> None:
    assert error_family("http_503") == "http_5xx"
    assert error_family("http_429") == "http_4xx"
    assert error_family("connect") == "connect"


# --- histogram ------------------------------------------------------------------------------


def test_log_histogram_percentiles_are_within_two_percent_and_merge() -> None:
    values = [0.5 + i * 0.37 for i in range(5000)]
    first, second = LogHistogram(), LogHistogram()
    first.record_all(values[::2])
    second.record_all(values[1::2])
    first.merge(second)
    assert first.count == 5000
    ordered = sorted(values)
    for p in (50, 90, 99):
        exact = ordered[math.ceil(p / 100 * len(ordered)) - 1]
        assert first.percentile(p) == pytest.approx(exact, rel=0.02)
    assert LogHistogram().percentile(99) == 0.0


# --- workload -------------------------------------------------------------------------------


def _options(**fields: object) -> BenchOptions:
    return BenchOptions(**{"urls": ("http://127.0.0.1:1",), **fields})  # type: ignore[arg-type]


def test_random_prompts_have_exact_lengths_and_ask_for_exact_outputs() -> None:
    source = RandomBodies(_options(input_len=37, output_len=9), "m")
    bodies = [orjson.loads(source.body(i)[0]) for i in range(50)]
    for body in bodies:
        assert len(body["messages"][0]["content"].split()) == 37
        assert body["max_tokens"] == 9 and body["ignore_eos"] is True
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["model"] == "m"
    assert len({b["messages"][0]["content"] for b in bodies}) == 50
    assert source.body(3)[1] == 37


def test_random_prompts_are_seeded_and_survive_pickling() -> None:
    import pickle

    source = RandomBodies(_options(seed=5, endpoint="completions"), "m")
    copy = pickle.loads(pickle.dumps(source))
    assert len(pickle.dumps(source)) < 2000  # the corpus is rebuilt, not shipped
    assert copy.body(17) == source.body(17)
    other = RandomBodies(_options(seed=6, endpoint="completions"), "m")
    assert other.body(17) != source.body(17)
    assert "prompt" in orjson.loads(source.body(0)[0])


def test_shared_prefix_starts_every_prompt() -> None:
    source = RandomBodies(_options(input_len=5, shared_prefix_len=20), "m")
    texts = [orjson.loads(source.body(i)[0])["messages"][0]["content"].split() for i in range(5)]
    assert all(len(words) == 25 for words in texts)
    assert len({tuple(words[:20]) for words in texts}) == 1
    assert len({tuple(words[20:]) for words in texts}) == 5
    assert source.body(0)[1] == 25


def test_sharegpt_takes_first_question_and_answer_length(tmp_path: Path) -> None:
    path = tmp_path / "sharegpt.json"
    path.write_text(
        json.dumps(
            [
                {"conversations": [{"from": "human", "value": "hi there"},
                                   {"from": "gpt", "value": "a b c d"}]},
                {"conversations": [{"from": "human", "value": "only one turn"}]},
            ]
        )
    )  # fmt: skip
    source = body_source(_options(dataset=f"sharegpt:{path}", stream=False), "m")
    assert isinstance(source, PooledBodies) and len(source.bodies) == 1
    body, input_len = source.body(5)
    parsed = orjson.loads(body)
    assert parsed["messages"] == [{"role": "user", "content": "hi there"}]
    assert parsed["max_tokens"] == 4 and input_len == 2
    assert "ignore_eos" not in parsed and "stream" not in parsed


def test_jsonl_problems_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('"fine"\n{"prompt": 3}\n')
    with pytest.raises(BenchError, match=r"p.jsonl:2: expected a string or an object"):
        body_source(_options(dataset=f"jsonl:{path}"), "m")
    path.write_text("{not json\n")
    with pytest.raises(BenchError, match=r"p.jsonl:1: not valid JSON"):
        body_source(_options(dataset=f"jsonl:{path}"), "m")
    with pytest.raises(BenchError, match="use random, sharegpt:PATH or jsonl:PATH"):
        body_source(_options(dataset="sonnet"), "m")


# --- options --------------------------------------------------------------------------------


def test_percentiles_and_goodput_parse_like_vllm() -> None:
    assert parse_percentiles("50, 90,99.9") == (50.0, 90.0, 99.9)
    assert parse_goodput(["ttft:500", "tpot:50 e2el:2000"]) == (
        ("ttft", 500.0), ("tpot", 50.0), ("e2el", 2000.0),
    )  # fmt: skip
    for bad in ("", "abc", "0", "101"):
        with pytest.raises(BenchError):
            parse_percentiles(bad)
    for bad_slo in (["ttft"], ["itl:5"], ["ttft:x"], ["ttft:-1"]):
        with pytest.raises(BenchError):
            parse_goodput(bad_slo)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_requests": 5, "duration_s": 2.0}, "not both"),
        ({"concurrency": 0}, "--concurrency"),
        ({"rate": -1.0}, "--rate"),
        ({"num_requests": 5, "warmup": 5}, "--warmup"),
        ({"urls": ("localhost:8000",)}, "http://"),
    ],
)
def test_impossible_options_are_refused(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"urls": ("http://127.0.0.1:1",)}
    with pytest.raises(BenchError, match=message):
        check_options(BenchOptions(**{**base, **fields}))  # type: ignore[arg-type]


def test_endpoint_urls_accept_a_v1_suffix() -> None:
    options = _options(urls=("http://h:1/v1/", "http://h:2"), endpoint="completions")
    assert options.endpoint_urls() == ("http://h:1/v1/completions", "http://h:2/v1/completions")
    assert _options(api_key="secret").to_dict()["api_key"] == "***"


# --- client health --------------------------------------------------------------------------


def test_saturation_verdict_names_its_reasons() -> None:
    calm = WorkerHealth(0, cpu_percent=30.0)
    calm.loop_lag_ms.record_all([0.2] * 100)
    busy = WorkerHealth(1, cpu_percent=97.0)
    busy.loop_lag_ms.record_all([80.0] * 100)
    healthy = client_health([calm], scheduled_rate=10.0, achieved_rate=9.9, rate_capped=False,
                            peak_in_flight=3)  # fmt: skip
    assert healthy["client_saturated"] is False and healthy["saturation_reasons"] == []
    verdict = client_health([calm, busy], scheduled_rate=100.0, achieved_rate=60.0,
                            rate_capped=False, peak_in_flight=3)  # fmt: skip
    assert verdict["client_saturated"] is True
    reasons = " | ".join(verdict["saturation_reasons"])
    assert "worker 1 used 97% of a core" in reasons
    assert "event-loop lag p99" in reasons
    assert "achieved 60.0 req/s of 100.0 scheduled" in reasons
    capped = client_health([calm], scheduled_rate=100.0, achieved_rate=60.0, rate_capped=True,
                           peak_in_flight=3)  # fmt: skip
    assert capped["client_saturated"] is False  # a concurrency cap slows sends by design


# --- compare --------------------------------------------------------------------------------


def test_compare_shows_every_shared_metric_with_its_change(tmp_path: Path) -> None:
    a = {"completed": 100, "request_throughput": 10.0, "median_ttft_ms": 200.0,
         "p99_ttft_ms": 400.0, "request_rate": "inf", "model_id": "m"}  # fmt: skip
    b = {"completed": 100, "request_throughput": 12.5, "median_ttft_ms": 150.0,
         "p99_ttft_ms": 400.0, "request_rate": "inf", "model_id": "m", "client_saturated": True}  # fmt: skip
    rows = {key: change for key, _, _, change in compare_rows(a, b)}
    assert rows == {"completed": 0.0, "request_throughput": 0.25, "median_ttft_ms": -0.25,
                    "p99_ttft_ms": 0.0}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    text = compare_text(str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "a.json", "b.json", "change"]
    assert lines[1].split() == ["completed", "100", "100", "+0.0%"]
    assert ["request_throughput", "10", "12.50", "+25.0%"] in [line.split() for line in lines]
    assert "client saturated in b.json" in text
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(BenchError, match="not a bench result"):
        compare_text(str(tmp_path / "a.json"), str(tmp_path / "bad.json"))


# --- live view ------------------------------------------------------------------------------


def test_live_state_merges_worker_snapshots() -> None:
    from llmops.bench.live import LiveState
    from llmops.bench.worker import Snapshot

    def snapshot(worker: int, at: float, completed: int, ttft_ms: float) -> Snapshot:
        ttft, itl = LogHistogram(), LogHistogram()
        ttft.record_all([ttft_ms] * 10)
        itl.record_all([20.0] * 50)
        return Snapshot(
            worker_id=worker, at_s=at, sent=completed + 4, completed=completed, failed=1,
            in_flight=4, interval_peak_in_flight=4, output_tokens=completed * 10,
            errors={"http_500": 1}, ttft_ms=ttft, itl_ms=itl, schedule_lag_ms_max=0.5,
            loop_lag_ms_max=2.0, cpu_percent=97.0 if worker else 10.0,
        )  # fmt: skip

    state = LiveState(planned=1000)
    state.add(snapshot(0, 0.5, 10, 100.0))
    state.add(snapshot(1, 0.5, 10, 100.0))
    state.add(snapshot(0, 1.0, 30, 300.0))
    state.add(snapshot(1, 1.0, 30, 300.0))
    assert (state.sent, state.completed, state.in_flight, state.peak_in_flight) == (68, 60, 8, 8)
    assert state.errors() == {"http_500": 2}
    requests_s, tokens_s = state.rates()
    assert requests_s == pytest.approx(80.0) and tokens_s == pytest.approx(800.0)
    ttft, itl = state.sliding()
    assert ttft.percentile(50) == pytest.approx(100.0, rel=0.02)
    assert ttft.percentile(99) == pytest.approx(300.0, rel=0.02)
    assert itl.percentile(50) == pytest.approx(20.0, rel=0.02)
    line = state.plain_line()
    assert "sent 68/1000 done 60 in-flight 8 errors http_500=2" in line
    assert "w1 cpu 97%" in line
    assert state.table().row_count == 9


def test_extra_headers_are_sent_but_not_recorded() -> None:
    from llmops.bench.coordinator import _auth_headers
    from llmops.bench.options import parse_headers

    headers = parse_headers(["X-Team=ml", " X-Trace = a=b "])
    assert headers == (("X-Team", "ml"), ("X-Trace", "a=b"))
    options = _options(headers=headers, api_key="sk-1")
    assert _auth_headers(options) == {
        "X-Team": "ml", "X-Trace": "a=b", "Authorization": "Bearer sk-1",
    }  # fmt: skip
    assert options.to_dict()["headers"] == ["X-Team", "X-Trace"]
    for bad in ("novalue", "=x"):
        with pytest.raises(BenchError, match="NAME=VALUE"):
            parse_headers([bad])
