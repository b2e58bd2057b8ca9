"""The backend pool: an immutable snapshot of backends per model, swapped whole on reload.

Per-backend live state (counters, health) lives in ``BackendState`` objects that the pool
references; a reload that keeps a backend (same id and settings) keeps its state object.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from llmops.config import Backend

BackendHealth = Literal["healthy", "unhealthy", "draining", "ejected", "probing"]


@dataclass(eq=False, slots=True)
class BackendState:
    """A backend plus what the router has learned about it; mutated on the hot path."""

    backend: Backend
    state: BackendHealth = "healthy"
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    added_at: float = field(default_factory=time.time)

    @property
    def id(self) -> str:
        return self.backend.id

    @property
    def routable(self) -> bool:
        """Whether new requests may go here (half-open probes are let through one at a time)."""
        return self.state == "healthy" or (self.state == "probing" and self.in_flight == 0)

    def record_error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message
        self.last_error_at = time.time()


@dataclass(frozen=True)
class PoolSnapshot:
    """Backends grouped by the model name clients ask for; never mutated after creation."""

    by_model: dict[str, tuple[BackendState, ...]]
    generation: int

    @property
    def models(self) -> list[str]:
        return sorted(self.by_model)

    @property
    def states(self) -> list[BackendState]:
        return [state for group in self.by_model.values() for state in group]


def build_snapshot(
    backends: Iterable[Backend], previous: PoolSnapshot | None, generation: int
) -> PoolSnapshot:
    """A new snapshot for ``backends``, reusing the state of backends that did not change."""
    kept = {s.id: s for s in previous.states} if previous is not None else {}
    by_model: dict[str, list[BackendState]] = {}
    for backend in backends:
        old = kept.get(backend.id)
        state = old if old is not None and old.backend == backend else BackendState(backend)
        by_model.setdefault(backend.model, []).append(state)
    return PoolSnapshot({m: tuple(s) for m, s in by_model.items()}, generation)
