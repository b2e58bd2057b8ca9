"""Failure injection: seeded random 500s and the modes tests switch with ``POST /sim/mode``."""

from __future__ import annotations

import asyncio
import random

from llmops.sim.engine import Engine
from llmops.sim.options import SIM_MODES, SimMode, SimOptions


class Faults:
    """What the sim should do wrong right now; handlers ask it before serving."""

    def __init__(self, options: SimOptions, engine: Engine) -> None:
        self._fail_rate = options.fail_rate
        self._rng = random.Random(options.seed)
        self._engine = engine
        self._answering = asyncio.Event()  # cleared while the mode is "hang"
        self.closing = False
        self.mode: SimMode = "ok"
        self.abort_after_tokens = options.abort_after_tokens
        self.set_mode(options.mode, options.abort_after_tokens)

    def set_mode(self, mode: SimMode, abort_after_tokens: int | None) -> None:
        if mode not in SIM_MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.abort_after_tokens = abort_after_tokens
        if mode == "hang":
            self._answering.clear()
        else:
            self._answering.set()
        if mode == "stall":
            self._engine.pause()
        else:
            self._engine.resume()

    async def wait_until_answering(self) -> None:
        """Block while the sim "hangs"; requests held here are served once the mode changes."""
        await self._answering.wait()

    def should_fail(self) -> bool:
        """Whether this inference request gets an injected HTTP 500."""
        if self.mode == "error":
            return True
        return self._fail_rate > 0 and self._rng.random() < self._fail_rate

    def close(self) -> None:
        """Release every hung request so shutdown does not wait on them."""
        self.closing = True
        self._answering.set()
