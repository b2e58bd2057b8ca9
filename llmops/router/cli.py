"""`llmops router serve|check`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="The OpenAI-compatible gateway.", no_args_is_help=True)

_WORKER_DIR = typer.Option(None, hidden=True)  # set by the --workers supervisor
_CONFIG = typer.Option(Path("router.yaml"), "--config", "-c", help="Router config (YAML).")


@app.command()
def serve(
    config: Path = _CONFIG,
    host: str | None = typer.Option(
        None, help="Listen address (default: server.host of the config)."
    ),
    port: int | None = typer.Option(None, help="Listen port (default: server.port of the config)."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
    workers: int = typer.Option(
        1, min=1, max=256, help="Router processes sharing the port (SO_REUSEPORT)."
    ),
    worker_index: int | None = typer.Option(None, hidden=True),
    worker_count: int | None = typer.Option(None, hidden=True),
    worker_dir: Path | None = _WORKER_DIR,
) -> None:
    """Serve the OpenAI API in front of the configured engines.

    Example: llmops router serve --config configs/router.yaml --port 8000 --workers 2
    """
    import asyncio
    import logging

    from llmops.router.app import serve as serve_router
    from llmops.router.cluster import WorkerRole
    from llmops.router.loop import check_open_files, install_fast_loop

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if workers > 1:
        from llmops.router.workers import supervise

        supervise(config, host, port, workers, log_level)
        return
    role = None
    if worker_index is not None and worker_count is not None and worker_dir is not None:
        role = WorkerRole(worker_index, worker_count, worker_dir)
    check_open_files()
    install_fast_loop()
    asyncio.run(serve_router(config, host, port, role))


@app.command()
def check(config: Path = _CONFIG) -> None:
    """Validate a config and print the backends it resolves to (secrets masked).

    Example: llmops router check --config configs/router.yaml
    """
    from rich.console import Console
    from rich.table import Table

    from llmops.config import load_router_config, mask_secret

    loaded = load_router_config(config)
    table = Table(title=f"{config}: {len(loaded.backends)} backend(s)", box=None)
    for column in ("model", "id", "api_base", "api_key", "weight", "rpm_limit", "source"):
        table.add_column(column, overflow="fold")
    for b in loaded.backends:
        table.add_row(
            b.model,
            b.id,
            b.api_base,
            mask_secret(b.api_key),
            f"{b.weight:g}",
            str(b.rpm_limit or "-"),
            b.source,
        )
    console = Console(width=max(Console().width, 120))
    console.print(table)
    from llmops.config.secrets_check import secrets_warnings
    from llmops.router.tls import tls_warnings

    for warning in (*secrets_warnings(loaded.files), *tls_warnings(loaded.config)):
        console.print(f"[bold yellow]warning:[/] {warning}", markup=True, highlight=False)
    routing = loaded.config.routing
    console.print(f"strategy {routing.strategy}, retries {routing.num_retries}; config OK")


_UNIT_CONFIG = typer.Option(
    Path("/etc/llmops/router.yaml"), "--config", "-c", help="Router config the service reads."
)
_CREDENTIALS = typer.Option(
    [], "--credential", help="NAME=/path/to/secret, loaded with LoadCredential (repeatable)."
)


@app.command("systemd-unit")
def systemd_unit(
    config: Path = _UNIT_CONFIG,
    user: str | None = typer.Option(
        None, help="Run as this existing user instead of a throw-away DynamicUser."
    ),
    credential: list[str] = _CREDENTIALS,
    executable: str | None = typer.Option(
        None, "--exec", help="The llmops executable (default: the one on PATH)."
    ),
    low_port: bool = typer.Option(
        False, "--low-port", help="Keep CAP_NET_BIND_SERVICE to listen below port 1024."
    ),
) -> None:
    """Print a hardened systemd unit that runs the router as a service.

    Example: llmops router systemd-unit --config /etc/llmops/router.yaml
    --credential admin_token=/etc/llmops/admin_token > /etc/systemd/system/llmops-router.service
    """
    import shutil
    import sys

    from llmops.errors import RouterError
    from llmops.router.systemd import UnitOptions, parse_credential, render_unit

    try:
        credentials = tuple(parse_credential(c) for c in credential)
    except ValueError as exc:
        raise RouterError(str(exc)) from None
    program = executable or shutil.which("llmops")
    command = (str(Path(program).absolute()),) if program else (sys.executable, "-m", "llmops")
    if command[0].startswith(("/home/", "/root/")):
        print(
            f"warning: {command[0]} is under a home directory, which ProtectHome=yes hides "
            "from the service: install llmops elsewhere (e.g. /opt/llmops) or pass --exec",
            file=sys.stderr,
        )
    options = UnitOptions(
        command=command,
        config=str(config.absolute()),
        user=user,
        credentials=credentials,
        low_port=low_port,
    )
    sys.stdout.write(render_unit(options))
