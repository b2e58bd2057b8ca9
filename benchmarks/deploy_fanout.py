"""How deploy's wall time grows with the number of nodes (not a test: run it by hand).

    python benchmarks/deploy_fanout.py [MAX_NODES]

Each "node" is its own sshd on a loopback address (127.0.1.k), as in the tests. Measured:
``plan`` of ``gpus: auto`` nodes (one SSH connection and one agent call per node running
an nvidia-smi that takes 1 s, like a real one: the control plane alone) and a full ``up`` of one ``llmops sim`` per node, then
``stop`` (engine start-up is CPU work: on a 2-core machine it dominates). Printed as wall time and as the ratio to
one node: 1.0 would be perfectly concurrent, N would be one node after the other. Here the
"nodes" share this machine's cores with the deployer, so wall time also counts the nodes'
own work (bash, Python, nvidia-smi, engines); the deployer's own CPU per node is what
bounds how many real nodes one box can drive at once.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "deploy"))
from deploy_lab import SshLab, free_port, run, start_ssh_lab  # the tests' SSH lab


class _Temp:
    def mktemp(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=name))


def spec_for(lab: SshLab, count: int, work: Path, port: int, with_models: bool) -> Path:
    gpus = 1 if with_models else "auto"  # auto: planning asks each node's nvidia-smi
    nodes = [{"host": n.address, "gpus": gpus, "ssh": {"port": n.port}} for n in lab.nodes[:count]]
    models = [{"name": "m", "model": "/m", "replicas": "fill", "port": port}] if with_models else []
    data = {
        "deployment": "bench",
        "ssh": lab.ssh_section(),
        "agent_python": sys.executable,
        "state_dir": str(work / "state"),
        "router_config": "backends.yaml",
        "nodes": nodes,
        "models": models,
    }
    path = work / f"nodes-{count}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def measure(lab: SshLab, counts: list[int]) -> None:
    work = Path(tempfile.mkdtemp(prefix="fanout"))
    port = free_port()
    base: dict[str, float] = {}
    print(
        f"{'nodes':>5} {'plan s':>7} {'ratio':>6} {'deployer CPU ms/node':>21} {'up+stop s':>10} {'ratio':>6}"
    )
    for count in counts:
        start, cpu = time.perf_counter(), time.process_time()
        plan = await run(spec_for(lab, count, work, port, False), "plan")
        status_s = time.perf_counter() - start
        cpu_ms = (time.process_time() - cpu) * 1000 / count
        assert not plan.unavailable_nodes
        spec = spec_for(lab, count, work, port, True)
        start = time.perf_counter()
        up = await run(spec, "up")
        stopped = await run(spec, "stop")
        up_s = time.perf_counter() - start
        assert not up.errors and not stopped.errors, (up.errors, stopped.errors)
        base.setdefault("status", status_s)
        base.setdefault("up", up_s)
        print(
            f"{count:>5} {status_s:>7.2f} {status_s / base['status']:>6.2f} {cpu_ms:>21.1f} "
            f"{up_s:>10.2f} {up_s / base['up']:>6.2f}"
        )


def main() -> None:
    most = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    addresses = tuple(f"127.0.1.{k}" for k in range(1, most + 1))
    # nvidia-smi takes about a second on a real node; the stand-in sleeps as long (no CPU),
    # so `plan` shows whether the nodes are asked at the same time or one after the other.
    lab_iter = start_ssh_lab(_Temp(), addresses, "STANDIN_SMI_DELAY_S=1")  # type: ignore[arg-type]
    lab = next(lab_iter)
    try:
        asyncio.run(measure(lab, sorted({1, max(1, most // 4), max(1, most // 2), most})))
    finally:
        for _ in lab_iter:
            pass


if __name__ == "__main__":
    main()
