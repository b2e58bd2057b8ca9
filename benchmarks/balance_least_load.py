"""Balancing quality: least-load vs least-connections vs simple-shuffle over three sims, one
of which decodes 3x slower (issue 4's check). Same sims, same load, strategies interleaved.

    python benchmarks/balance_least_load.py [--runs 3] [--seconds 6] [--clients 24] [--write]

Each sim runs as its own `llmops sim` process (2 fast: ITL 10 ms, 1 slow: ITL 30 ms, all
TTFT 30 ms and 8 batch slots); each strategy gets its own `llmops router serve` process.
A closed loop of streaming clients (128 output tokens each) measures, per strategy: the
slow sim's share of requests (vs a third), mean and p95 time to first chunk as the client
sees it, mean end-to-end latency and completed requests per second. Medians over runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _harness import free_port, median, wait_port

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("simple-shuffle", "least-connections", "least-load")
BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "tell me a long story about routers"}],
    "max_tokens": 128,
    "ignore_eos": True,
    "stream": True,
}
SECTION = "## Balancing"


def llmops(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmops", *args]


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return process


@dataclass
class Run:
    strategy: str
    slow_share: float = 0.0
    ttft_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


async def sim_requests(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/sim/stats") as response:
        return int((await response.json())["requests"])


async def closed_loop(router: str, sims: list[str], clients: int, seconds: float, run: Run) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        before = [await sim_requests(http, s) for s in sims]
        stop_at = time.monotonic() + seconds

        async def client() -> None:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                async with http.post(f"{router}/v1/chat/completions", json=BODY) as response:
                    if response.status != 200:
                        run.errors += 1
                        await response.read()
                        continue
                    await response.content.readany()
                    run.ttft_s.append(time.monotonic() - started)
                    await response.read()
                    run.e2e_s.append(time.monotonic() - started)

        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        run.seconds = time.monotonic() - began
        after = [await sim_requests(http, s) for s in sims]
    counts = [b - a for a, b in zip(before, after, strict=True)]
    run.slow_share = counts[-1] / max(1, sum(counts))


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()

    processes: list[subprocess.Popen[bytes]] = []
    sims: list[str] = []
    routers: dict[str, str] = {}
    try:
        for itl_ms in (10, 10, 30):
            port = free_port()
            processes.append(
                start(
                    llmops(
                        "sim",
                        "--port",
                        str(port),
                        "--model",
                        "m",
                        "--ttft-ms",
                        "30",
                        "--itl-ms",
                        str(itl_ms),
                        "--max-num-seqs",
                        "8",
                    ),
                    port,
                )
            )
            sims.append(f"http://127.0.0.1:{port}")
        workdir = Path(tempfile.mkdtemp(prefix="llmops-balance-"))
        for strategy in STRATEGIES:
            port = free_port()
            config = workdir / f"{strategy}.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "routing": {"strategy": strategy, "session_affinity": False},
                        "scrape": {"interval": 0.5},
                        "model_list": [
                            {"model_name": "m", "litellm_params": {"api_base": f"{s}/v1"}}
                            for s in sims
                        ],
                    }
                )
            )
            serve = llmops("router", "serve", "--config", str(config), "--port", str(port))
            processes.append(start(serve, port))
            routers[strategy] = f"http://127.0.0.1:{port}"
        time.sleep(1.0)  # a first engine scrape before load

        results: dict[str, list[Run]] = {s: [] for s in STRATEGIES}
        for number in range(args.runs):
            for strategy in STRATEGIES:
                run = Run(strategy)
                asyncio.run(closed_loop(routers[strategy], sims, args.clients, args.seconds, run))
                results[strategy].append(run)
                print(
                    f"run {number + 1} {strategy:18} slow share {run.slow_share:.3f} "
                    f"ttft mean {statistics.fmean(run.ttft_s) * 1000:.0f} ms "
                    f"req/s {len(run.e2e_s) / run.seconds:.1f} errors {run.errors}",
                    flush=True,
                )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)

    table = render(results, args)
    print(table)
    if args.write:
        write_section(table)


def render(results: dict[str, list[Run]], args: argparse.Namespace) -> str:
    rows = []
    baseline = median([statistics.fmean(r.ttft_s) for r in results["simple-shuffle"]])
    for strategy, runs in results.items():
        ttft_mean = median([statistics.fmean(r.ttft_s) for r in runs])
        rows.append(
            f"| {strategy} | {median([r.slow_share for r in runs]):.3f} "
            f"| {ttft_mean * 1000:.0f} | {median([p95(r.ttft_s) for r in runs]) * 1000:.0f} "
            f"| {median([statistics.fmean(r.e2e_s) for r in runs]) * 1000:.0f} "
            f"| {median([len(r.e2e_s) / r.seconds for r in runs]):.1f} "
            f"| {ttft_mean / baseline:.2f} | {sum(r.errors for r in runs)} |"
        )
    return "\n".join(
        [
            SECTION,
            "",
            "`python benchmarks/balance_least_load.py"
            f" --runs {args.runs} --seconds {args.seconds:g} --clients {args.clients}`"
            f" on {platform.node() or 'this machine'} ({os.cpu_count()} cores),"
            f" {time.strftime('%Y-%m-%d')}.",
            "",
            "Three `llmops sim` processes (two with ITL 10 ms, one with ITL 30 ms: 3x slower"
            " decoding; TTFT 30 ms, 8 batch slots each), one `llmops router serve` per strategy,"
            f" {args.clients} closed-loop streaming clients (128 tokens each), strategies"
            " interleaved per run, medians over runs. A fair share for the slow sim by count"
            " would be 0.333; TTFT is time to the first chunk at the client.",
            "",
            "| strategy | slow sim share | TTFT mean ms | TTFT p95 ms | e2e mean ms | req/s"
            " | TTFT vs shuffle | errors |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def write_section(table: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start_at = text.find(SECTION + "\n")
    if start_at < 0:
        text = text.rstrip("\n") + "\n\n" + table
    else:
        end_at = text.find("\n## ", start_at + len(SECTION))
        rest = "" if end_at < 0 else text[end_at + 1 :]
        text = text[:start_at] + table + ("\n" + rest if rest else "")
    path.write_text(text)
    print(f"updated {path}")


if __name__ == "__main__":
    main()
