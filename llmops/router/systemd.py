"""A hardened systemd unit that runs ``llmops router serve`` as a service.

The service runs as a throw-away user (``DynamicUser``) on a read-only system, with no
capabilities, no new privileges and only IP and UNIX sockets. Secrets reach it through
``LoadCredential``: systemd copies each file into ``$CREDENTIALS_DIRECTORY`` (readable by
the service alone) and the config reads it with ``${file:${env:CREDENTIALS_DIRECTORY}/NAME}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Why each line is there is said once, in the unit itself, for the operator who reads it.
_HARDENING = """\
# Nothing on the file system is writable; the home directories are invisible.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
# No capabilities at all{capability_note}.
CapabilityBoundingSet={capabilities}
AmbientCapabilities={capabilities}
# Only IP sockets (clients, engines, Redis, webhooks) and UNIX sockets (logging).
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
# A refused call fails with EPERM (the router copes) instead of killing the service.
SystemCallErrorNumber=EPERM
UMask=0077
"""


@dataclass(frozen=True)
class UnitOptions:
    """What the unit runs and as whom; ``credentials`` are (name, source file) pairs."""

    command: tuple[str, ...]  # how to run llmops: its executable, or python -m llmops
    config: str
    user: str | None = None
    credentials: tuple[tuple[str, str], ...] = ()
    low_port: bool = False  # the router listens below 1024: keep CAP_NET_BIND_SERVICE
    max_open_files: int = 65536


def parse_credential(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` (or just ``PATH``, named after its file) as a LoadCredential pair."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, spec.rstrip("/").rsplit("/", 1)[-1]
    if not _CREDENTIAL_NAME.match(name) or not path.startswith("/"):
        raise ValueError(
            f"bad credential {spec!r}: use NAME=/absolute/path (NAME: letters, digits, ._-)"
        )
    return name, path


def _quote(argument: str) -> str:
    """An ExecStart argument, quoted the way systemd splits command lines."""
    if argument and not re.search(r"[\s\"'\\$%;]", argument):
        return argument
    escaped = (
        argument.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    )
    return f'"{escaped}"'


def render_unit(options: UnitOptions) -> str:
    """The unit file's text."""
    command = " ".join(
        _quote(a) for a in (*options.command, "router", "serve", "--config", options.config)
    )
    identity = (
        f"User={options.user}\nGroup={options.user}"
        if options.user
        else "# A user that exists only while the service runs, owning nothing.\nDynamicUser=yes"
    )
    credentials = "".join(f"LoadCredential={name}:{path}\n" for name, path in options.credentials)
    if credentials:
        credentials = (
            "# Read in the config as ${file:${env:CREDENTIALS_DIRECTORY}/NAME}.\n" + credentials
        )
    hardening = _HARDENING.format(
        capabilities="CAP_NET_BIND_SERVICE" if options.low_port else "",
        capability_note=" but binding a port below 1024" if options.low_port else "",
    )
    return (
        "[Unit]\n"
        "Description=llmops router (OpenAI-compatible gateway)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={command}\n"
        # SIGHUP reloads the config (backends, tokens, limits) without dropping requests.
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        # SIGTERM lets in-flight requests finish (server.shutdown_timeout) before exit.
        "KillSignal=SIGTERM\n"
        "TimeoutStopSec=45\n"
        f"LimitNOFILE={options.max_open_files}\n"
        f"{identity}\n"
        f"{credentials}"
        f"{hardening}"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
