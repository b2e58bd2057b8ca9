"""The webhook cool-down and the traffic report as pure code: nothing dropped, repeats folded."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.config import Backend
from llmops.config.router import EventKind
from llmops.router.events import Event, EventLevel
from llmops.router.notify_cooldown import CoolDown, Repeats, format_duration
from llmops.router.notify_report import TrafficCounter, traffic_summary
from llmops.router.pool import BackendState

T0 = 1_800_000_000.0


def event(kind: EventKind, backend: str | None = "b1", at: float = T0) -> Event:
    level: EventLevel = "info" if kind == "recovered" else "error"
    subject = f"backend {backend}" if backend else "router"
    return Event(at, kind, level, backend, f"{subject} {kind} at {at - T0:g}")


def test_repeats_within_the_interval_become_one_summary_when_it_ends() -> None:
    cooldown = CoolDown(60.0, wall_clock=lambda: T0 + 61)
    sent, repeats = cooldown.sift([event("unhealthy")], now=0.0)
    assert [e.kind for e in sent] == ["unhealthy"] and repeats == []
    assert cooldown.next_due() is None

    flaps = [event("unhealthy", at=T0 + 10), event("unhealthy", at=T0 + 30)]
    assert cooldown.sift(flaps, now=30.0) == ([], [])
    assert cooldown.next_due() == 60.0
    assert cooldown.sift([], now=59.9) == ([], [])

    sent, [summary] = cooldown.sift([], now=60.0)
    assert sent == []
    assert summary == Repeats("b1", (("unhealthy", 2),), T0 + 10, flaps[-1], T0 + 61)
    assert summary.message == (
        "backend b1: unhealthy 2 more times in the last 51 s; latest: backend b1 unhealthy at 30"
    )
    # The summary restarted the cool-down: the next repeat is held again.
    assert cooldown.sift([event("unhealthy", at=T0 + 70)], now=70.0) == ([], [])
    assert cooldown.next_due() == 120.0


def test_a_new_kind_goes_out_at_once_with_what_was_held_for_that_backend() -> None:
    cooldown = CoolDown(60.0, wall_clock=lambda: T0 + 20)
    cooldown.sift([event("unhealthy"), event("recovered", at=T0 + 1)], now=0.0)
    held = event("unhealthy", at=T0 + 5)
    other_backend = event("unhealthy", "b2", at=T0 + 6)
    sent, repeats = cooldown.sift([held, other_backend], now=5.0)
    assert sent == [other_backend] and repeats == []

    ejected = event("ejected", at=T0 + 20)
    sent, [summary] = cooldown.sift([ejected], now=20.0)
    assert sent == [ejected]
    assert (summary.backend, summary.counts, summary.latest) == ("b1", (("unhealthy", 1),), held)


def test_a_stopping_router_releases_everything_held() -> None:
    cooldown = CoolDown(600.0)
    cooldown.sift([event("unhealthy"), event("unhealthy", "b2")], now=0.0)
    held = [event("unhealthy", at=T0 + 1), event("unhealthy", "b2", at=T0 + 2)]
    assert cooldown.sift(held, now=2.0) == ([], [])
    summaries = cooldown.release_all()
    assert sorted((r.backend, r.latest) for r in summaries) == [("b1", held[0]), ("b2", held[1])]
    assert cooldown.next_due() is None and cooldown.release_all() == []


def test_zero_interval_sends_everything() -> None:
    cooldown = CoolDown(0.0)
    events = [event("unhealthy", at=T0 + i) for i in range(5)]
    assert cooldown.sift(events, now=0.0) == (events, [])
    assert cooldown.sift(events, now=0.0) == (events, [])
    assert cooldown.next_due() is None


kinds = st.sampled_from(["unhealthy", "recovered", "ejected", "config_reloaded"])
backends = st.sampled_from(["b1", "b2", None])
batches = st.lists(
    st.tuples(
        st.floats(0.0, 40.0),  # time since the previous batch
        st.lists(st.tuples(backends, kinds), max_size=6),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(batches, st.floats(0.0, 30.0))
def test_every_event_is_sent_or_counted_exactly_once(
    script: list[tuple[float, list[tuple[str | None, EventKind]]]], min_interval: float
) -> None:
    cooldown = CoolDown(min_interval)
    now = 0.0
    recorded: Counter[tuple[str | None, str]] = Counter()
    reported: Counter[tuple[str | None, str]] = Counter()
    last_sent: dict[tuple[str | None, str], float] = {}
    for gap, batch in script:
        now += gap
        events = [event(kind, backend, T0 + now) for backend, kind in batch]
        recorded.update((e.backend, e.kind) for e in events)
        sent, repeats = cooldown.sift(events, now)
        for e in sent:
            key = (e.backend, e.kind)
            reported[key] += 1
            # Individually sent events of one kind are at least the cool-down apart.
            assert key not in last_sent or now >= last_sent[key] + min_interval
            last_sent[key] = now
        for summary in repeats:
            for kind, count in summary.counts:
                reported[(summary.backend, kind)] += count
        due = cooldown.next_due()
        assert due is None or due > now  # anything due was released by this sift
    _, repeats = cooldown.sift([], now + min_interval + 1)
    for summary in repeats:
        for kind, count in summary.counts:
            reported[(summary.backend, kind)] += count
    assert reported == recorded
    assert cooldown.next_due() is None


def test_durations_read_naturally() -> None:
    seconds = (0, 45, 89, 180, 3600, 7200, 9000)
    assert [format_duration(s) for s in seconds] == [
        "0 s",
        "45 s",
        "89 s",
        "3 min",
        "60 min",
        "2 h",
        "2.5 h",
    ]


def backend_state(name: str, model: str = "m", weight: float = 1.0) -> BackendState:
    return BackendState(
        Backend(
            id=f"{model}@{name}",
            model=model,
            api_base=f"http://{name}/v1",
            api_key=None,
            weight=weight,
            rpm_limit=None,
            tpm_limit=None,
            upstream_model=model,
            source="test",
        )
    )


def test_traffic_counts_per_period_and_replaced_backends_start_from_zero() -> None:
    a, b, c = backend_state("a"), backend_state("b"), backend_state("c", model="other")
    a.requests, a.errors = 100, 5  # before the first period: not reported
    counter = TrafficCounter([a, b, c], now=T0)
    a.requests, a.errors, a.in_flight = 130, 6, 2
    b.requests, b.drained = 4, True
    c.healthy = False
    report = counter.report([a, b, c], now=T0 + 60)
    assert (report.since, report.until) == (T0, T0 + 60)
    rows = {r.backend: (r.requests, r.errors, r.in_flight, r.state) for r in report.rows}
    assert rows == {
        "m@a": (30, 1, 2, "healthy"),
        "m@b": (4, 0, 0, "draining"),
        "other@c": (0, 0, 0, "unhealthy"),
    }
    [m, other] = report.models
    assert (m.model, m.requests, m.errors, m.in_flight, m.healthy, m.backends) == (
        "m",
        34,
        1,
        2,
        1,
        2,
    )
    assert (other.healthy, other.backends) == (0, 1)
    assert report.message == (
        "34 requests (0.57/s), 1 error (2.9%), 2 in flight; 1/3 backends healthy"
    )

    # A reload replaced b (new settings, new counters) and removed c.
    new_b = backend_state("b", weight=2.0)
    new_b.requests = 3
    a.requests = 131
    report = counter.report([a, new_b], now=T0 + 120)
    assert {r.backend: r.requests for r in report.rows} == {"m@a": 1, "m@b": 3}
    assert report.since == T0 + 60


def test_traffic_summaries_read_naturally() -> None:
    assert traffic_summary(5, 1, 2, 3.0) == "5 requests (1.67/s), 1 error (20.0%), 2 in flight"
    assert traffic_summary(1, 0, 0, 10.0) == "1 request (0.10/s), 0 errors (0.0%), 0 in flight"
    # Health checks alone can record errors: no rate or share without requests.
    assert traffic_summary(0, 1, 0, 10.0) == "0 requests, 1 error, 0 in flight"
