"""The supervisor of ``llmops router serve --workers N``: N router processes, one port.

Each worker binds the port with SO_REUSEPORT, so the kernel spreads connections over them.
The supervisor holds the port (bound, never listening) so that port 0 means one port for
all, starts the workers, passes SIGTERM/SIGINT/SIGHUP on, and restarts a worker that dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from llmops.config import load_router_config
from llmops.errors import RouterError

_READY_TIMEOUT_S = 60.0
_RESTART_PAUSE_S = 1.0


def _reserve_port(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))
    except OSError as exc:
        holder.close()
        raise RouterError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return holder


def supervise(
    config_path: Path, host: str | None, port: int | None, workers: int, log_level: str
) -> None:
    """Run ``workers`` router processes until SIGTERM or SIGINT; returns when all have exited."""
    server = load_router_config(config_path).config.server  # fail fast on a bad config
    bind_host = host if host is not None else server.host
    holder = _reserve_port(bind_host, port if port is not None else server.port)
    bound_port = holder.getsockname()[1]
    socket_dir = Path(tempfile.mkdtemp(prefix="llmops-router-"))
    stopping = threading.Event()

    def command(index: int) -> list[str]:
        return [
            sys.executable, "-m", "llmops", "router", "serve", "--config", str(config_path),
            "--host", bind_host, "--port", str(bound_port), "--log-level", log_level,
            "--worker-index", str(index), "--worker-count", str(workers),
            "--worker-dir", str(socket_dir),
        ]  # fmt: skip

    def start(index: int) -> subprocess.Popen[str]:
        return subprocess.Popen(command(index), stdout=subprocess.PIPE, text=True)

    processes = [start(i) for i in range(workers)]
    previous = {
        s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGTERM, signal.SIGINT)
    }
    signal.signal(signal.SIGHUP, lambda *_: _signal_all(processes, signal.SIGHUP))
    try:
        for process in processes:
            _wait_ready(process)
        print(
            f"llmops router: serving on http://{bind_host}:{bound_port} with {workers} workers "
            f"(pids {', '.join(str(p.pid) for p in processes)})",
            flush=True,
        )
        while not stopping.wait(0.2):
            for index, process in enumerate(processes):
                if process.poll() is not None and not stopping.is_set():
                    print(
                        f"llmops router: worker {index} exited ({process.returncode}); restarting",
                        flush=True,
                    )
                    time.sleep(_RESTART_PAUSE_S)
                    processes[index] = start(index)
                    _wait_ready(processes[index])
    finally:
        _signal_all(processes, signal.SIGTERM)
        for process in processes:
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        holder.close()
        for path in socket_dir.iterdir():
            path.unlink(missing_ok=True)
        socket_dir.rmdir()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("llmops router: stopped", flush=True)


def _signal_all(processes: list[subprocess.Popen[str]], signum: int) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)


def _wait_ready(process: subprocess.Popen[str]) -> None:
    """Wait for a worker's 'serving' line, then keep relaying what it prints."""
    assert process.stdout is not None
    deadline = time.monotonic() + _READY_TIMEOUT_S
    for line in process.stdout:
        if " serving " in line:
            threading.Thread(target=_relay, args=(process,), daemon=True).start()
            return
        print(line, end="", flush=True)
        if time.monotonic() > deadline:
            break
    raise RouterError(f"a router worker did not start (exit code {process.poll()})")


def _relay(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    with contextlib.suppress(ValueError, OSError):
        for line in process.stdout:
            print(line, end="", flush=True)
