"""By-hand measurement (not a test): N concurrent streams against a `llmops sim` child process.

    python benchmarks/sim_streams.py 10000 500 20    # streams, itl_ms, tokens each

Prints the sim's RSS and CPU while (nearly) all streams are open, the sim's own mean TTFT and
how many streams completed with every token. The client is one Python process, so its
first-chunk latency mostly measures the client's own connection ramp, not the sim.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import aiohttp
import uvloop


def sim_cpu_and_rss(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        match = re.search(r"VmRSS:\s+(\d+)", f.read())
    return cpu_s, int(match.group(1)) if match else 0


async def one_stream(http: aiohttp.ClientSession, url: str, body: dict[str, object]) -> int:
    tokens = 0
    async with http.post(f"{url}/v1/completions", json=body) as response:
        async for chunk in response.content.iter_any():
            tokens += chunk.count(b'"text":"') - chunk.count(b'"text":""')
    return tokens


async def main(streams: int, itl_ms: float, tokens: int) -> None:
    command = [sys.executable, "-m", "llmops", "sim", "--port", "0", "--itl-ms", str(itl_ms),
               "--ttft-ms", "100", "--max-num-seqs", str(streams),
               "--kv-cache-tokens", str(streams * (tokens + 10) * 2)]  # fmt: skip
    sim = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert sim.stdout is not None
    url = sim.stdout.readline().rsplit(" ", 1)[1].strip()
    _, idle_rss = sim_cpu_and_rss(sim.pid)
    body = {"prompt": "w " * 10, "max_tokens": tokens, "ignore_eos": True, "stream": True}
    samples: list[tuple[float, int, float, int]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        tasks = [asyncio.create_task(one_stream(http, url, body)) for _ in range(streams)]
        while not all(task.done() for task in tasks):
            await asyncio.sleep(0.5)
            async with http.get(f"{url}/sim/stats") as response:
                running = (await response.json())["running"]
            samples.append((time.perf_counter(), running, *sim_cpu_and_rss(sim.pid)))
        counts = await asyncio.gather(*tasks)
        wall_s = time.perf_counter() - started
        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
    sim.terminate()
    exit_code = sim.wait()
    ttft_sum = float(re.findall(r"time_to_first_token_seconds_sum\S* (\S+)", metrics)[0])
    ttft_count = float(re.findall(r"time_to_first_token_seconds_count\S* (\S+)", metrics)[0])
    print(f"{streams} streams, itl {itl_ms} ms, {tokens} tokens each: wall {wall_s:.1f} s, "
          f"peak running {max(s[1] for s in samples)}, "
          f"complete {sum(c == tokens for c in counts)}/{streams}, sim exit {exit_code}")  # fmt: skip
    print(f"sim RSS idle {idle_rss / 1024:.0f} MiB, peak {max(s[3] for s in samples) / 1024:.0f} MiB; "
          f"sim mean TTFT {1000 * ttft_sum / ttft_count:.0f} ms")  # fmt: skip
    full = [s for s in samples if s[1] >= 0.99 * streams]
    if len(full) >= 2:
        (t0, _, cpu0, _), (t1, _, cpu1, _) = full[0], full[-1]
        print(f"with >=99% of streams open for {t1 - t0:.1f} s: sim CPU "
              f"{100 * (cpu1 - cpu0) / (t1 - t0):.0f}% of one core")  # fmt: skip


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])))
