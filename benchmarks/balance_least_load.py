"""Balancing quality: least-load vs least-connections vs simple-shuffle over three sims, one
of which decodes 3x slower (issue 4's check), and over three equal sims, one of them also busy
with traffic the router cannot see. Same sims, same load, strategies interleaved.

    python benchmarks/balance_least_load.py [--runs 3] [--seconds 6] [--clients 24] [--write]

Each sim runs as its own `llmops sim` process (2 fast: ITL 10 ms, 1 slow: ITL 30 ms, all
TTFT 30 ms and 8 batch slots); each strategy gets its own `llmops router serve` process.
A closed loop of streaming clients (64 output tokens each) measures, per strategy: the
share of requests the router sent to the slow sim (vs a third), mean and p95 time to first
chunk as the client sees it, mean end-to-end latency and completed requests per second.

A second fleet of three equal sims gets fewer router clients plus some streaming straight to
one of them (another router replica, say); it reports the share the router sent to that
busy sim. Medians over runs.
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
    "max_tokens": 64,
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
    busy_share: float = 0.0  # of the sim that also serves clients the router cannot see
    ttft_s: list[float] = field(default_factory=list)
    e2e_s: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0


async def sent_by_backend(http: aiohttp.ClientSession, router: str) -> dict[str, int]:
    async with http.get(f"{router}/status") as response:
        return {b["url"]: b["requests"] for b in (await response.json())["backends"]}


async def closed_loop(
    router: str, sims: list[str], args: argparse.Namespace, run: Run, outside: int
) -> None:
    """Router clients for ``args.seconds``; ``outside`` more stream straight to ``sims[0]``."""
    clients = args.shared_clients if outside else args.clients
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        before = await sent_by_backend(http, router)
        stop_at = time.monotonic() + args.seconds

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

        async def elsewhere() -> None:
            while time.monotonic() < stop_at:
                async with http.post(f"{sims[0]}/v1/chat/completions", json=BODY) as response:
                    await response.read()

        began = time.monotonic()
        await asyncio.gather(
            *(client() for _ in range(clients)), *(elsewhere() for _ in range(outside))
        )
        run.seconds = time.monotonic() - began
        after = await sent_by_backend(http, router)
    counts = {url: after[url] - before.get(url, 0) for url in after}
    total = max(1, sum(counts.values()))
    run.slow_share = counts[f"{sims[-1]}/v1"] / total
    run.busy_share = counts[f"{sims[0]}/v1"] / total


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)


def start_sim(itl_ms: int, processes: list[subprocess.Popen[bytes]]) -> str:
    port = free_port()
    flags = ["--port", str(port), "--model", "m", "--ttft-ms", "30", "--itl-ms", str(itl_ms)]
    processes.append(start(llmops("sim", *flags, "--max-num-seqs", "8"), port))
    return f"http://127.0.0.1:{port}"


def start_router(
    strategy: str, sims: list[str], workdir: Path, processes: list[subprocess.Popen[bytes]]
) -> str:
    port = free_port()
    config = workdir / f"{strategy}-{port}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "routing": {"strategy": strategy, "session_affinity": False},
                "scrape": {"interval": 0.5},
                "model_list": [
                    {"model_name": "m", "litellm_params": {"api_base": f"{s}/v1"}} for s in sims
                ],
            }
        )
    )
    serve = llmops("router", "serve", "--config", str(config), "--port", str(port))
    processes.append(start(serve, port))
    return f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument(
        "--shared-clients", type=int, default=12, help="router clients of the equal fleet"
    )
    parser.add_argument("--outside", type=int, default=6, help="direct clients of one sim")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()

    processes: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="llmops-balance-"))
    try:
        # Fleet 1: one sim 3x slower. Fleet 2: three equal sims, one of them also busy with
        # clients the router cannot see.
        slow_fleet = [start_sim(itl_ms, processes) for itl_ms in (10, 10, 30)]
        equal_fleet = [start_sim(10, processes) for _ in range(3)]
        slow_routers = {s: start_router(s, slow_fleet, workdir, processes) for s in STRATEGIES}
        equal_routers = {s: start_router(s, equal_fleet, workdir, processes) for s in STRATEGIES}
        time.sleep(1.0)  # a first engine scrape before load

        results: dict[str, list[Run]] = {s: [] for s in STRATEGIES}
        shared: dict[str, list[Run]] = {s: [] for s in STRATEGIES}
        for number in range(args.runs):
            for sims, routers, outside, table in (
                (slow_fleet, slow_routers, 0, results),
                (equal_fleet, equal_routers, args.outside, shared),
            ):
                for strategy in STRATEGIES:
                    run = Run(strategy)
                    asyncio.run(closed_loop(routers[strategy], sims, args, run, outside))
                    table[strategy].append(run)
                    print(
                        f"run {number + 1} outside {outside:2} {strategy:18} "
                        f"slow share {run.slow_share:.3f} busy share {run.busy_share:.3f} "
                        f"ttft mean {statistics.fmean(run.ttft_s) * 1000:.0f} ms "
                        f"req/s {len(run.e2e_s) / run.seconds:.1f} errors {run.errors}",
                        flush=True,
                    )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)

    table = render(results, shared, args)
    print(table)
    if args.write:
        write_section(table)


def _rows(results: dict[str, list[Run]], share: str) -> list[str]:
    rows = []
    baseline = median([statistics.fmean(r.ttft_s) for r in results["simple-shuffle"]])
    for strategy, runs in results.items():
        ttft_mean = median([statistics.fmean(r.ttft_s) for r in runs])
        rows.append(
            f"| {strategy} | {median([getattr(r, share) for r in runs]):.3f} "
            f"| {ttft_mean * 1000:.0f} | {median([p95(r.ttft_s) for r in runs]) * 1000:.0f} "
            f"| {median([statistics.fmean(r.e2e_s) for r in runs]) * 1000:.0f} "
            f"| {median([len(r.e2e_s) / r.seconds for r in runs]):.1f} "
            f"| {ttft_mean / baseline:.2f} | {sum(r.errors for r in runs)} |"
        )
    return rows


def _summary(results: dict[str, list[Run]], share: str, which: str) -> str:
    """One sentence of what the medians say, so the prose cannot drift from the table."""
    parts = []
    baseline = median([statistics.fmean(r.ttft_s) for r in results["simple-shuffle"]])
    for strategy, runs in results.items():
        fair = median([getattr(r, share) for r in runs]) / (1 / 3)
        ttft = median([statistics.fmean(r.ttft_s) for r in runs]) / baseline
        parts.append(
            f"{strategy} sends the {which} sim {fair:.0%} of a fair share (TTFT {ttft:.2f}x)"
        )
    return "; ".join(parts) + "."


def render(
    results: dict[str, list[Run]], shared: dict[str, list[Run]], args: argparse.Namespace
) -> str:
    columns = " | TTFT mean ms | TTFT p95 ms | e2e mean ms | req/s | TTFT vs shuffle | errors |"
    return "\n".join(
        [
            SECTION,
            "",
            "`python benchmarks/balance_least_load.py"
            f" --runs {args.runs} --seconds {args.seconds:g} --clients {args.clients}"
            f" --shared-clients {args.shared_clients} --outside {args.outside}` on {platform.node() or 'this machine'}"
            f" ({os.cpu_count()} cores, shared with other work), {time.strftime('%Y-%m-%d')}.",
            "",
            "Three `llmops sim` processes (two with ITL 10 ms, one with ITL 30 ms: 3x slower"
            " decoding; TTFT 30 ms, 8 batch slots each), one `llmops router serve` per strategy,"
            f" {args.clients} closed-loop streaming clients (64 tokens each), strategies"
            " interleaved per run, medians over runs. TTFT is time to the first chunk at the"
            " client; a fair share by count would be 0.333.",
            "",
            "**A 3x slower sim.** " + _summary(results, "slow_share", "slow"),
            "",
            "| strategy | share to the slow sim" + columns,
            "|---|---|---|---|---|---|---|---|",
            *_rows(results, "slow_share"),
            "",
            f"**Traffic the router cannot see.** Three equal sims (ITL 10 ms, 24 slots in all),"
            f" {args.shared_clients} router clients plus {args.outside} clients streaming"
            " straight to one of the sims (another replica or another gateway): there is room"
            " for everyone, but only least-load sees that sim's queue, in its `/metrics`. "
            + _summary(shared, "busy_share", "busy"),
            "",
            "| strategy | share to the busy sim" + columns,
            "|---|---|---|---|---|---|---|---|",
            *_rows(shared, "busy_share"),
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
