"""Router throughput and added latency against a static nginx backend, vs direct, nginx as a
proxy (the C reference) and the naive aiohttp proxy, on one pinned core each (issue 8's first three scenarios).

    python benchmarks/router_throughput.py [--runs 3] [--seconds 5] [--write]

Scenarios, interleaved per run (direct, nginx proxy_pass, minimal proxy, llmops), medians over runs:
  - non-streaming req/s at 64 connections, and the proxy's CPU microseconds per request
  - streaming (a static 64-chunk SSE body) req/s at 64 connections
  - latency p50/p99 at 1 connection
The llmops router runs with its default features on (health checks, metrics, least-load).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _harness import (
    CHAT_BODY,
    MODEL,
    TARGETS,
    Nginx,
    cpu_seconds,
    median,
    start_target,
    write_section,
    wrk,
)

STREAM_BODY = CHAT_BODY[:-1] + ', "stream": true}'


def measure(url: str, pid: int | None, seconds: float) -> dict[str, float]:
    wrk(url, 64, 1, CHAT_BODY)  # warm-up: connections, pools, caches
    before = cpu_seconds(pid) if pid else 0.0
    plain = wrk(url, 64, seconds, CHAT_BODY)
    cpu = (cpu_seconds(pid) - before) if pid else 0.0
    streamed = wrk(url, 64, seconds, STREAM_BODY, stream=True)
    single = wrk(url, 1, seconds, CHAT_BODY)
    return {
        "rps": plain.requests_per_s,
        "cpu_us": cpu / plain.requests * 1e6 if pid else float("nan"),
        "stream_rps": streamed.requests_per_s,
        "p50_ms": single.p50_ms,
        "p99_ms": single.p99_ms,
        "errors": plain.errors + streamed.errors + single.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--write", action="store_true", help="record the results in BENCHMARKS.md")
    args = parser.parse_args()

    nginx = Nginx(cpu=0)
    workdir = Path(tempfile.mkdtemp(prefix="llmops-bench-"))
    results: dict[str, list[dict[str, float]]] = {name: [] for name in TARGETS}
    try:
        for run in range(args.runs):
            for name in results:
                process, url = start_target(name, nginx.url, MODEL, workdir)
                pid = process.pid if process is not None else None
                time.sleep(0.5)
                try:
                    results[name].append(measure(url, pid, args.seconds))
                finally:
                    if process is not None:
                        process.terminate()
                        process.wait()
                print(f"run {run + 1} {name}: {results[name][-1]}", flush=True)
    finally:
        nginx.stop()
    table = render(results, args)
    print(table)
    if args.write:
        write_section("Router throughput (issue 8)", table)


def render(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> str:
    def m(name: str, key: str) -> float:
        return median([r[key] for r in results[name]])

    base = m("minimal aiohttp proxy", "rps")
    base_stream = m("minimal aiohttp proxy", "stream_rps")
    direct_p50 = m("direct", "p50_ms")
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"nginx + wrk on core 0, the proxy alone on core 1; medians of {args.runs} interleaved runs of {args.seconds:g} s.",
        f"Command: `python benchmarks/router_throughput.py --runs {args.runs} --seconds {args.seconds:g} --write`",
        "",
        "| proxy (one core) | non-streaming req/s @64 | vs minimal | streaming req/s @64 (64 chunks) | vs minimal | CPU µs/request | p50 ms @1 | p99 ms @1 | added p50 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in results:
        lines.append(
            f"| {name} | {m(name, 'rps'):,.0f} | {m(name, 'rps') / base:.2f}x | {m(name, 'stream_rps'):,.0f} | "
            f"{m(name, 'stream_rps') / base_stream:.2f}x | {m(name, 'cpu_us'):.0f} | {m(name, 'p50_ms'):.3f} | "
            f"{m(name, 'p99_ms'):.3f} | {m(name, 'p50_ms') - direct_p50:.3f} | {sum(r['errors'] for r in results[name]):.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
