"""`llmops deploy`: engines on GPU nodes over SSH (not built yet)."""

from __future__ import annotations

import typer

from llmops.errors import NotBuiltError

app = typer.Typer(help="Start vLLM/SGLang engines on GPU nodes over SSH (not built yet).", invoke_without_command=True)


@app.callback()
def deploy() -> None:
    """Start vLLM/SGLang engines on GPU nodes over SSH (not built yet)."""
    raise NotBuiltError("`llmops deploy` is not built yet")

