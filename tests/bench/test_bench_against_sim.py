"""`llmops bench` end to end against real `llmops sim` processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

StartSim = Callable[..., str]


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmops", "bench", "--ui", "none", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_like_vllm(path: Path) -> dict[str, float]:
    """What a script written for `vllm bench serve --save-result` files reads from one."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    row = {
        "completed": data["completed"],
        "duration_s": data["duration"],
        "req_per_s": data["request_throughput"],
        "out_tok_per_s": data["output_throughput"],
        "total_tok_per_s": data["total_token_throughput"],
        "input_tokens": data["total_input_tokens"],
        "output_tokens": data["total_output_tokens"],
        "max_concurrency": data["max_concurrency"],
        "request_rate": data["request_rate"],
        "burstiness": data["burstiness"],
        "model": data["model_id"],
    }
    for metric in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "std", "p99"):
            row[f"{stat}_{metric}"] = float(data[f"{stat}_{metric}_ms"])
    return row


def test_timings_match_the_sim_and_the_file_reads_like_vllms(
    start_sim: StartSim, tmp_path: Path
) -> None:
    url = start_sim(ttft_ms=100, itl_ms=20, output_len=64, max_num_seqs=256)
    out, per_request = tmp_path / "run.json", tmp_path / "requests.jsonl"
    # The first round (connection set-up) is warm-up; three measured rounds follow. One
    # request per worker: simultaneous arrivals would queue in the sim's HTTP parsing.
    done = bench(
        "--url", url, "--concurrency", "2", "-n", "8", "--warmup", "2", "--input-len", "32",
        "--output-len", "64", "--workers", "2", "--percentiles", "50,90,99",
        "--output", str(out), "--save-requests", str(per_request),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    row = read_like_vllm(out)
    assert abs(row["median_ttft"] - 100) <= 5, row
    assert abs(row["median_tpot"] - 20) <= 1, row
    assert row["completed"] == 6
    assert row["output_tokens"] == 6 * 64
    assert row["input_tokens"] == 6 * 32
    assert row["max_concurrency"] == 2 and row["request_rate"] == "inf"
    assert row["model"] == "sim-model"
    # E2EL = TTFT + 63 token steps; every unit in ms like vLLM's.
    assert abs(row["median_e2el"] - (row["median_ttft"] + 63 * row["median_tpot"])) < 20
    result = json.loads(out.read_text())
    assert result["output_tokens_source"] == "usage"
    assert result["failed"] == 0 and result["errors_by_class"] == {}
    assert result["peak_in_flight"] == 2
    assert {"p50_ttft_ms", "p90_itl_ms", "p99_e2el_ms"} <= result.keys()
    assert result["config"]["concurrency"] == 2 and result["config"]["workers"] == 2
    lines = [json.loads(line) for line in per_request.read_text().splitlines()]
    assert len(lines) == 8 and sum(line["warmup"] for line in lines) == 2
    assert all(line["output_tokens"] == 64 and line["error"] is None for line in lines)
    assert sorted(line["index"] for line in lines) == list(range(8))
    assert "Serving Benchmark Result" in done.stdout and "Client saturated:" in done.stdout


def test_closed_loop_holds_exactly_n_in_flight(start_sim: StartSim, tmp_path: Path) -> None:
    url = start_sim(ttft_ms=20, itl_ms=10, output_len=16, max_num_seqs=256)
    out = tmp_path / "run.json"
    done = bench("--url", url, "--concurrency", "12", "-n", "72", "--output-len", "16",
                 "--workers", "2", "--output", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["completed"] == 72
    assert result["peak_in_flight"] == 12
    workers = result["client_health"]["workers"]
    assert [w["peak_in_flight"] for w in workers] == [6, 6]


def test_rate_schedule_is_kept_and_warmup_excluded(start_sim: StartSim, tmp_path: Path) -> None:
    url = start_sim(ttft_ms=5, itl_ms=5, output_len=4, max_num_seqs=512)
    out, per_request = tmp_path / "run.json", tmp_path / "requests.jsonl"
    done = bench("--url", url, "--rate", "40", "-n", "100", "--warmup", "10", "--output-len", "4",
                 "--workers", "2", "--output", str(out), "--save-requests", str(per_request))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    health = result["client_health"]
    assert health["scheduled_request_rate"] == 40
    assert abs(health["achieved_request_rate"] - 40) / 40 < 0.1
    assert result["completed"] == 90 and result["num_prompts"] == 90
    assert result["warmup_requests"] == 10
    lines = [json.loads(line) for line in per_request.read_text().splitlines()]
    assert sum(line["warmup"] for line in lines) == 10
    assert {line["index"] for line in lines if line["warmup"]} == set(range(10))
    # Sends honour their planned times: open loop, so each goes at its own offset.
    lags = [line["sent_s"] - line["intended_s"] for line in lines]
    assert max(lags) < 0.1


def test_errors_are_classified(start_sim: StartSim, tmp_path: Path, closed_port: int) -> None:
    url = start_sim(ttft_ms=5, itl_ms=5, output_len=4, fail_rate=0.5)
    out = tmp_path / "run.json"
    done = bench("--url", url, "--concurrency", "4", "-n", "60", "--output-len", "4",
                 "--workers", "2", "--output", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    errors = result["errors_by_class"]
    assert set(errors) == {"http_500"}
    assert result["errors_by_family"] == {"http_5xx": errors["http_500"]}
    assert 10 <= errors["http_500"] <= 50
    assert result["completed"] + result["failed"] == 60
    assert "http_500:" in done.stdout

    dead = f"http://127.0.0.1:{closed_port}"
    refused = bench(
        "--url", dead, "--model", "m", "-n", "5", "--workers", "1", "--output", str(out)
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == "llmops: every request failed (connect 5)"
    assert json.loads(out.read_text())["errors_by_class"] == {"connect": 5}


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, closed_port: int) -> None:
    dead = f"http://127.0.0.1:{closed_port}"
    unreachable = bench("--url", dead, "-n", "5")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith(f"llmops: cannot reach {dead}/v1/models")
    assert len(unreachable.stderr.strip().splitlines()) == 1
    missing = bench("--url", dead, "--model", "m", "--dataset", f"jsonl:{tmp_path}/none.jsonl")
    assert missing.returncode == 1
    assert "cannot read dataset" in missing.stderr and "Traceback" not in missing.stderr
    both = bench("--url", dead, "-n", "5", "--duration", "3")
    assert both.returncode == 1 and "not both" in both.stderr


def test_completions_without_streaming_and_a_jsonl_dataset(
    start_sim: StartSim, tmp_path: Path
) -> None:
    url = start_sim(ttft_ms=5, itl_ms=5, output_len=50)
    dataset = tmp_path / "prompts.jsonl"
    dataset.write_text(
        '"one two three"\n{"prompt": "four five", "max_tokens": 3}\n'
        '{"messages": [{"role": "user", "content": "six seven eight nine"}], "max_tokens": 5}\n'
    )
    out = tmp_path / "run.json"
    done = bench("--url", url, "--endpoint", "completions", "--no-stream", "--dataset",
                 f"jsonl:{dataset}", "-n", "9", "--output-len", "7", "--workers", "1",
                 "--output", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["completed"] == 9
    # Each prompt is sent three times: 3 + 2 + 4 words in, 7 + 3 + 5 tokens out.
    assert result["total_input_tokens"] == 3 * 9
    assert result["total_output_tokens"] == 3 * 15
    assert result["output_tokens_source"] == "usage"
    assert result["backend"] == "openai"


def test_ctrl_c_stops_workers_and_prints_partial_results(
    start_sim: StartSim, tmp_path: Path
) -> None:
    url = start_sim(ttft_ms=5, itl_ms=5, output_len=8)
    out = tmp_path / "run.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "llmops", "bench", "--ui", "plain", "--url", url,
         "--concurrency", "8", "-n", "1000000", "--output-len", "8", "--workers", "2",
         "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    first = process.stdout.readline()  # the first progress line: the run is under way
    assert "sent" in first
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "(interrupted: partial results)" in stdout
    assert "Traceback" not in stderr
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["interrupted"] is True and result["completed"] > 0
    time.sleep(0.2)
    assert not _children_named(process.pid, "spawn_main")


def _children_named(parent: int, needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if f"PPid:\t{parent}\n" in status and needle in cmdline:
            found.append(int(entry.name))
    return found


def test_rate_with_a_concurrency_cap_and_a_duration(start_sim: StartSim, tmp_path: Path) -> None:
    # Each request takes ~130 ms, so 3 slots carry ~23 req/s: the cap binds below 30 req/s.
    url = start_sim(ttft_ms=50, itl_ms=10, output_len=8)
    out = tmp_path / "run.json"
    done = bench("--url", url, "--rate", "30", "--concurrency", "3", "--duration", "2",
                 "--output-len", "8", "--workers", "1", "--output", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["peak_in_flight"] == 3 and result["max_concurrency"] == 3
    assert result["request_rate"] == 30.0
    assert 40 <= result["completed"] <= 80 and result["failed"] == 0
    # Slower than the schedule by design, which is not a saturated client.
    assert result["client_health"]["achieved_request_rate"] < 27
    assert not any(
        "scheduled" in reason for reason in result["client_health"]["saturation_reasons"]
    )


def test_too_few_open_files_is_one_clear_line(closed_port: int) -> None:
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    done = subprocess.run(
        [sys.executable, "-m", "llmops", "bench", "--url", f"http://127.0.0.1:{closed_port}",
         "--model", "m", "--concurrency", "1000", "--workers", "2", "--ui", "none"],
        capture_output=True, text=True, timeout=60, preexec_fn=low_limit,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "llmops: --concurrency 1000 over 2 worker(s) needs 564 open files per worker but the "
        "limit is 256; raise it (ulimit -n 564) or add --workers"
    )


def test_compare_prints_both_runs_side_by_side(tmp_path: Path) -> None:
    base = {"completed": 10, "request_throughput": 2.0, "median_ttft_ms": 100.0}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps({**base, "median_ttft_ms": 110.0}))
    done = subprocess.run(
        [sys.executable, "-m", "llmops", "bench", "compare", str(tmp_path / "a.json"),
         str(tmp_path / "b.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert ["median_ttft_ms", "100", "110", "+10.0%"] in rows
    assert ["request_throughput", "2", "2", "+0.0%"] in rows
