"""Balancing strategies: pure choices of one backend among a model's candidates."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from llmops.router.pool import BackendState

Picker = Callable[[Sequence[BackendState], random.Random], BackendState]


def weighted_random(candidates: Sequence[BackendState], rng: random.Random) -> BackendState:
    """``simple-shuffle``: a random backend, in proportion to its weight."""
    if len(candidates) == 1:
        return candidates[0]
    weights = [c.backend.weight for c in candidates]
    return rng.choices(candidates, weights=weights)[0]


def least_connections(candidates: Sequence[BackendState], rng: random.Random) -> BackendState:
    """Power of two choices (weighted draw) on in-flight requests per unit of weight."""
    if len(candidates) == 1:
        return candidates[0]
    first, second = (weighted_random(candidates, rng) for _ in range(2))
    if first is second:
        return first
    first_load = first.in_flight / first.backend.weight
    second_load = second.in_flight / second.backend.weight
    return first if first_load <= second_load else second


STRATEGIES: dict[str, Picker] = {
    "simple-shuffle": weighted_random,
    "least-connections": least_connections,
    "least-load": least_connections,
}


def pick_backend(
    candidates: Sequence[BackendState],
    strategy: Picker,
    rng: random.Random,
    exclude: frozenset[str] = frozenset(),
) -> BackendState | None:
    """One routable backend not in ``exclude`` (ids already tried), or None if there is none."""
    usable = [c for c in candidates if c.routable and c.id not in exclude]
    if not usable:
        return None
    return strategy(usable, rng)
