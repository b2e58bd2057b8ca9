"""SSH to the nodes with asyncssh: one connection per host, reused for every command.

A per-host semaphore keeps concurrent channels under the server's ``MaxSessions``; a
global one bounds connects in flight (tens of nodes deploy at once without a connect
storm). Host keys are checked against ``known_hosts`` unless the user opts out. Every
remote command is built from an argv with each argument shell-quoted: nothing from the
spec is ever pasted into a shell string.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shlex
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncssh

from llmops.deploy.errors import NodeError
from llmops.deploy.spec import DeploySpec, NodeSpec, SshOptions

DEFAULT_CONNECT_LIMIT = 32


def remote_command(argv: Sequence[str]) -> str:
    """The shell command line that runs exactly ``argv`` on the node."""
    return " ".join(shlex.quote(arg) for arg in argv)


def parse_jump(jump: str) -> tuple[str | None, str, int]:
    """``[user@]host[:port]`` → (user, host, port)."""
    user, _, rest = jump.rpartition("@")
    host, port = rest, 22
    if rest.startswith("["):  # [v6::addr]:port
        host, _, tail = rest[1:].partition("]")
        port = int(tail[1:]) if tail.startswith(":") else 22
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
        port = int(port_text)
    return user or None, host, port


def _connect_failure(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    # asyncio's multi-address connect keeps errno but words the message its own way.
    return os.strerror(exc.errno) if exc.errno else exc.strerror or str(exc)


def _connection_key(host: str, options: SshOptions) -> str:
    return f"{options.user}@{host}:{options.port}"


class NodeConnections:
    """Lazily opened, shared SSH connections to the nodes of one spec."""

    def __init__(
        self,
        spec: DeploySpec,
        *,
        insecure_host_keys: bool = False,
        connect_limit: int = DEFAULT_CONNECT_LIMIT,
    ) -> None:
        self._spec = spec
        self._insecure = insecure_host_keys
        self._connect_slots = asyncio.Semaphore(connect_limit)
        self._connections: dict[str, asyncio.Task[asyncssh.SSHClientConnection]] = {}
        self._channels: dict[str, asyncio.Semaphore] = {}

    async def __aenter__(self) -> NodeConnections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for task in self._connections.values():
            if task.done() and not task.cancelled() and task.exception() is None:
                connection = task.result()
                connection.close()
                await connection.wait_closed()
            elif not task.done():
                task.cancel()
        self._connections.clear()

    async def connection(self, node: NodeSpec) -> asyncssh.SSHClientConnection:
        """The node's connection (opened once); NodeError says why it cannot be had."""
        return await self._shared(node.host, self._spec.ssh_for(node), node.host)

    def _channel_slots(self, node: NodeSpec) -> asyncio.Semaphore:
        """The cap on concurrent channels of the node's connection."""
        options = self._spec.ssh_for(node)
        key = _connection_key(node.host, options)
        if key not in self._channels:
            self._channels[key] = asyncio.Semaphore(options.max_channels or 1)
        return self._channels[key]

    async def _shared(
        self, host: str, options: SshOptions, label: str
    ) -> asyncssh.SSHClientConnection:
        key = _connection_key(host, options)
        if key not in self._connections:
            self._connections[key] = asyncio.ensure_future(self._connect(host, options, label))
        return await asyncio.shield(self._connections[key])

    async def _connect(
        self, host: str, options: SshOptions, label: str
    ) -> asyncssh.SSHClientConnection:
        tunnel: Any = ()
        if options.jump:
            user, jump_host, jump_port = parse_jump(options.jump)
            merged = SshOptions(user=user or options.user, port=jump_port).over(options)
            jump_options = dataclasses.replace(merged, jump=None)  # reached directly
            try:
                tunnel = await self._shared(jump_host, jump_options, f"jump host {options.jump}")
            except NodeError as exc:
                raise NodeError(label, f"via jump host {options.jump}: {exc.reason}") from None
        known_hosts = None if self._insecure else os.path.expanduser(options.known_hosts or "")
        if known_hosts is not None and not os.path.exists(known_hosts):
            raise NodeError(
                label,
                f"known_hosts file {known_hosts} does not exist (or pass --insecure-host-keys)",
            )
        kwargs: dict[str, Any] = {
            "port": options.port,
            "known_hosts": known_hosts,
            "connect_timeout": options.connect_timeout_s,
            "keepalive_interval": options.keepalive_s,
            "tunnel": tunnel,
        }
        if options.user:
            kwargs["username"] = options.user
        if options.key:
            kwargs["client_keys"] = [os.path.expanduser(options.key)]
        async with self._connect_slots:
            try:
                connection = await asyncssh.connect(host, **kwargs)
            except asyncssh.HostKeyNotVerifiable as exc:
                raise NodeError(
                    label,
                    f"host key not trusted ({exc.reason}); "
                    f"add it to {known_hosts} or pass --insecure-host-keys",
                ) from None
            except asyncssh.PermissionDenied:
                raise NodeError(
                    label,
                    f"SSH login refused for user {options.user or os.environ.get('USER', '?')}",
                ) from None
            except asyncssh.Error as exc:
                raise NodeError(label, f"SSH failed: {exc.reason}") from None
            except (TimeoutError, OSError) as exc:
                reason = _connect_failure(exc)
                raise NodeError(
                    label, f"cannot connect to {host}:{options.port}: {reason}"
                ) from None
        return connection

    async def stream(
        self, node: NodeSpec, argv: Sequence[str], stdin: str = ""
    ) -> AsyncIterator[str]:
        """Run ``argv`` on the node and yield its output lines as they come.

        ``stdin`` is sent but the stream is left open: the remote command sees end-of-file
        when the deployer goes away (Ctrl-C, lost connection), which is how the node agent
        knows to stop waiting. SSH signals cannot do that: OpenSSH refuses most of them.
        """
        connection = await self.connection(node)
        async with self._channel_slots(node):
            try:
                process = await connection.create_process(remote_command(argv))
            except (asyncssh.Error, OSError) as exc:
                raise NodeError(node.host, f"command failed: {exc}") from None
            finished = False
            try:
                if stdin:
                    process.stdin.write(stdin)
                async for line in process.stdout:
                    yield str(line)
                completed = await process.wait(check=False)
                finished = True
            except (asyncssh.Error, OSError) as exc:
                raise NodeError(node.host, f"command failed: {exc}") from None
            finally:
                if not finished:  # cancelled or failed: closing the channel ends its stdin
                    process.close()  # no wait: the channel closes once the command has exited
        if completed.exit_status not in (0, None):
            stderr = str(completed.stderr or "").strip()[-500:]
            raise NodeError(node.host, f"{argv[0]} exited {completed.exit_status}: {stderr}")
