"""The router raises its own open-file limit and says clearly when it stays too low."""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from pathlib import Path

import orjson
import yaml

from tests.conftest import StartSim, router_config, router_process
from tests.router.test_fast_lane import chat, post, read_response
from tests.router.test_hardening_slow_clients import connect


def test_the_soft_limit_is_raised_to_the_hard_one_and_a_low_one_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(router_config([("m", "http://127.0.0.1:9")])))

    def low_limits() -> None:  # soft 1024, hard 4096: what a default shell often has
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096))

    router = subprocess.Popen(
        [sys.executable, "-m", "llmops", "router", "serve", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=low_limits,
    )
    try:
        assert router.stdout is not None
        assert " serving " in router.stdout.readline()
        limits = Path(f"/proc/{router.pid}/limits").read_text()
        open_files = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert open_files.split()[3:5] == ["4096", "4096"]  # soft raised to the hard limit
    finally:
        router.terminate()
        _, stderr = router.communicate(timeout=30)
    assert "open-file limit is 4096" in stderr
    assert "ulimit -n 65536" in stderr
    assert "Traceback" not in stderr


async def test_running_out_of_open_files_is_a_503_at_once_and_no_engine_is_blamed(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Streams take the router's last descriptors; a request that then needs a new engine
    connection gets a 503 with Retry-After at once (no retry: every engine would meet the
    same shortage), however often it is asked, and no engine is ejected for the router's
    own shortage: once the streams end, requests go through."""
    sims = [await start_sim(model="m", itl_ms=100) for _ in range(2)]
    config = tmp_path / "router.yaml"
    backends = [("m", sim.url) for sim in sims]
    config.write_text(yaml.safe_dump(router_config(backends)))  # breaker: 5 in a row
    async with router_process(config, open_files=64) as (_, url):
        prober = await connect(url)  # accepted before the descriptors run out
        streams = []
        for _ in range(64):  # each stream holds two: the client's socket and the engine's
            reader, writer = await connect(url)
            streams.append(writer)
            writer.write(post(chat("hold", stream=True, max_tokens=200)))
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the router could not take the connection: it is out of descriptors
            if not head.startswith(b"HTTP/1.1 200"):
                break  # it took the connection but could not reach the engine
        else:
            raise AssertionError("64 streams did not use up 64 descriptors")
        for _ in range(8):  # more than the breaker's 5 consecutive failures
            prober[1].write(post(chat("more")))
            status, headers, body = await asyncio.wait_for(read_response(prober[0]), 10)
            error = orjson.loads(body)["error"]
            assert status == b"HTTP/1.1 503 Service Unavailable", error
            assert error["code"] == "router_resources"  # not the engine's fault: no ejection
            assert "Too many open files" in error["message"]
            assert headers["retry-after"] == "1"
        for writer in streams:
            writer.close()
        await asyncio.sleep(0.5)  # the router sees the clients go and closes their streams
        for _ in range(4):  # the engines still take requests: none was ejected
            prober[1].write(post(chat("after")))
            status, _, body = await asyncio.wait_for(read_response(prober[0]), 10)
            assert status == b"HTTP/1.1 200 OK", body
        prober[1].write(b"GET /metrics HTTP/1.1\r\nHost: r\r\n\r\n")
        _, _, metrics = await asyncio.wait_for(read_response(prober[0]), 10)
        prober[1].close()
    shortages = sum(
        float(line.rsplit(b" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(b"llmops_router_upstream_failures_total") and b"router_resources" in line
    )
    assert 8 <= shortages <= 9  # one attempt per request (a stream may have met it too)
    assert b"\nllmops_router_retries_total{" not in metrics  # no retry on the other engine
