"""`llmops dashboard`: the terminal dashboard (not built yet)."""

from __future__ import annotations

import typer

from llmops.errors import NotBuiltError

def dashboard() -> None:
    """Watch the router in a terminal dashboard (not built yet)."""
    raise NotBuiltError("`llmops dashboard` is not built yet")

