"""Fixtures for bench tests: `llmops sim` processes on port 0 (bench blocks its own thread
while it runs, so an in-process sim would stall), always stopped at teardown."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

StartSim = Callable[..., str]

_SERVING = re.compile(r"on (http://\S+)")


@pytest.fixture
def start_sim() -> Iterator[StartSim]:
    """``start_sim(ttft_ms=100, itl_ms=20)`` → base URL of a fresh `llmops sim` process."""
    processes: list[subprocess.Popen[str]] = []

    def start(**flags: object) -> str:
        args = [sys.executable, "-m", "llmops", "sim", "--port", "0"]
        for name, value in flags.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        match = _SERVING.search(line)
        if not match:
            process.kill()
            _, stderr = process.communicate(timeout=10)
            pytest.fail(f"llmops sim did not start: {line!r} {stderr!r}")
        return match.group(1)

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
