"""Unit tests of the dashboard's data model: parsing, history, rates, sort/filter, staleness."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.errors import DashboardError
from llmops.tui import text
from llmops.tui.client import normalize_url
from llmops.tui.history import FleetHistory, rate_per_s
from llmops.tui.rows import (
    COLUMNS,
    SORT_KEYS,
    backend_cells,
    matches,
    next_sort,
    visible_backends,
)
from llmops.tui.snapshot import Percentiles, StatusSnapshot, parse_status
from llmops.tui.staleness import BACKOFF_CAP_S, PollHealth, next_delay_s

FIXTURE = Path(__file__).parent / "fixtures" / "status_fleet.json"


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def fleet(received_at: float = 1000.0, **changes: object) -> StatusSnapshot:
    data = json.loads(FIXTURE.read_text())
    data.update(changes)
    return parse_status(data, received_at=received_at)


def with_requests(snapshot_data: dict[str, object], per_backend: dict[str, int]) -> None:
    for backend in snapshot_data["backends"]:  # type: ignore[attr-defined]
        if backend["id"] in per_backend:
            backend["requests"] = per_backend[backend["id"]]


# --- parsing ---------------------------------------------------------------------------------


def test_parses_every_field_of_the_recorded_status() -> None:
    snap = fleet()
    assert snap.version == 1
    assert snap.router.uptime_s == 3725.4
    assert snap.router.strategy == "least-load"
    assert snap.router.config_generation == 3
    assert snap.totals.requests == 18342
    assert snap.totals.rps == 42.7
    assert snap.totals.ttft_ms == Percentiles(118.0, 342.5)
    assert [m.name for m in snap.models] == ["qwen3-30b", "llama-3.1-8b"]
    assert snap.models[0].healthy == 1 and snap.models[0].backends == 3
    assert [b.state for b in snap.backends] == [
        "healthy",
        "draining",
        "unhealthy",
        "ejected",
        "probing",
    ]
    first = snap.backends[0]
    assert (first.rpm_used, first.rpm_limit) == (412, 600)
    assert first.engine.kv_cache_usage == 0.63
    assert first.engine.running == 9 and first.engine.waiting == 2
    down = snap.backend("qwen3-30b-2")
    assert down is not None
    assert down.last_error == "connect: connection refused"
    assert down.rpm_limit is None and down.latency_ms == Percentiles(None, None)
    assert down.engine.running is None
    assert snap.events[1].level == "warning" and snap.events[1].backend == "qwen3-30b-2"
    assert snap.events[0].at == 1795305600.0


def test_minimal_status_parses_with_everything_unknown() -> None:
    snap = parse_status({"version": 1}, received_at=5.0)
    assert snap.backends == () and snap.models == () and snap.events == ()
    assert snap.totals.rps is None and snap.router.uptime_s is None


@pytest.mark.parametrize(
    "body",
    [[], "x", None, {"version": 2}, {"version": "1"}, {"version": True}, {"backends": []}],
)
def test_refuses_what_is_not_version_1(body: object) -> None:
    with pytest.raises(DashboardError):
        parse_status(body, received_at=0.0)


def test_wrong_types_become_unknown_instead_of_crashing() -> None:
    snap = parse_status(
        {
            "version": 1,
            "router": "nope",
            "totals": {"requests": "12", "rps": float("nan"), "in_flight": True, "errors": 3.0},
            "models": [{"name": 5}, "x", {"name": "m", "rps": "fast"}],
            "backends": [
                {"id": "a", "state": 7, "rpm": [], "engine": {"kv_cache_usage": 63}},
                {"url": "http://b:1/v1"},
                {"id": 9},
                {"model": "no id, no url"},
                {"id": "a", "state": "duplicate"},
                "junk",
            ],
            "events": [{"message": "ok", "at": "2026-11-22T00:00:00Z", "level": "WARN"}, {}],
        },
        received_at=0.0,
    )
    assert snap.router.strategy is None
    assert snap.totals.requests is None and snap.totals.rps is None
    assert snap.totals.in_flight is None and snap.totals.errors == 3
    assert [m.name for m in snap.models] == ["m"] and snap.models[0].rps is None
    assert [b.id for b in snap.backends] == ["a", "http://b:1/v1", "9"]
    assert snap.backends[0].state is None
    assert snap.backends[0].engine.kv_cache_usage == pytest.approx(0.63)  # percent tolerated
    assert len(snap.events) == 1
    assert snap.events[0].at == 1795305600.0 and snap.events[0].level == "warn"


def test_numbers_beyond_64_bits_are_unknown() -> None:
    huge = 10**400
    snap = parse_status(
        {"version": 1, "totals": {"requests": huge, "rps": huge, "errors": 1e300}}, 0.0
    )
    assert snap.totals.requests is None and snap.totals.rps is None
    assert snap.totals.errors is None


def test_event_time_in_milliseconds_is_read_as_seconds() -> None:
    snap = parse_status(
        {"version": 1, "events": [{"at": 1795305600123, "message": "m"}]}, received_at=0.0
    )
    assert snap.events[0].at == pytest.approx(1795305600.123)


# --- history and derived rates ---------------------------------------------------------------


def test_rate_per_s_needs_two_readings_and_a_growing_counter() -> None:
    assert rate_per_s(10, 30, 2.0) == 10.0
    assert rate_per_s(None, 30, 2.0) is None
    assert rate_per_s(10, None, 2.0) is None
    assert rate_per_s(10, 30, 0.0) is None
    assert rate_per_s(30, 10, 2.0) is None  # counter reset: router restarted


def test_backend_rates_come_from_counter_deltas() -> None:
    data = json.loads(FIXTURE.read_text())
    history = FleetHistory()
    history.record(parse_status(data, received_at=100.0))
    assert history.backend_rps("qwen3-30b-0") is None  # one reading is no rate
    with_requests(data, {"qwen3-30b-0": 9120 + 50, "qwen3-30b-1": 7011 + 10})
    history.record(parse_status(data, received_at=102.0))
    assert history.backend_rps("qwen3-30b-0") == 25.0
    assert history.backend_rps("qwen3-30b-1") == 5.0
    assert history.backend_rps("qwen3-30b-2") == 0.0
    assert list(history.backends["qwen3-30b-0"].rps) == [None, 25.0]
    assert list(history.total_rps) == [42.7, 42.7]
    assert list(history.total_ttft_p50_ms) == [118.0, 118.0]


def test_total_rps_is_derived_when_the_router_gives_none() -> None:
    history = FleetHistory()
    base = {"version": 1, "totals": {"requests": 100, "errors": 1, "rps": None}}
    history.record(parse_status(base, received_at=10.0))
    later = {"version": 1, "totals": {"requests": 130, "errors": 4, "rps": None}}
    history.record(parse_status(later, received_at=13.0))
    assert list(history.total_rps) == [None, 10.0]
    assert history.error_rate_per_s == 1.0


def test_router_restart_gives_no_rate_for_that_sample() -> None:
    data = json.loads(FIXTURE.read_text())
    history = FleetHistory()
    history.record(parse_status(data, received_at=100.0))
    data["router"]["uptime_s"] = 2.0
    with_requests(data, {"qwen3-30b-0": 9999999})  # would be a huge rate without the check
    history.record(parse_status(data, received_at=101.0))
    assert history.backend_rps("qwen3-30b-0") is None


def test_ring_buffers_keep_only_the_last_samples() -> None:
    history = FleetHistory(samples=3)
    for i in range(5):
        history.record(
            parse_status(
                {"version": 1, "totals": {"rps": float(i)}, "backends": [{"id": "a"}]},
                received_at=float(i),
            )
        )
    assert list(history.total_rps) == [2.0, 3.0, 4.0]
    assert len(history.backends["a"].rps) == 3


def test_backends_removed_by_reload_lose_their_history() -> None:
    history = FleetHistory()
    history.record(parse_status({"version": 1, "backends": [{"id": "a"}, {"id": "b"}]}, 1.0))
    history.record(parse_status({"version": 1, "backends": [{"id": "b"}]}, 2.0))
    assert set(history.backends) == {"b"}


def test_error_history_keeps_each_new_last_error_once() -> None:
    history = FleetHistory()
    for at, error in [(1.0, None), (2.0, "boom"), (3.0, "boom"), (4.0, None), (5.0, "bang")]:
        history.record(
            parse_status({"version": 1, "backends": [{"id": "a", "last_error": error}]}, at)
        )
    assert list(history.backends["a"].errors) == [(2.0, "boom"), (5.0, "bang")]


# --- sort and filter -------------------------------------------------------------------------


def test_filter_matches_every_word_in_any_field_case_insensitively() -> None:
    snap = fleet()
    down = snap.backend("qwen3-30b-2")
    assert down is not None
    assert matches(down, "")
    assert matches(down, "QWEN refused")
    assert matches(down, "10.0.0.3 unhealthy")
    assert not matches(down, "qwen healthy-not-there")
    history = FleetHistory()
    history.record(snap)
    chosen = visible_backends(snap.backends, history, "llama", SORT_KEYS[0])
    assert [b.id for b in chosen] == ["llama-8b-0", "llama-8b-1"]


def test_sort_cycle_wraps_around() -> None:
    key = SORT_KEYS[0]
    seen = []
    for _ in SORT_KEYS:
        seen.append(key.name)
        key = next_sort(key)
    assert key == SORT_KEYS[0]
    assert seen == ["model", "state", "in_flight", "rps", "latency", "ttft", "errors"]


def sorted_ids(name: str) -> list[str]:
    snap = fleet()
    history = FleetHistory()
    history.record(snap)
    key = next(k for k in SORT_KEYS if k.name == name)
    return [b.id for b in visible_backends(snap.backends, history, "", key)]


def test_sort_orders() -> None:
    assert sorted_ids("model") == [
        "llama-8b-0",
        "llama-8b-1",
        "qwen3-30b-0",
        "qwen3-30b-1",
        "qwen3-30b-2",
    ]
    # Problems first.
    assert sorted_ids("state") == [
        "qwen3-30b-2",
        "llama-8b-0",
        "llama-8b-1",
        "qwen3-30b-1",
        "qwen3-30b-0",
    ]
    assert sorted_ids("errors")[0] == "qwen3-30b-2"
    assert sorted_ids("in_flight")[0] == "qwen3-30b-0"
    # Unknown latency sorts last whatever the direction.
    assert sorted_ids("latency")[-1] == "qwen3-30b-2"
    assert sorted_ids("ttft")[:2] == ["qwen3-30b-1", "qwen3-30b-0"]
    # No rates after one poll: order falls back to model, id.
    assert sorted_ids("rps") == sorted_ids("model")


# --- staleness and back-off ------------------------------------------------------------------


def test_back_off_doubles_to_the_cap_and_resets() -> None:
    assert [next_delay_s(1.0, n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert next_delay_s(1.0, 10_000) == BACKOFF_CAP_S
    assert next_delay_s(30.0, 3) == 30.0  # the cap never shortens a long interval


def test_poll_health_reports_stale_since_first_failure_and_recovers() -> None:
    health = PollHealth(interval_s=1.0)
    health.succeeded(at=1795305600.0)
    assert not health.stale and health.describe() == ""
    health.failed(at=1795305601.0, reason="connection refused")
    health.failed(at=1795305603.0, reason="connection refused")
    assert health.stale and health.failures == 2
    assert health.describe() == "STALE since 00:00:01: connection refused"
    assert health.next_delay_s() == 4.0
    health.succeeded(at=1795305610.0)
    assert not health.stale and health.next_delay_s() == 1.0


# --- text ------------------------------------------------------------------------------------


def test_unknown_values_render_as_dash() -> None:
    snap = parse_status({"version": 1, "backends": [{"id": "x"}]}, received_at=0.0)
    cells = backend_cells(snap.backends[0], None)
    assert len(cells) == len(COLUMNS)
    assert set(cells) <= {"-", "-/-"}


def test_row_cells_of_a_busy_backend() -> None:
    snap = fleet()
    cells = dict(zip(COLUMNS, backend_cells(snap.backends[0], 12.345), strict=True))
    assert cells["backend"] == "10.0.0.1:8000"
    assert cells["req/s"] == "12.3"
    assert cells["run/wait"] == "9/2"
    assert cells["KV"] == "63%"
    assert cells["RPM"] == "412/600"
    assert cells["lat ms"] == "1830/4210"
    assert cells["TTFT ms"] == "104/310"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (5.9, "5s"), (65, "1m05s"), (3725.4, "1h02m"), (360_000, "4d04h")],
)
def test_duration(seconds: float | None, shown: str) -> None:
    assert text.duration(seconds) == shown


def test_number_formats() -> None:
    assert text.ms(118.4) == "118ms" and text.ms(12_345) == "12.3s" and text.ms(None) == "-"
    assert text.rate(0.04) == "0.0" and text.rate(123.4) == "123"
    assert text.count(1_234_567) == "1.2M" and text.count(123_456) == "123k"
    assert text.clock(1795305661.0) == "00:01:01"
    assert text.short_url("https://h:1/v1/") == "h:1"
    assert text.one_line("a\n  b  c", 4) == "a b…"


def test_backend_rate_is_averaged_over_the_rate_window() -> None:
    history = FleetHistory()
    requests = 0
    for second in range(12):
        requests += 50 if second == 10 else 10  # a burst of 50 in one second
        history.record(
            parse_status(
                {"version": 1, "backends": [{"id": "a", "requests": requests}]},
                received_at=float(second),
            )
        )
    rates = list(history.backends["a"].rps)
    assert rates[0] is None and rates[1] == 10.0 and rates[9] == 10.0
    # The burst is spread over the 5 s window instead of showing 50 then 10.
    assert rates[10] == pytest.approx((40 + 50) / 5)
    assert rates[11] == pytest.approx((30 + 50 + 10) / 5)
    assert len(history.backends["a"].counts) <= 7


def test_failed_polls_leave_gaps_in_every_series() -> None:
    history = FleetHistory()
    history.record(fleet(received_at=1.0))
    history.record_gap()
    history.record(fleet(received_at=3.0))
    assert list(history.total_rps) == [42.7, None, 42.7]
    assert list(history.backends["qwen3-30b-0"].ttft_p50_ms) == [104.0, None, 104.0]
    assert text.spark([1.0, None, 2.0], 5) == "  ▅ █"


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://router:8000/", "http://router:8000"),
        (" https://gw.example/llm/ ", "https://gw.example/llm"),
    ],
)
def test_normalize_url(given: str, normal: str) -> None:
    assert normalize_url(given) == normal


@pytest.mark.parametrize("bad", ["ftp://h", "http://", "http://h:99999", "http://h:x"])
def test_normalize_url_refuses(bad: str) -> None:
    with pytest.raises(DashboardError, match="--url"):
        normalize_url(bad)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([10**400, -(10**400), 2**63])
    | st.floats()
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ("router", "totals", "models", "backends", "events")


@settings(max_examples=100, deadline=None)
@given(
    parts=st.fixed_dictionaries({}, optional={f: JSON for f in FIELDS}),
    backend=st.dictionaries(
        st.sampled_from(
            ["id", "model", "url", "state", "requests", "rpm", "latency_ms", "engine", "last_error"]
        ),
        JSON,
    ),
)
def test_any_json_in_any_field_parses_and_renders(
    parts: dict[str, object], backend: dict[str, object]
) -> None:
    data = {"version": 1, **parts}
    if isinstance(data.get("backends"), list):
        data["backends"] = [*data["backends"], backend]  # type: ignore[list-item]
    history = FleetHistory()
    for at in (1.0, 2.0):
        snap = parse_status(data, received_at=at)
        history.record(snap)
    for item in snap.backends:
        cells = backend_cells(item, history.backend_rps(item.id))
        assert len(cells) == len(COLUMNS) and all(isinstance(c, str) for c in cells)
    for key in SORT_KEYS:
        visible_backends(snap.backends, history, "a b", key)
