"""The SSH layer against real sshd: host-key policy, jump hosts, quoting of every argument."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import yaml
from deploy_lab import SshLab

from llmops.deploy.errors import NodeError
from llmops.deploy.spec import DeploySpec, NodeSpec, load_spec
from llmops.deploy.ssh import NodeConnections, parse_jump, remote_command

HOSTILE = [
    "plain",
    "two words",
    "it's",
    'say "hi"',
    "$(touch /tmp/llmops-pwned)",
    "`touch /tmp/llmops-pwned`",
    "a; touch /tmp/llmops-pwned",
    "line\nbreak",
    "*",
    "~",
    "back\\slash",
    "",
    "-n",
    "${HOME}",
    "&& echo no",
    "|",
    "tab\there",
]


async def output(connections: NodeConnections, node: NodeSpec, argv: list[str]) -> str:
    """What ``argv`` printed on the node (NodeError if it exited non-zero)."""
    return "".join([line async for line in connections.stream(node, argv)])


def spec_for(lab: SshLab, tmp_path: Path, **ssh: object) -> DeploySpec:
    nodes = [{"host": n.address, "gpus": 1, "ssh": {"port": n.port}} for n in lab.nodes]
    data = {"deployment": "ssh", "ssh": {**lab.ssh_section(), **ssh}, "nodes": nodes, "models": []}
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_spec(path).spec


def test_parse_jump() -> None:
    assert parse_jump("bastion") == (None, "bastion", 22)
    assert parse_jump("ops@bastion:2200") == ("ops", "bastion", 2200)
    assert parse_jump("[fe80::1]:2222") == (None, "fe80::1", 2222)


async def test_every_argument_arrives_exactly_as_given(ssh_lab: SshLab, tmp_path: Path) -> None:
    spec = spec_for(ssh_lab, tmp_path)
    async with NodeConnections(spec) as connections:
        program = "import json, sys; print(json.dumps(sys.argv[1:]))"
        printed = await output(connections, spec.nodes[0], ["python3", "-c", program, *HOSTILE])
    assert yaml.safe_load(printed) == HOSTILE
    assert not Path("/tmp/llmops-pwned").exists()
    assert remote_command(["a b", "c"]) == "'a b' c"


async def test_one_connection_per_host_is_reused(ssh_lab: SshLab, tmp_path: Path) -> None:
    spec = spec_for(ssh_lab, tmp_path)
    async with NodeConnections(spec) as connections:
        first = await connections.connection(spec.nodes[0])
        for _ in range(3):
            assert await output(connections, spec.nodes[0], ["echo", "ok"]) == "ok\n"
        assert await connections.connection(spec.nodes[0]) is first


async def test_unknown_host_key_is_refused_unless_insecure(ssh_lab: SshLab, tmp_path: Path) -> None:
    other = tmp_path / "other_known_hosts"
    node = ssh_lab.nodes[0]
    other.write_text(
        f"[{node.address}]:{node.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG6ZfXhqvC0BBv2QNVw4kCaYwnYHBQIeMRhqgeZpdHdF\n"
    )
    spec = spec_for(ssh_lab, tmp_path, known_hosts=str(other))
    async with NodeConnections(spec) as connections:
        with pytest.raises(
            NodeError, match=rf"node {node.address}: host key not trusted.*--insecure-host-keys"
        ):
            await output(connections, spec.nodes[0], ["true"])
    async with NodeConnections(spec, insecure_host_keys=True) as connections:
        assert await output(connections, spec.nodes[0], ["echo", "ok"]) == "ok\n"


async def test_refused_node_names_the_node(ssh_lab: SshLab, tmp_path: Path) -> None:
    data = {
        "deployment": "ssh",
        "ssh": ssh_lab.ssh_section(),
        "nodes": [{"host": "127.0.0.3", "gpus": 1, "ssh": {"port": ssh_lab.nodes[0].port}}],
        "models": [],
    }
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path).spec
    async with NodeConnections(spec) as connections:
        with pytest.raises(
            NodeError, match=r"node 127\.0\.0\.3: cannot connect to 127\.0\.0\.3:\d+: .*refused"
        ):
            await output(connections, spec.nodes[0], ["true"])


async def test_jump_host(ssh_lab: SshLab, tmp_path: Path) -> None:
    jump_node, target = ssh_lab.nodes
    spec = spec_for(ssh_lab, tmp_path, jump=f"root@{jump_node.address}:{jump_node.port}")
    async with NodeConnections(spec) as connections:
        printed = await output(connections, spec.nodes[1], ["sh", "-c", "echo $SSH_CONNECTION"])
    # The target saw the connection come from the jump host's side of loopback.
    client_ip, _, server_ip, server_port = printed.split()
    assert (server_ip, int(server_port)) == (target.address, target.port)
    assert client_ip == jump_node.address or client_ip.startswith("127.")


async def test_channels_per_host_are_capped(ssh_lab: SshLab, tmp_path: Path) -> None:
    # Each command registers itself in a directory, waits (up to a limit) until it sees all
    # four, and reports the most it saw at once.
    program = """
import os, sys, time
directory, want, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
mine = os.path.join(directory, str(os.getpid()))
open(mine, "w").close()
deadline = time.monotonic() + limit
seen = len(os.listdir(directory))
while seen < want and time.monotonic() < deadline:
    time.sleep(0.02)
    seen = max(seen, len(os.listdir(directory)))
if seen < want:  # left when it saw everyone, so the slower ones still see it
    os.remove(mine)
print(seen)
"""
    for channels, limit_s in ((1, 0.3), (4, 10.0)):
        directory = tmp_path / f"running-{channels}"
        directory.mkdir()
        argv = [sys.executable, "-S", "-c", program, str(directory), "4", str(limit_s)]
        spec = spec_for(ssh_lab, tmp_path, max_channels=channels)
        async with NodeConnections(spec) as connections:
            results = await asyncio.gather(
                *(output(connections, spec.nodes[0], argv) for _ in range(4))
            )
        assert max(int(printed) for printed in results) == channels


async def test_unreachable_jump_host_is_named(ssh_lab: SshLab, tmp_path: Path) -> None:
    port = ssh_lab.nodes[0].port
    spec = spec_for(ssh_lab, tmp_path, jump=f"root@127.0.0.3:{port}")
    async with NodeConnections(spec) as connections:
        for node in spec.nodes:  # both nodes share the failed jump connection and say so
            with pytest.raises(NodeError) as caught:
                await output(connections, node, ["true"])
            assert str(caught.value) == (
                f"node {node.host}: via jump host root@127.0.0.3:{port}: "
                f"cannot connect to 127.0.0.3:{port}: Connection refused"
            )
