"""Real OpenSSH servers on loopback as the deploy tests' "GPU nodes" (used by conftest.py).

Two nodes: sshd on 127.0.0.1 and on 127.0.0.2, each on a free port, logging in as the
current user (root) with a generated key. The nodes' PATH (sshd ``SetEnv``) starts with a
directory of stand-ins: ``vllm``, a ``python`` that handles ``-m sglang.launch_server``,
``nvidia-smi`` (1 GPU on node 1, 4 on node 2) and ``python3`` (this interpreter, for the node agent). The
stand-in engines write their argv and environment to ``<dump dir>/<address>-<port>.json``
and exec ``llmops sim`` on the node's own address (from ``SSH_CONNECTION``), so each node's
engines stay apart although both nodes are this machine.

Both nodes share the machine's root account, so the tests keep remote state apart with a
``state_dir`` per test in the spec (instance names differ per node anyway).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import yaml

from llmops.deploy.operations import Deployer, RunResult
from llmops.deploy.spec import load_spec
from llmops.deploy.ssh import NodeConnections
from tests.conftest import missing_part

NODE_ADDRESSES = ("127.0.0.1", "127.0.0.2")

STANDIN_ENGINE = r'''
import json, os, sys

def run(engine, argv):
    """Record how we were started, then become ``llmops sim`` on this node's address."""
    def flag(name):
        return argv[argv.index(name) + 1]
    port = flag("--port")
    name = flag("--served-model-name")
    address = os.environ["SSH_CONNECTION"].split()[2]
    dump_dir = os.environ.get("STANDIN_DUMP_DIR")
    if dump_dir:
        keys = ("CUDA_VISIBLE_DEVICES", "VLLM_PORT", "VLLM_API_KEY", "STANDIN_NOTE")
        record = {"argv": argv, "env": {k: os.environ[k] for k in keys if k in os.environ}}
        with open(os.path.join(dump_dir, f"{address}-{port}.json"), "w") as handle:
            json.dump(record, handle)
    if os.environ.get("STANDIN_STUBBORN_CHILD"):
        # A worker in the engine's process group that ignores SIGTERM: only SIGKILL ends it.
        import subprocess
        subprocess.Popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.2; done"])
    if os.environ.get("STANDIN_HANG"):
        print("stand-in engine: loading weights (forever)", flush=True)
        import time
        time.sleep(3600)
    if os.environ.get("STANDIN_CRASH"):
        print("stand-in engine: CUDA error: out of memory (simulated crash)", flush=True)
        sys.exit(1)
    sim = [sys.executable, "-m", "llmops", "sim", "--host", address, "--port", port,
           "--model", name, "--engine", engine]
    os.execv(sys.executable, sim)
'''

VLLM = """#!{python}
import sys
sys.path.insert(0, {dir!r})
from standin_engine import run
assert sys.argv[1] == "serve"
run("vllm", sys.argv)
"""

PYTHON = """#!{python}
import os, sys
if sys.argv[1:3] == ["-m", "sglang.launch_server"]:
    sys.path.insert(0, {dir!r})
    from standin_engine import run
    run("sglang", sys.argv)
os.execv({python!r}, [{python!r}, *sys.argv[1:]])
"""

NVIDIA_SMI = """#!/bin/sh
# --query-gpu: index, memory.total, memory.used (MiB) of $STANDIN_GPUS idle GPUs.
# --query-compute-apps: pid, used memory: every running stand-in engine holds 1000 MiB.
case "$*" in
  *--query-gpu*) sleep "${{STANDIN_SMI_DELAY_S:-0}}"; i=0; while [ $i -lt "$STANDIN_GPUS" ]; do echo "$i, 81920, 0"; i=$((i+1)); done ;;
  *--query-compute-apps*) for pid in $(pgrep -f "llmops sim"); do echo "$pid, 1000"; done ;;
esac
"""
# GPUs nvidia-smi reports on each node (node 1 is the one tests declare ``gpus: auto``).
STANDIN_GPUS = {"127.0.0.1": 1, "127.0.0.2": 4}


@dataclass(frozen=True)
class SshNode:
    address: str
    port: int


@dataclass(frozen=True)
class SshLab:
    nodes: tuple[SshNode, ...]
    client_key: Path
    known_hosts: Path
    dump_dir: Path
    standin_dir: Path
    host_public_key: str

    def ssh_section(self) -> dict[str, object]:
        return {"key": str(self.client_key), "known_hosts": str(self.known_hosts), "user": "root"}


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def wait_for_port(address: str, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on {address}:{port}: {log.read_text()}")


def _write_standins(directory: Path) -> None:
    directory.mkdir()
    (directory / "standin_engine.py").write_text(STANDIN_ENGINE)
    for name, text in (("vllm", VLLM), ("python", PYTHON), ("nvidia-smi", NVIDIA_SMI)):
        path = directory / name
        path.write_text(text.format(python=sys.executable, dir=str(directory)))
        path.chmod(0o755)
    (directory / "python3").symlink_to(sys.executable)


def start_ssh_lab(
    tmp_path_factory: pytest.TempPathFactory,
    addresses: tuple[str, ...] = NODE_ADDRESSES,
    extra_env: str = "",
) -> Iterator[SshLab]:
    """Start both nodes' sshd (generator for a session fixture); stops them at the end."""
    sshd = "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        reason = "sshd is not installed" if not os.path.exists(sshd) else "sshd tests need root"
        missing_part(f"{reason} (scripts/test installs openssh-server)")
    root = tmp_path_factory.mktemp("ssh")
    root.chmod(0o755)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    host_key.write_private_key(str(root / "host_key"))
    client_key.write_private_key(str(root / "client_key"))
    (root / "host_key").chmod(0o600)
    (root / "client_key").chmod(0o600)
    client_key.write_public_key(str(root / "authorized_keys"))
    host_public = host_key.export_public_key().decode().strip()
    standins = root / "bin"
    _write_standins(standins)
    dump_dir = root / "dump"
    dump_dir.mkdir()
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    path = f"{standins}:/usr/local/bin:/usr/bin:/bin"
    nodes, processes, known = [], [], []
    try:
        for address in addresses:
            port = free_port(address)
            config = root / f"sshd_{address}.conf"
            config.write_text(
                f"Port {port}\nListenAddress {address}\nHostKey {root / 'host_key'}\n"
                f"PidFile {root / f'sshd_{address}.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
                "PermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nMaxSessions 10\nMaxStartups 100\nLogLevel ERROR\n"
                f"SetEnv PATH={path} STANDIN_DUMP_DIR={dump_dir} STANDIN_GPUS={STANDIN_GPUS.get(address, 1)} {extra_env}\n"
            )
            log = root / f"sshd_{address}.log"
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=log_file,
                )
            processes.append(process)
            wait_for_port(address, port, process, log)
            nodes.append(SshNode(address, port))
            known.append(f"[{address}]:{port} {host_public}")
        known_hosts = root / "known_hosts"
        known_hosts.write_text("\n".join(known) + "\n")
        yield SshLab(
            tuple(nodes), root / "client_key", known_hosts, dump_dir, standins, host_public
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        kill_leftovers(f"STANDIN_DUMP_DIR={dump_dir}")


def kill_leftovers(marker: str) -> None:
    """SIGKILL every process started through this lab's nodes that a test left running (a
    test stopped half way skips its `stop`); they all inherited ``marker`` from sshd."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            if marker.encode() in environ:
                os.kill(int(entry), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def write_spec(
    lab: SshLab, tmp_path: Path, models: list[dict[str, Any]], node2_gpus: Any = 2, **top: Any
) -> Path:
    """nodes.yaml for both nodes (node 1: ``gpus: auto`` = 1 GPU) with state under tmp_path."""
    nodes = [
        {"host": lab.nodes[0].address, "gpus": "auto", "ssh": {"port": lab.nodes[0].port}},
        {"host": lab.nodes[1].address, "gpus": node2_gpus, "ssh": {"port": lab.nodes[1].port}},
    ]
    data = {
        "deployment": "t",
        "ssh": lab.ssh_section(),
        "state_dir": str(tmp_path / "state"),
        "router_config": "backends/self_deployed_config.yaml",
        "stop_timeout_s": 5,
        "agent_python": sys.executable,  # not pyenv's shim, which root's .bashrc puts first
        "nodes": nodes,
        "models": models,
        **top,
    }
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def run(spec_path: Path, action: str, *args: Any, **kwargs: Any) -> Any:
    loaded = load_spec(spec_path)
    reports: list[tuple[str, str, str]] = []
    async with NodeConnections(loaded.spec) as connections:
        deployer = Deployer(loaded, connections, lambda *r: reports.append(r))
        result = await getattr(deployer, action)(*args, **kwargs)
    return result


def states(result: RunResult) -> dict[str, str]:
    return {name: outcome.state for name, outcome in result.outcomes.items()}


def pids(result: RunResult) -> dict[str, int]:
    return {e["instance"]: e["pid"] for e in result.events if "pid" in e}


def live_group_members(pgid: int) -> list[str]:
    """``ps`` lines of live (non-zombie) processes in a process group."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True
    )
    lines = []
    for line in out.stdout.splitlines():
        _pid, group, stat, *_ = line.split(None, 3)
        if int(group) == pgid and not stat.startswith("Z"):
            lines.append(line)
    return lines


def port_free(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True
