"""Real OpenSSH servers on loopback as the deploy tests' "GPU nodes".

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
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

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
# index, memory.total, memory.used (MiB) of $STANDIN_GPUS idle GPUs; no compute apps.
case "$*" in
  *--query-gpu*) i=0; while [ $i -lt "$STANDIN_GPUS" ]; do echo "$i, 81920, 0"; i=$((i+1)); done ;;
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


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    sshd = "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        reason = "sshd is not installed" if not os.path.exists(sshd) else "sshd tests need root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (scripts/test installs openssh-server)")
        pytest.skip(reason)
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
        for address in NODE_ADDRESSES:
            port = free_port(address)
            config = root / f"sshd_{address}.conf"
            config.write_text(
                f"Port {port}\nListenAddress {address}\nHostKey {root / 'host_key'}\n"
                f"PidFile {root / f'sshd_{address}.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
                "PermitRootLogin yes\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nMaxSessions 10\nMaxStartups 100\nLogLevel ERROR\n"
                f"SetEnv PATH={path} STANDIN_DUMP_DIR={dump_dir} STANDIN_GPUS={STANDIN_GPUS[address]}\n"
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
