"""`llmops demo`: simulated engines and a router on localhost, in one command.

Every part runs as its own process, exactly as a user would start it (`llmops sim`,
`llmops router serve`), so killing one sim shows what the router does about it.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from llmops.errors import LlmopsError

DEMO_MODEL = "demo-model"
_START_TIMEOUT_S = 20.0
_EXAMPLE_BODY = f'{{"model": "{DEMO_MODEL}", "messages": [{{"role": "user", "content": "hello"}}]}}'


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[str]
    url: str = ""


def demo(
    port: int = typer.Option(8000, help="Port of the router."),
    backends: int = typer.Option(3, min=1, max=32, help="How many simulated engines to start."),
) -> None:
    """Start simulated engines (one of them slower) and a router in front of them.

    Example: llmops demo --port 8000 --backends 3   (then: llmops dashboard)
    """
    workdir = Path(tempfile.mkdtemp(prefix="llmops-demo-"))
    children: list[_Child] = []
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        for index in range(backends):
            itl_ms = 30 if index == backends - 1 and backends > 1 else 10
            sim = _start(
                f"sim-{index + 1}",
                [
                    "sim",
                    "--port",
                    "0",
                    "--model",
                    DEMO_MODEL,
                    "--itl-ms",
                    str(itl_ms),
                    "--seed",
                    str(index),
                ],
            )
            children.append(sim)
            sim.url = _wait_for_url(sim)
        config = workdir / "router.yaml"
        config.write_text(_router_config([c.url for c in children]))
        router = _start(
            "router",
            [
                "router",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
        )
        children.append(router)
        router.url = _wait_for_url(router)
        _print_welcome(router.url, children[:-1], config)
        while not stop.wait(0.5):
            if router.process.poll() is not None:
                raise LlmopsError(f"the router exited with code {router.process.returncode}")
            for sim in children[:-1]:
                if sim.process.poll() is not None and sim.url:
                    print(
                        f"llmops demo: {sim.name} ({sim.url}) exited; the router routes around it",
                        flush=True,
                    )
                    sim.url = ""
    finally:
        _stop_all(children)
        shutil.rmtree(workdir, ignore_errors=True)
    print("llmops demo: stopped", flush=True)


def _router_config(sim_urls: list[str]) -> str:
    backends = "\n".join(
        f'  - model_name: {DEMO_MODEL}\n    litellm_params: {{api_base: "{url}/v1"}}'
        for url in sim_urls
    )
    return (
        "# Written by `llmops demo`; copy it as a starting point for your own router.yaml.\n"
        "routing: {strategy: least-load, num_retries: 2}\n"
        "health_check: {interval: 1, timeout: 1, failure_threshold: 2, success_threshold: 1}\n"
        f"model_list:\n{backends}\n"
    )


def _start(name: str, args: list[str]) -> _Child:
    process = subprocess.Popen(
        [sys.executable, "-m", "llmops", *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_die_with_parent,
    )
    return _Child(name, process)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if the demo itself dies (no orphaned engines)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_for_url(child: _Child) -> str:
    """Read the child's 'serving ... on URL' line, then keep relaying its output."""
    assert child.process.stdout is not None
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([child.process.stdout], [], [], 0.2)
        if ready:
            line = child.process.stdout.readline()
            if not line:
                break
            if " on http://" in line:
                threading.Thread(target=_relay_output, args=(child,), daemon=True).start()
                return line.rsplit(" on ", 1)[1].strip()
        elif child.process.poll() is not None:
            break
    raise LlmopsError(
        f"{child.name} did not start (exit code {child.process.poll()}); see its output above"
    )


def _relay_output(child: _Child) -> None:
    assert child.process.stdout is not None
    for line in child.process.stdout:
        print(f"[{child.name}] {line}", end="", flush=True)


def _print_welcome(url: str, sims: list[_Child], config: Path) -> None:
    lines = [
        "",
        f"llmops demo: {len(sims)} simulated engine(s) behind a router on {url}",
        *(
            f"  {sim.name}: {DEMO_MODEL} on {sim.url}"
            + ("  (3x slower)" if i == len(sims) - 1 and len(sims) > 1 else "")
            for i, sim in enumerate(sims)
        ),
        f"  router config: {config}",
        "",
        "Next, in another terminal:",
        f"  curl -s {url}/v1/chat/completions -H 'content-type: application/json' \\",
        f"    -d '{_EXAMPLE_BODY}'",
        f"  llmops dashboard --url {url}",
        f"  llmops bench --url {url} --concurrency 64 --num-requests 2000",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


def _stop_all(children: list[_Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()
