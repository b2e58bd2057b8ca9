"""The highest request rate `llmops bench` sustains, next to a single-process asyncio client.

The backend is nginx answering every POST at once with a short OpenAI stream (8 content
chunks, a usage chunk, [DONE]), so the clients are what is measured. Both clients climb the
same ladder of open-loop Poisson rates for a few seconds each, in the same run, alternating:

- `llmops bench --rate R --workers N` (coordinator + N uvloop workers, byte-level SSE scan);
- the baseline: vLLM's `bench serve` design in one process (one default asyncio loop, one
  ClientSession, delays precomputed, one task per request, every chunk JSON-decoded). It
  keeps connections alive, which is kinder than vLLM's own `force_close=True` connector.

A rate is sustained when no request failed, the achieved send rate is at least 95% of the
requested one and the p99 lag between planned and actual send times stays under 100 ms (a
client that cannot keep up builds a backlog: its lag grows with the run; the bound leaves room
for the scheduling noise of a shared 2-core machine). A client stops climbing after two failed
rungs in a row.
Prints a Markdown table: per rate the achieved rate and p99 schedule lag of each client,
then each run's highest sustained rate and highest achieved send rate, with medians.

    python benchmarks/bench_max_rate.py --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _harness import Nginx

MODEL = "bench-model"
RATES = (500, 1000, 2000, 2500, 3000, 3500, 4000, 4500, 5000, 6000, 8000)
MAX_LAG_P99_MS = 100.0
MIN_RATE_SHARE = 0.95


# --- the baseline: one process, one asyncio loop (vLLM's design) ----------------------------


async def baseline(url: str, rate: float, count: int, seed: int) -> dict[str, Any]:
    import aiohttp

    rng = random.Random(seed)
    delays, elapsed = [], 0.0
    for _ in range(count):
        elapsed += rng.expovariate(rate)
        delays.append(elapsed)
    scale = (count / rate) / delays[-1]  # vLLM rescales so the last send lands at n/rate
    delays = [d * scale for d in delays]
    words = " ".join(rng.choice(("ka", "lo", "mi", "ne")) for _ in range(16))
    body = {"model": MODEL, "messages": [{"role": "user", "content": words}], "max_tokens": 8,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}  # fmt: skip
    lags: list[float] = []
    sends: list[float] = []
    errors = 0
    loop_lags: list[float] = []
    outputs: list[tuple[float, list[float], int, str]] = []

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        st = time.perf_counter()
        sends.append(st)
        ttft, itl, most_recent, text, tokens = 0.0, [], st, "", 0
        try:
            async with session.post(url, json=body) as response:
                if response.status != 200:
                    errors += 1
                    return
                buffer = ""
                async for chunk_bytes in response.content.iter_any():
                    buffer += chunk_bytes.decode()
                    *messages, buffer = buffer.split("\n\n")
                    for message in messages:
                        data_text = message.removeprefix("data: ")
                        if data_text == "[DONE]":
                            continue
                        timestamp = time.perf_counter()
                        data = json.loads(data_text)
                        if choices := data.get("choices"):
                            if ttft == 0.0:
                                ttft = timestamp - st
                            else:
                                itl.append(timestamp - most_recent)
                            text += choices[0]["delta"].get("content") or ""
                        elif usage := data.get("usage"):
                            tokens = usage.get("completion_tokens")
                        most_recent = timestamp
        except (aiohttp.ClientError, OSError, TimeoutError):
            errors += 1
            return
        outputs.append((ttft, itl, tokens, text))  # kept for the metrics, as vLLM does

    async def probe(stop: asyncio.Event) -> None:
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.05)
            loop_lags.append(max(time.perf_counter() - before - 0.05, 0.0))

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(stop))
        start = time.perf_counter()
        tasks = []
        for delay in delays:
            wait = start + delay - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            lags.append(time.perf_counter() - (start + delay))
            tasks.append(asyncio.create_task(one(session)))
        await asyncio.gather(*tasks)
        stop.set()
        await prober
    lags.sort()
    loop_lags.sort()
    return {
        "achieved": count / (max(sends) - start),
        "lag_p99_ms": lags[int(0.99 * (len(lags) - 1))] * 1000,
        "loop_lag_p99_ms": loop_lags[int(0.99 * (len(loop_lags) - 1))] * 1000 if loop_lags else 0.0,
        "errors": errors,
    }


def run_baseline(url: str, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    count = max(1, round(rate * seconds))
    done = subprocess.run(
        [sys.executable, __file__, "--baseline-child", url, str(rate), str(count), str(seed)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def run_llmops(url: str, rate: float, seconds: float, seed: int, workers: int) -> dict[str, Any]:
    count = max(1, round(rate * seconds))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        subprocess.run(
            [sys.executable, "-m", "llmops", "bench", "--ui", "none", "--url", url.removesuffix("/v1/chat/completions"),
             "--model", MODEL, "--rate", str(rate), "-n", str(count), "--input-len", "16",
             "--output-len", "8", "--workers", str(workers), "--seed", str(seed), "--timeout", "60",
             "--output", str(out)],
            capture_output=True, text=True,
        )  # fmt: skip
        result = json.loads(out.read_text())
    health = result["client_health"]
    return {
        "achieved": health["achieved_request_rate"] or 0.0,
        "lag_p99_ms": health["schedule_lag_p99_ms"],
        "loop_lag_p99_ms": max(w["loop_lag_p99_ms"] for w in health["workers"]),
        "errors": result["failed"],
        "saturated": result["client_saturated"],
        "reasons": health["saturation_reasons"],
    }


def sustained(figures: dict[str, Any], rate: float) -> bool:
    return (
        figures["errors"] == 0
        and figures["achieved"] >= MIN_RATE_SHARE * rate
        and figures["lag_p99_ms"] <= MAX_LAG_P99_MS
    )


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--baseline-child":
        url, rate, count, seed = sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(asyncio.run(baseline(url, rate, count, seed))))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each rate step")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    nginx = Nginx(cpu=None, sse_chunks=8, always_stream=True)
    url = f"http://127.0.0.1:{nginx.port}/v1/chat/completions"
    best: dict[str, list[float]] = {"llmops": [], "baseline": []}
    peak: dict[str, list[float]] = {"llmops": [], "baseline": []}
    rows: list[str] = []
    try:
        for run in range(args.runs):
            misses = {"llmops": 0, "baseline": 0}
            top = {"llmops": 0.0, "baseline": 0.0}
            fastest = {"llmops": 0.0, "baseline": 0.0}
            for rate in RATES:
                if all(count >= 2 for count in misses.values()):
                    break
                cells = []
                for name in ("llmops", "baseline"):
                    if misses[name] >= 2:
                        cells.append("-")
                        continue
                    if name == "llmops":
                        figures = run_llmops(url, rate, args.seconds, run, args.workers)
                    else:
                        figures = run_baseline(url, rate, args.seconds, run)
                    ok = sustained(figures, rate)
                    fastest[name] = max(fastest[name], figures["achieved"])
                    if ok:
                        top[name] = rate
                        misses[name] = 0
                    else:
                        misses[name] += 1
                    cells.append(
                        f"{figures['achieved']:.0f} / {figures['lag_p99_ms']:.1f} / "
                        f"{figures['loop_lag_p99_ms']:.1f}{'' if ok else ' ✗'}"
                    )
                    print(
                        f"run {run + 1} rate {rate} {name}: {json.dumps(figures)}", file=sys.stderr
                    )
                rows.append(f"| {run + 1} | {rate} | {cells[0]} | {cells[1]} |")
            for name in best:
                best[name].append(top[name])
                peak[name].append(fastest[name])
    finally:
        nginx.stop()
    print("| run | requested req/s | llmops bench: achieved / sched-lag p99 ms / loop-lag p99 ms "
          "| single-process asyncio: achieved / sched-lag p99 ms / loop-lag p99 ms |")  # fmt: skip
    print("|---|---|---|---|")
    print("\n".join(rows))
    print()
    print(
        "| | highest sustained req/s per run | median | highest achieved send rate per run | median |"
    )
    print("|---|---|---|---|---|")
    for name, label in (
        ("llmops", f"llmops bench ({args.workers} workers)"),
        ("baseline", "single-process asyncio"),
    ):
        values = ", ".join(f"{v:.0f}" for v in best[name])
        fastest_values = ", ".join(f"{v:.0f}" for v in peak[name])
        print(
            f"| {label} | {values} | {statistics.median(best[name]):.0f} "
            f"| {fastest_values} | {statistics.median(peak[name]):.0f} |"
        )


if __name__ == "__main__":
    main()
