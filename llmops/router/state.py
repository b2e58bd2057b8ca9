"""Everything the request path needs, in one object built at startup and passed down."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import aiohttp

from llmops.config import LoadedConfig, RouterConfig
from llmops.router.balance import STRATEGIES, Picker
from llmops.router.pool import PoolSnapshot, build_snapshot


@dataclass(eq=False)
class RouterState:
    loaded: LoadedConfig
    session: aiohttp.ClientSession
    snapshot: PoolSnapshot = field(init=False)
    picker: Picker = field(init=False)
    rng: random.Random = field(default_factory=random.Random)
    started_at: float = field(default_factory=time.time)
    cancelled: int = 0
    stream_errors: int = 0

    def __post_init__(self) -> None:
        self.apply(self.loaded)

    @property
    def config(self) -> RouterConfig:
        return self.loaded.config

    def apply(self, loaded: LoadedConfig) -> None:
        """Swap in a new config: a new snapshot that keeps the state of unchanged backends."""
        previous = getattr(self, "snapshot", None)
        generation = previous.generation + 1 if previous is not None else 1
        self.loaded = loaded
        self.snapshot = build_snapshot(loaded.backends, previous, generation)
        self.picker = STRATEGIES[loaded.config.routing.strategy]
