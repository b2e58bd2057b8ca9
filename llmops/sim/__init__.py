"""The simulated engine: speaks vLLM's (or SGLang's) HTTP without a GPU.

``async with running_sim(SimOptions(port=0)) as sim:`` serves one on ``sim.url``;
``llmops sim`` is the same thing from the command line. The server pieces import aiohttp,
so they load on first use: importing this package (as the CLI does) stays cheap.

HTTP surface:

- ``POST /v1/chat/completions``, ``POST /v1/completions`` (streaming or not, with
  ``stream_options.include_usage``), ``POST /v1/embeddings``, ``GET /v1/models``,
  ``GET /health``, ``GET /metrics`` (vLLM or SGLang names); SGLang flavour also
  ``GET /get_model_info`` and ``GET /health_generate``.
- Test hooks: ``GET /sim/stats`` (requests, running, waiting, aborted, completed, errors,
  mode, by_path) and ``POST /sim/mode {"mode": "ok"|"error"|"hang"|"stall",
  "abort_after_tokens": N|null}`` (or ``RunningSim.set_mode`` in-process). ``hang`` holds
  inference, ``/health`` and ``/v1/models`` requests and serves them once the mode changes;
  ``stall`` pauses the engine (streams get headers, then nothing) until the mode changes.

Tokens: one per whitespace-separated word of the prompt (see ``llmops.sim.tokens``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmops.sim.options import EngineFlavour, SimMode, SimOptions
from llmops.sim.tokens import count_prompt_tokens

if TYPE_CHECKING:
    from llmops.sim.engine import Engine, EngineSnapshot
    from llmops.sim.server import RunningSim, running_sim

__all__ = [
    "Engine",
    "EngineFlavour",
    "EngineSnapshot",
    "RunningSim",
    "SimMode",
    "SimOptions",
    "count_prompt_tokens",
    "running_sim",
]

_LAZY = {
    "Engine": "llmops.sim.engine",
    "EngineSnapshot": "llmops.sim.engine",
    "RunningSim": "llmops.sim.server",
    "running_sim": "llmops.sim.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llmops.sim' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
