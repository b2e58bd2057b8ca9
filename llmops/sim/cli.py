"""`llmops sim`: placeholder until the simulated engine lands."""

from __future__ import annotations

from llmops.errors import NotBuiltError


def sim() -> None:
    """Run a simulated vLLM/SGLang engine (not built yet)."""
    raise NotBuiltError("`llmops sim` is not built yet")
