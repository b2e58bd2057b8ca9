"""`llmops demo`: sims and a router in one command, all gone after SIGTERM or Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.conftest import running


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_demo_serves_three_backends_and_leaves_nothing_behind(stop_signal: int) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "llmops", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in lines):
            lines.append(demo.stdout.readline())
        banner = "".join(lines)
        match = re.search(r"behind a router on (http://\S+)", banner)
        assert match, banner
        url = match.group(1)
        assert banner.count("demo-model on http://") == 3
        assert "llmops dashboard --url" in banner and "llmops bench --url" in banner
        children = children_of(demo.pid)
        assert len(children) == 4  # three sims and the router

        async with aiohttp.ClientSession() as http:
            body = {
                "model": "demo-model",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 3,
            }
            async with http.post(f"{url}/v1/chat/completions", json=body) as response:
                assert response.status == 200
                assert (await response.json())["usage"]["completion_tokens"] == 3
            async with http.get(f"{url}/status") as response:
                status = await response.json()
        assert [b["state"] for b in status["backends"]] == ["healthy"] * 3

        demo.send_signal(stop_signal)
        assert demo.wait(timeout=30) == 0
        rest = demo.stdout.read()
        assert "llmops demo: stopped" in rest
        assert "Traceback" not in banner + rest
        for child in children:
            assert not os.path.exists(f"/proc/{child}")  # stopped and reaped by the demo
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()


def test_a_demo_killed_outright_takes_its_children_with_it() -> None:
    """SIGKILL gives the demo no chance to clean up: the kernel tells the children instead."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "llmops", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "Ctrl-C" not in demo.stdout.readline():
            pass
        children = children_of(demo.pid)
        assert len(children) == 4
        demo.kill()
        demo.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(map(running, children)):
            time.sleep(0.1)
        assert [c for c in children if running(c)] == []
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        if demo.stdout is not None:
            demo.stdout.close()
