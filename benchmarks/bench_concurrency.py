"""`llmops bench --concurrency 10000` against simulated engines on this machine.

Starts `--sims` `llmops sim` processes (each holding concurrency/sims sequences in its batch,
long TTFT/ITL so the sims' own CPU stays bounded), runs the bench as a user would (CLI, JSON
result), and prints per-run figures and their medians as a Markdown table: completions,
client errors, peak in flight, duration, achieved rates, the saturation verdict and the peak
RSS of the bench processes (coordinator + workers).

    python benchmarks/bench_concurrency.py --runs 3 --concurrency 10000
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def start_sim(
    max_num_seqs: int, ttft_ms: int, itl_ms: int, output_len: int
) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "llmops", "sim", "--port", "0", "--max-num-seqs", str(max_num_seqs),
         "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--output-len", str(output_len),
         "--kv-cache-tokens", str(max_num_seqs * 64)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    match = re.search(r"on (http://\S+)", process.stdout.readline())
    if not match:
        process.kill()
        sys.exit("llmops sim did not start")
    return process, match.group(1)


def run_once(args: argparse.Namespace, urls: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        command = [sys.executable, "-m", "llmops", "bench", "--ui", "none",
                   "--concurrency", str(args.concurrency), "-n", str(args.concurrency * args.rounds),
                   "--input-len", "16", "--output-len", str(args.output_len),
                   "--workers", str(args.workers), "--ramp-up", str(args.ramp_up),
                   "--timeout", "300", "--output", str(out)]  # fmt: skip
        for url in urls:
            command += ["--url", url]
        done = subprocess.run(command, capture_output=True, text=True)
        if not out.exists():
            sys.exit(f"bench failed: {done.stderr}")
        result: dict[str, Any] = json.loads(out.read_text())
    health = result["client_health"]
    rss = health["max_rss_bytes_total"] + health["coordinator_max_rss_bytes"]
    return {
        "completed": result["completed"],
        "client_errors": result["failed"],
        "errors": result["errors_by_class"],
        "peak_in_flight": result["peak_in_flight"],
        "duration_s": result["duration"],
        "req_per_s": result["request_throughput"],
        "out_tok_per_s": result["output_throughput"],
        "median_ttft_ms": result["median_ttft_ms"],
        "saturated": result["client_saturated"],
        "reasons": "; ".join(health["saturation_reasons"]) or "-",
        "worker_cpu_percent": [w["cpu_percent"] for w in health["workers"]],
        "rss_mib": rss / 2**20,
        "worker_rss_mib": [w["max_rss_bytes"] / 2**20 for w in health["workers"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=2, help="requests = rounds x concurrency")
    parser.add_argument("--sims", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ramp-up", type=float, default=5.0)
    parser.add_argument("--ttft-ms", type=int, default=1000)
    parser.add_argument("--itl-ms", type=int, default=2000)
    parser.add_argument("--output-len", type=int, default=4)
    args = parser.parse_args()
    per_sim = -(-args.concurrency // args.sims)
    runs = []
    for run in range(args.runs):
        # Fresh sims per run: no connection or queue state carries over.
        sims = [
            start_sim(per_sim, args.ttft_ms, args.itl_ms, args.output_len) for _ in range(args.sims)
        ]
        try:
            figures = run_once(args, [url for _, url in sims])
        finally:
            for process, _ in sims:
                process.terminate()
            for process, _ in sims:
                process.wait()
        runs.append(figures)
        print(f"run {run + 1}: {json.dumps(figures)}", file=sys.stderr)
    print(
        f"| run | completed | client errors | peak in flight | duration s | req/s | out tok/s "
        f"| median TTFT ms | client saturated | bench RSS MiB (coordinator + {args.workers} workers) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for number, r in enumerate(runs, start=1):
        verdict = f"yes: {r['reasons']}" if r["saturated"] else "no"
        print(
            f"| {number} | {r['completed']} | {r['client_errors']} | {r['peak_in_flight']} "
            f"| {r['duration_s']:.1f} | {r['req_per_s']:.0f} | {r['out_tok_per_s']:.0f} "
            f"| {r['median_ttft_ms']:.0f} | {verdict} | {r['rss_mib']:.0f} |"
        )

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    saturated = sum(1 for r in runs if r["saturated"])
    print(
        f"| median | {med('completed'):.0f} | {med('client_errors'):.0f} | {med('peak_in_flight'):.0f} "
        f"| {med('duration_s'):.1f} | {med('req_per_s'):.0f} | {med('out_tok_per_s'):.0f} "
        f"| {med('median_ttft_ms'):.0f} | {saturated}/{len(runs)} runs | {med('rss_mib'):.0f} |"
    )


if __name__ == "__main__":
    main()
