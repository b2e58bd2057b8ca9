"""`llmops bench`: the load generator (not built yet)."""

from __future__ import annotations

import typer

from llmops.errors import NotBuiltError

app = typer.Typer(help="Load-test an OpenAI-compatible endpoint (not built yet).", invoke_without_command=True)


@app.callback()
def bench() -> None:
    """Load-test an OpenAI-compatible endpoint (not built yet)."""
    raise NotBuiltError("`llmops bench` is not built yet")

