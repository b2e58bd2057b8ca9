"""Balancing strategies: pure choices of one backend among a model's candidates.

A strategy is ``(candidates, rng) -> BackendState`` over routable candidates; ``pick_backend``
filters those, lets session or prefix affinity speak first and remembers what it chose.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from llmops.router.pool import BackendState

if TYPE_CHECKING:
    from llmops.router.affinity import Affinity, RouteHints

Picker = Callable[[Sequence[BackendState], random.Random], BackendState]

# A KV cache near full means preemptions soon; this many requests' worth at 100 %.
KV_WEIGHT = 4.0


def weighted_random(candidates: Sequence[BackendState], rng: random.Random) -> BackendState:
    """``simple-shuffle``: a random backend, in proportion to its weight."""
    if len(candidates) == 1:
        return candidates[0]
    return _draw(candidates, rng, sum(c.backend.weight for c in candidates), None)


def _draw(
    candidates: Sequence[BackendState],
    rng: random.Random,
    total_weight: float,
    skip: BackendState | None,
) -> BackendState:
    """One weighted draw by a linear scan: cheaper than ``rng.choices`` for a few backends."""
    point = rng.random() * total_weight
    chosen = candidates[-1] if candidates[-1] is not skip else candidates[-2]
    for candidate in candidates:
        if candidate is skip:
            continue
        point -= candidate.backend.weight
        if point < 0:
            return candidate
    return chosen  # float rounding left the point at the very end


def _two_choices(
    candidates: Sequence[BackendState], rng: random.Random
) -> tuple[BackendState, BackendState]:
    """Two distinct backends, each drawn in proportion to its weight."""
    total = sum(c.backend.weight for c in candidates)
    first = _draw(candidates, rng, total, None)
    return first, _draw(candidates, rng, total - first.backend.weight, first)


def _lighter(
    first: BackendState,
    first_load: float,
    second: BackendState,
    second_load: float,
    rng: random.Random,
) -> BackendState:
    if first_load == second_load:
        return first if rng.random() < 0.5 else second
    return first if first_load < second_load else second


def connections_load(state: BackendState) -> float:
    """The router's own in-flight requests per unit of weight."""
    return state.in_flight / state.backend.weight


def least_connections(candidates: Sequence[BackendState], rng: random.Random) -> BackendState:
    """Power of two choices (weighted draws) on in-flight requests per unit of weight."""
    if len(candidates) == 1:
        return candidates[0]
    first, second = _two_choices(candidates, rng)
    return _lighter(first, connections_load(first), second, connections_load(second), rng)


def engine_load(state: BackendState, now: float) -> float | None:
    """In-flight requests plus the engine's load from elsewhere, per unit of weight; None
    without a fresh scrape (the caller falls back to in-flight counts).

    The router's own requests are counted live (in-flight); the engine's queue adds only what
    the router did not send (other replicas, other clients), so a scrape that is a second old
    never makes a backend look busier or idler than the router's own live counts say.
    """
    engine = state.engine
    if engine is None or now > engine.fresh_until:
        return None
    elsewhere = max(0.0, engine.running + engine.waiting - engine.in_flight_at_scrape)
    load = state.in_flight + elsewhere + KV_WEIGHT * (engine.kv_cache_usage or 0.0)
    return load / state.backend.weight


def least_load(candidates: Sequence[BackendState], rng: random.Random) -> BackendState:
    """``least-load``: power of two choices on engine load when both have fresh metrics.

    If either of the two lacks fresh metrics, both are compared on in-flight counts: a
    backend that exports nothing is neither favoured nor avoided.
    """
    if len(candidates) == 1:
        return candidates[0]
    first, second = _two_choices(candidates, rng)
    now = time.monotonic()
    first_load, second_load = engine_load(first, now), engine_load(second, now)
    if first_load is None or second_load is None:
        return _lighter(first, connections_load(first), second, connections_load(second), rng)
    return _lighter(first, first_load, second, second_load, rng)


STRATEGIES: dict[str, Picker] = {
    "simple-shuffle": weighted_random,
    "least-connections": least_connections,
    "least-load": least_load,
}


def pick_backend(
    candidates: Sequence[BackendState],
    strategy: Picker,
    rng: random.Random,
    exclude: frozenset[str] = frozenset(),
    hints: RouteHints | None = None,
    affinity: Affinity | None = None,
) -> BackendState | None:
    """One routable backend not in ``exclude`` (ids already tried), or None if there is none.

    With ``hints`` (a session key, prompt prefix hashes), the backend they are bound to wins
    while it is routable and not much busier than the rest; the choice is remembered.
    """
    usable = [c for c in candidates if c.routable and c.id not in exclude]
    if not usable:
        return None
    if hints is None or affinity is None:
        return strategy(usable, rng)
    chosen = affinity.prefer(hints, usable) or strategy(usable, rng)
    affinity.remember(hints, chosen.id)
    return chosen
