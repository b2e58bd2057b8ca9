"""`llmops router serve|check`."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="The OpenAI-compatible gateway.", no_args_is_help=True)

_CONFIG = typer.Option(Path("router.yaml"), "--config", "-c", help="Router config (YAML).")


@app.command()
def serve(
    config: Path = _CONFIG,
    host: str | None = typer.Option(
        None, help="Listen address (default: server.host of the config)."
    ),
    port: int | None = typer.Option(None, help="Listen port (default: server.port of the config)."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
) -> None:
    """Serve the OpenAI API in front of the configured engines.

    Example: llmops router serve --config configs/router.yaml --port 8000
    """
    import asyncio
    import logging

    from llmops.router.app import serve as serve_router
    from llmops.router.loop import install_fast_loop

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    install_fast_loop()
    asyncio.run(serve_router(config, host, port))


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
    routing = loaded.config.routing
    console.print(f"strategy {routing.strategy}, retries {routing.num_retries}; config OK")
