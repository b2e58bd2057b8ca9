"""`llmops router serve|check` (placeholder)."""

from __future__ import annotations

import typer

app = typer.Typer(help="The OpenAI-compatible gateway.", no_args_is_help=True)
