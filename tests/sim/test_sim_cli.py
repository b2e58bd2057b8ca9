"""`llmops sim` as a real child process: the ready line, serving, signals, exit codes."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest

READY = re.compile(r"^llmops sim: serving (\S+) \((vllm|sglang)\) on (http://127\.0\.0\.1:(\d+))$")


async def start_cli(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llmops", "sim", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), timeout=20)).decode().rstrip("\n")
    match = READY.match(line)
    assert match, line
    return process, match.group(3)


async def stop(process: asyncio.subprocess.Process, signum: int) -> tuple[int, bytes]:
    process.send_signal(signum)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    assert process.returncode is not None
    return process.returncode, stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_serves_on_a_free_port_and_exits_0_on_signal(signum: int) -> None:
    process, url = await start_cli("--model", "m", "--engine", "sglang", "--itl-ms", "5")
    try:
        async with aiohttp.ClientSession() as http:
            body = {"model": "m", "prompt": "a b", "max_tokens": 3, "stream": True}
            async with http.post(f"{url}/v1/completions", json=body) as response:
                assert response.status == 200
                assert (await response.read()).endswith(b"data: [DONE]\n\n")
            # A stream still open at shutdown must not make the exit unclean.
            open_stream = await http.post(
                f"{url}/v1/completions", json={**body, "max_tokens": 10_000, "ignore_eos": True}
            )
            await open_stream.content.readany()
            code, stderr = await stop(process, signum)
            open_stream.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert b"Traceback" not in stderr, stderr.decode()


def test_bad_options_exit_1_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmops", "sim", "--fail-rate", "2"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "llmops: invalid sim options: fail_rate must be between 0 and 1"
    ]


def test_a_taken_port_exits_1_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "llmops", "sim", "--port", str(port)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"llmops: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


def test_unknown_engine_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmops", "sim", "--engine", "tgi"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2


def test_help_shows_an_example() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmops", "sim", "--help"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert "Example" in result.stdout
    assert "llmops sim --port 8001" in result.stdout
