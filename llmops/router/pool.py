"""The backend pool: an immutable snapshot of backends per model, swapped whole on reload.

Per-backend live state (counters, health) lives in ``BackendState`` objects that the pool
references; a reload that keeps a backend (same id and settings) keeps its state object.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from llmops.config import Backend
from llmops.router.upstream_http import UpstreamTarget
from llmops.router.windows import BackendWindows

if TYPE_CHECKING:
    from llmops.router.scrape import EngineLoad

BackendHealth = Literal["healthy", "unhealthy", "draining", "ejected", "probing"]


@dataclass(eq=False, slots=True)
class BackendState:
    """A backend plus what the router has learned about it; mutated on the hot path.

    Three independent facts make up the ``state`` shown to people: whether an operator
    drained it, whether active health checks pass, and the passive circuit breaker.
    """

    backend: Backend
    healthy: bool = True
    drained: bool = False
    ejected_until: float | None = None  # breaker open until this monotonic time
    half_open: bool = False  # cool-down over: one trial request decides
    consecutive_failures: int = 0  # of requests, for the breaker
    probe_failures: int = 0  # consecutive failed health probes
    probe_successes: int = 0  # consecutive passed health probes
    in_flight: int = 0
    requests: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    added_at: float = field(default_factory=time.time)
    upstream: UpstreamTarget | None = None  # set on first use by RouterState.upstream_for
    engine: EngineLoad | None = None  # the engine's own load, last scraped (scrape.py)
    windows: BackendWindows = field(default_factory=BackendWindows)  # for /status

    @property
    def id(self) -> str:
        return self.backend.id

    @property
    def state(self) -> BackendHealth:
        if self.drained:
            return "draining"
        if not self.healthy:
            return "unhealthy"
        if self.ejected_until is not None:
            return "ejected"
        if self.half_open:
            return "probing"
        return "healthy"

    @property
    def routable(self) -> bool:
        """Whether new requests may go here (a half-open backend takes one trial at a time)."""
        if self.drained or not self.healthy:
            return False
        if self.ejected_until is not None:
            if time.monotonic() < self.ejected_until:
                return False
            self.ejected_until = None
            self.half_open = True
        return not self.half_open or self.in_flight == 0

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
