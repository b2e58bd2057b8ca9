"""The ``llmops`` command: mounts each part's sub-app.

Each part's ``cli`` module imports only Typer at module level and loads its part inside the
command, so ``llmops --help`` stays fast and does not import aiohttp, Textual or asyncssh.
"""

from __future__ import annotations

import sys

import typer

from llmops import __version__
from llmops.bench.cli import app as bench_app
from llmops.demo import demo
from llmops.deploy.cli import app as deploy_app
from llmops.errors import LlmopsError
from llmops.router.cli import app as router_app
from llmops.sim.cli import sim
from llmops.tui.cli import dashboard

app = typer.Typer(
    name="llmops",
    help="Deploy, route, measure and watch self-hosted vLLM/SGLang fleets.\n\n"
    "Start here: llmops demo",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(router_app, name="router")
app.add_typer(deploy_app, name="deploy")
app.add_typer(bench_app, name="bench")
app.command(name="dashboard")(dashboard)
app.command(name="sim")(sim)
app.command(name="demo")(demo)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Deploy, route, measure and watch self-hosted vLLM/SGLang fleets."""


def main() -> None:
    """Entry point: runs the CLI and turns LlmopsError into one line on stderr and exit 1."""
    try:
        app()
    except LlmopsError as exc:
        typer.echo(f"llmops: {exc}", err=True)
        sys.exit(1)
