"""Balancing strategies and affinity as pure functions over backend states."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from llmops.config import Backend
from llmops.config.router import RoutingConfig
from llmops.router.affinity import Affinity, prefix_block_hashes, prompt_text
from llmops.router.balance import (
    STRATEGIES,
    Picker,
    engine_load,
    least_connections,
    least_load,
    pick_backend,
    weighted_random,
)
from llmops.router.pool import BackendState
from llmops.router.scrape import EngineLoad


def state(name: str, weight: float = 1.0, in_flight: int = 0) -> BackendState:
    backend = Backend(
        id=f"m@{name}",
        model="m",
        api_base=f"http://{name}/v1",
        api_key=None,
        weight=weight,
        rpm_limit=None,
        tpm_limit=None,
        upstream_model="m",
        source="test",
    )
    return BackendState(backend, in_flight=in_flight)


def scraped(
    target: BackendState, running: float, waiting: float, kv: float | None = 0.0, age_s: float = 0.0
) -> BackendState:
    now = time.monotonic()
    target.engine = EngineLoad(
        running, waiting, kv, now - age_s, now - age_s + 6.0, target.in_flight
    )
    return target


def shares(picker: Picker, candidates: list[BackendState], draws: int = 4000) -> Counter[str]:
    rng = random.Random(7)
    return Counter(picker(candidates, rng).id for _ in range(draws))


def test_default_strategy_is_least_load() -> None:
    assert RoutingConfig().strategy == "least-load"
    assert STRATEGIES["least-load"] is least_load


def test_weighted_random_follows_weights() -> None:
    counts = shares(weighted_random, [state("a", 3.0), state("b", 1.0)])
    assert 2.5 < counts["m@a"] / counts["m@b"] < 3.6


def test_least_connections_avoids_the_busy_backend_and_respects_weight() -> None:
    busy, idle = state("busy", in_flight=10), state("idle", in_flight=0)
    counts = shares(least_connections, [busy, idle, state("idle2")])
    # Power of two choices: the busiest backend only wins when drawn twice (never, distinct draws).
    assert counts["m@busy"] == 0
    # Weight 4 with 8 in flight is as loaded as weight 1 with 2 in flight.
    heavy, light = state("heavy", 4.0, in_flight=8), state("light", 1.0, in_flight=3)
    assert {least_connections([heavy, light], random.Random(i)).id for i in range(50)} == {
        "m@heavy"
    }


def test_least_load_uses_engine_queues_when_both_are_fresh() -> None:
    # Same router in-flight, but one engine has a deep queue (traffic from elsewhere).
    queued = scraped(state("queued", in_flight=1), running=8, waiting=20)
    calm = scraped(state("calm", in_flight=1), running=1, waiting=0)
    picks = Counter(least_load([queued, calm], random.Random(i)).id for i in range(200))
    assert picks == {"m@calm": 200}
    # KV pressure counts too, everything else equal.
    full = scraped(state("full"), running=2, waiting=0, kv=0.98)
    empty = scraped(state("empty"), running=2, waiting=0, kv=0.1)
    assert {least_load([full, empty], random.Random(i)).id for i in range(50)} == {"m@empty"}


def test_least_load_adds_only_the_engine_load_the_router_did_not_send() -> None:
    # At the scrape the engine ran 10 while this router had 2 in flight: 8 came from elsewhere.
    target = scraped(state("a", in_flight=2), running=10, waiting=0)
    target.in_flight = 7  # five more sent since: counted live, not from the old scrape
    assert engine_load(target, time.monotonic()) == pytest.approx(15.0)
    # An engine whose queue is all this router's own requests adds nothing to in-flight.
    own = scraped(state("b", in_flight=6), running=4, waiting=2)
    assert engine_load(own, time.monotonic()) == pytest.approx(6.0)


def test_stale_or_missing_metrics_fall_back_to_in_flight_without_bias() -> None:
    # "stale" claims an empty engine but its data is older than the freshness limit.
    stale = scraped(state("stale", in_flight=9), running=0, waiting=0, age_s=60)
    assert engine_load(stale, time.monotonic()) is None
    fresh = scraped(state("fresh", in_flight=1), running=30, waiting=30)
    # Compared on in-flight only (9 vs 1): the fresh one wins despite its scraped queue.
    assert {least_load([stale, fresh], random.Random(i)).id for i in range(50)} == {"m@fresh"}
    # A backend without metrics is neither favoured nor avoided when in-flight is equal.
    bare = state("bare", in_flight=2)
    measured = scraped(state("measured", in_flight=2), running=50, waiting=50)
    picks = Counter(least_load([bare, measured], random.Random(i)).id for i in range(400))
    assert 150 < picks["m@bare"] < 250


def test_pick_backend_skips_unroutable_and_tried() -> None:
    a, b, c = state("a"), state("b"), state("c")
    b.drained = True
    rng = random.Random(1)
    picks = {pick_backend([a, b, c], least_load, rng, frozenset({"m@c"})) for _ in range(30)}
    assert picks == {a}
    assert pick_backend([a, b], least_load, rng, frozenset({"m@a"})) is None


def test_session_affinity_sticks_and_moves_when_drained_or_overloaded() -> None:
    routing = RoutingConfig(affinity_load_margin=4)
    affinity = Affinity(routing)
    backends = [state(n) for n in "abc"]
    hints = affinity.hints({"x-session-id": "s1"}, {"model": "m"})
    assert hints is not None
    rng = random.Random(3)

    def pick() -> BackendState:
        chosen = pick_backend(backends, least_load, rng, hints=hints, affinity=affinity)
        assert chosen is not None
        return chosen

    home = pick()
    assert all(pick() is home for _ in range(20))
    home.drained = True
    second = pick()
    assert second is not home and all(pick() is second for _ in range(10))
    home.drained = False
    assert pick() is home  # back home once it is fine again: its cache is there
    home.in_flight = 5  # the idlest has 0: 5 > 0 + margin 4
    assert pick() is second  # overloaded: the next in the session's own order, not random


def test_sessions_land_the_same_in_every_process_and_spread_over_backends() -> None:
    backends = [state(n) for n in "abcd"]
    # A fresh Affinity (another worker or replica) ranks a session's backends the same way.
    homes = [Affinity(RoutingConfig()).session_home(f"user-{i}", backends) for i in range(400)]
    again = [Affinity(RoutingConfig()).session_home(f"user-{i}", backends) for i in range(400)]
    assert homes == again
    counts = Counter(h.id for h in homes if h is not None)
    assert len(counts) == 4 and min(counts.values()) > 60  # about 100 each


def test_session_key_from_the_user_field_and_off_switch() -> None:
    hints = Affinity(RoutingConfig()).hints({}, {"model": "m", "user": "alice"})
    assert hints is not None and hints.session_key == "alice"
    assert Affinity(RoutingConfig(session_affinity=False)).hints({}, {"user": "alice"}) is None


def test_prefix_affinity_prefers_the_backend_that_served_a_shared_prefix() -> None:
    routing = RoutingConfig(
        session_affinity=False, prefix_affinity=True, prefix_block_chars=64, prefix_cache_entries=8
    )
    affinity = Affinity(routing)
    system = "You are a helpful assistant. " * 20
    backends = [state(n) for n in "abcd"]
    rng = random.Random(5)

    def route(question: str) -> str:
        parsed = {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ]
        }
        hints = affinity.hints({}, parsed)
        chosen = pick_backend(backends, least_load, rng, hints=hints, affinity=affinity)
        assert chosen is not None
        return chosen.id

    first = route("what is 2+2?")
    assert all(route(f"question number {i}") == first for i in range(10))
    # Short prompts (less than one block) carry no prefix hint at all.
    assert affinity.hints({}, {"prompt": "hi"}) is None


def test_prefix_hashes_share_leading_blocks_and_memory_is_bounded() -> None:
    a = prefix_block_hashes("x" * 300 + "tail one", 100)
    b = prefix_block_hashes("x" * 300 + "other tail", 100)
    assert len(a) == 3 and a == b[:3]
    assert prefix_block_hashes("y" * 300, 100)[0] != a[0]
    assert prompt_text({"prompt": ["p1", "p2"]}) == "p1"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}
    assert "hello" in prompt_text(parts)
    affinity = Affinity(
        RoutingConfig(prefix_affinity=True, prefix_block_chars=4, prefix_cache_entries=16)
    )
    for i in range(100):
        hints = affinity.hints({}, {"prompt": f"{i:08d}" * 4})
        assert hints is not None
        affinity.remember(hints, "m@a")
    assert len(affinity._prefixes) == 16
