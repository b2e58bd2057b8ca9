"""Paced streaming through the router: the real engine pattern, each token its own write.

    python benchmarks/paced_streams.py [--streams 1000] [--itl-ms 40] [--tokens 100] [--runs 3] [--write]

`llmops sim` (the engine) and `llmops bench` (the client) share core 0; the proxy under test
has core 1 to itself. For each of direct / nginx proxy_pass / minimal aiohttp proxy / llmops
router, interleaved per run, it records chunks relayed per second, the proxy's CPU per
relayed chunk, and the TTFT and ITL the client saw; a proxy's added TTFT is its median
TTFT minus direct's.
A second part holds 1,000 and 10,000 slow streams open through the router and records its RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from _harness import (
    TARGETS,
    cpu_seconds,
    free_port,
    median,
    pinned,
    start_llmops_router,
    start_target,
    wait_port,
    write_section,
)

MODEL = "paced"


def start_sim(itl_ms: float, max_seqs: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = pinned(0, "-m", "llmops", "sim", "--port", str(port), "--model", MODEL, "--ttft-ms", "50",
                  "--itl-ms", str(itl_ms), "--max-num-seqs", str(max_seqs), "--kv-cache-tokens", str(max_seqs * 400))  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    wait_port(port)
    return process, f"http://127.0.0.1:{port}"


def bench_argv(
    url: str, streams: int, requests: int, input_len: int, tokens: int, workers: int
) -> list[str]:
    """``llmops bench`` on core 0 (beside the sim), closed loop at ``streams``."""
    return pinned(0, "-m", "llmops", "bench", "--url", url, "--model", MODEL, "--concurrency", str(streams),
                  "--num-requests", str(requests), "--input-len", str(input_len), "--output-len", str(tokens),
                  "--workers", str(workers), "--ui", "none", "--timeout", "600")  # fmt: skip


def bench(url: str, streams: int, requests: int, tokens: int, workdir: Path) -> dict[str, float]:
    out = workdir / "run.json"
    argv = bench_argv(url, streams, requests, 16, tokens, 1)
    subprocess.run([*argv, "--output", str(out)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())  # type: ignore[no-any-return]


async def _first_token_s(session: aiohttp.ClientSession, url: str) -> float:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "stream": True,
    }
    started = time.perf_counter()
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        async for chunk in response.content.iter_any():
            if b'"content":"' in chunk and b'"content":""' not in chunk:
                first = time.perf_counter() - started
                await response.read()
                return first
    raise RuntimeError("no token")


def quiet_ttft_ms(url: str, probes: int = 30) -> float:
    """Median time to the first token of single streams, one at a time (no load)."""

    async def run() -> float:
        async with aiohttp.ClientSession() as session:
            await _first_token_s(session, url)  # warm the connection
            return median([await _first_token_s(session, url) for _ in range(probes)]) * 1000

    return asyncio.run(run())


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def paced(args: argparse.Namespace, workdir: Path) -> dict[str, list[dict[str, float]]]:
    sim, sim_url = start_sim(args.itl_ms, args.streams * 2)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in TARGETS}
    try:
        for run in range(args.runs):
            for name in results:
                proxy, url = start_target(name, sim_url, MODEL, workdir)
                time.sleep(0.5)
                try:
                    quiet_ttft = quiet_ttft_ms(url)
                    before = cpu_seconds(proxy.pid) if proxy else 0.0
                    started = time.monotonic()
                    result = bench(
                        url, args.streams, args.streams * args.rounds, args.tokens, workdir
                    )
                    elapsed = time.monotonic() - started
                    cpu = cpu_seconds(proxy.pid) - before if proxy else float("nan")
                finally:
                    if proxy is not None:
                        proxy.terminate()
                        proxy.wait()
                # One event per token, and the role, finish, usage and [DONE] events.
                chunks = result["total_output_tokens"] + 4 * result["completed"]
                results[name].append(
                    {
                        "chunks_per_s": chunks / result["duration"],
                        "cpu_us_per_chunk": cpu / chunks * 1e6,
                        "proxy_cpu_share": cpu / elapsed,
                        "quiet_ttft_ms": quiet_ttft,
                        "ttft_p50_ms": result["median_ttft_ms"],
                        "ttft_p99_ms": result["p99_ttft_ms"],
                        "itl_p50_ms": result["median_itl_ms"],
                        "itl_p99_ms": result["p99_itl_ms"],
                        "errors": result.get("failed", 0) or 0,
                    }
                )
                print(f"run {run + 1} {name}: {results[name][-1]}", flush=True)
    finally:
        sim.terminate()
        sim.wait()
    return results


def memory(args: argparse.Namespace, workdir: Path) -> list[tuple[int, float, float, int]]:
    """RSS of the router while it holds N slow streams open; and how many streams failed."""
    rows = []
    for streams in args.hold:
        sim, sim_url = start_sim(1000.0, streams + 10)  # one token a second: streams stay open
        router, url = start_llmops_router(sim_url, MODEL, workdir)
        try:
            time.sleep(1.0)
            baseline = rss_bytes(router.pid)
            out = workdir / "hold.json"
            client = subprocess.Popen(
                [*bench_argv(url, streams, streams, 4, 20, 2), "--output", str(out)],
                stdout=subprocess.DEVNULL,
            )
            peak, deadline = baseline, time.monotonic() + 120
            while client.poll() is None and time.monotonic() < deadline:
                peak = max(peak, rss_bytes(router.pid))
                time.sleep(0.5)
            client.wait()
            failed = json.loads(out.read_text()).get("failed", 0) or 0
            rows.append((streams, baseline / 2**20, peak / 2**20, failed))
            print(
                f"{streams} streams: router RSS {baseline / 2**20:.0f} MiB idle, "
                f"{peak / 2**20:.0f} MiB peak, {failed} failed",
                flush=True,
            )
        finally:
            for process in (router, sim):
                process.terminate()
                process.wait()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--itl-ms", type=float, default=40.0)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3, help="requests per stream slot")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="llmops-paced-"))
    results = paced(args, workdir)
    rows = memory(args, workdir) if args.hold else []

    def m(name: str, key: str) -> float:
        return median([r[key] for r in results[name]])

    lines = [
        f"{args.streams} concurrent streams from `llmops sim` (ITL {args.itl_ms:g} ms, {args.tokens} tokens each, "
        f"{args.rounds} requests per stream slot), client `llmops bench` and sim on core 0, proxy alone on core 1; "
        f"medians of {args.runs} interleaved runs.",
        f"Command: `python benchmarks/paced_streams.py --streams {args.streams} --itl-ms {args.itl_ms:g} "
        f"--tokens {args.tokens} --runs {args.runs} --write`",
        "",
        "| path | chunks/s relayed | proxy CPU µs/chunk | chunks/s per core (1/CPU) | TTFT 1 stream ms | added TTFT ms | TTFT p50 / p99 under load ms | ITL p50 / p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    direct_ttft = m("direct", "quiet_ttft_ms")
    for name in results:
        capacity = 1e6 / m(name, "cpu_us_per_chunk")
        lines.append(
            f"| {name} | {m(name, 'chunks_per_s'):,.0f} | {m(name, 'cpu_us_per_chunk'):.1f} | "
            f"{'-' if capacity != capacity else f'{capacity:,.0f}'} | {m(name, 'quiet_ttft_ms'):.2f} | "
            f"{m(name, 'quiet_ttft_ms') - direct_ttft:+.2f} | {m(name, 'ttft_p50_ms'):.0f} / {m(name, 'ttft_p99_ms'):.0f} | "
            f"{m(name, 'itl_p50_ms'):.1f} / {m(name, 'itl_p99_ms'):.1f} | {sum(r['errors'] for r in results[name]):.0f} |"
        )
    if rows:
        lines += [
            "",
            "Router memory holding slow streams open (one token a second):",
            "",
            "| concurrent streams | router RSS idle MiB | router RSS peak MiB | per stream KiB | failed streams |",
            "|---|---|---|---|---|",
        ]
        for streams, idle, peak, failed in rows:
            per_stream = (peak - idle) * 1024 / streams
            lines.append(f"| {streams:,} | {idle:.0f} | {peak:.0f} | {per_stream:.1f} | {failed} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section("Paced streaming and memory (issue 8)", table)


if __name__ == "__main__":
    main()
