"""The real dashboard under Textual's pilot, against a recorded router on loopback.

The refresh interval is long (60 s) so no timer races the test: polls happen once at
start and then only when the test (or a key) asks for one.
"""

from __future__ import annotations

import pytest
from rich.text import Text
from tui_pilot_helpers import next_poll, screen_text, table_ids, wait_until
from tui_recorded_router import RecordedRouter

from llmops.tui.app import DashboardApp
from llmops.tui.screens import BackendScreen, ConfirmScreen, HelpScreen
from llmops.tui.widgets import BackendsTable

LONG_INTERVAL_S = 60.0


def dashboard(router: RecordedRouter, token: str | None = None) -> DashboardApp:
    return DashboardApp(router.url, token=token, interval_s=LONG_INTERVAL_S)


async def test_renders_the_recorded_status_in_80x24(recorded_router: RecordedRouter) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        shown = screen_text(app)
        assert "up 1h02m · gen 3 · least-load · router 0.1.0" in shown
        assert "req/s 42.7  in flight 19  requests 18342  errors 27" in shown
        assert "TTFT p50 118ms p95 342ms" in shown
        for state in ("healthy", "unhealthy", "draining", "ejected", "probing"):
            assert state in shown
        assert "10.0.0.1:8000" in shown and "104/310" in shown and "1830/4210" in shown
        assert "-/-" in shown  # the unhealthy backend's unknown latencies
        assert "backends 5/5 · sort: model" in shown
        # models pane and events pane, newest event first
        assert "qwen3-30b     1/3      14    31.2" in shown
        assert shown.index("llama-8b-1 half-open") < shown.index("info config reloaded")
        assert "00:01:42 err  llama-8b-0 circuit" in shown  # TZ pinned to UTC
        for key in ("filter", "sort", "detail", "drain", "undrain", "pause", "help", "quit"):
            assert key in shown.splitlines()[-1]
        assert len(shown.splitlines()) == 24 and max(map(len, shown.splitlines())) <= 80
        assert "STALE" not in shown


async def test_state_cells_carry_their_colour(recorded_router: RecordedRouter) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(120, 32)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        table = app.query_one(BackendsTable)
        colours = {}
        for backend_id in table_ids(app):
            cell = table.get_cell(backend_id, "state")
            assert isinstance(cell, Text)
            colours[cell.plain] = str(cell.style)
        assert colours == {
            "healthy": "bold green",
            "unhealthy": "bold red",
            "draining": "bold yellow",
            "ejected": "bold magenta",
            "probing": "bold cyan",
        }
        # llama-8b-0's engine was last scraped 12.5 s ago: not yet dimmed; later it is.
        assert str(table.get_cell("llama-8b-0", "KV")) == "0%"
        recorded_router.data["backends"][3]["engine"]["age_s"] = 40.0  # type: ignore[index]
        await next_poll(pilot, app)
        kv = table.get_cell("llama-8b-0", "KV")
        assert isinstance(kv, Text) and kv.style == "dim" and kv.plain == "0%"


async def test_no_color_still_names_every_state(
    recorded_router: RecordedRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        assert app.no_color
        svg = app.export_screenshot()
        for state in ("healthy", "unhealthy", "draining", "ejected", "probing"):
            assert state in svg
        assert "#008000" not in svg.lower()  # no green anywhere


async def test_filter_key_narrows_and_escape_clears(recorded_router: RecordedRouter) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        await pilot.press("slash", *"llama", "enter")
        assert table_ids(app) == ["llama-8b-0", "llama-8b-1"]
        assert "backends 2/5 · sort: model · filter: llama" in screen_text(app)
        assert app.query_one(BackendsTable).has_focus  # enter gave the keys back to the table
        await pilot.press("slash", "escape")
        assert len(table_ids(app)) == 5 and "filter:" not in screen_text(app)


async def test_sort_key_cycles_columns(recorded_router: RecordedRouter) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        assert table_ids(app)[0] == "llama-8b-0"
        await pilot.press("s")
        assert "sort: state" in screen_text(app)
        assert table_ids(app)[:2] == ["qwen3-30b-2", "llama-8b-0"]  # problems first
        await pilot.press("s")
        assert "sort: in flight" in screen_text(app)
        assert table_ids(app)[0] == "qwen3-30b-0"


async def test_enter_opens_the_backend_detail_and_escape_returns(
    recorded_router: RecordedRouter,
) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        await pilot.press("s")  # by state: the unhealthy backend is first...
        assert app.query_one(BackendsTable).selected_id() == "llama-8b-0"  # ...cursor kept
        await pilot.press("up", "enter")
        assert isinstance(app.screen, BackendScreen)
        shown = screen_text(app)
        assert "qwen3-30b-2  unhealthy  qwen3-30b  http://10.0.0.3:8000/v1" in shown
        assert "connect: connection refused" in shown  # its last error
        assert "health check failed 3 times" in shown  # its events
        recorded_router.data["backends"][2]["errors"] = 99  # type: ignore[index]
        await next_poll(pilot, app)
        assert "errors 99" in screen_text(app)  # the detail screen follows the polls
        await pilot.press("escape")
        assert not isinstance(app.screen, BackendScreen)
        assert "backends 5/5" in screen_text(app)


async def test_drain_asks_then_posts_and_the_row_turns_draining(
    recorded_router: RecordedRouter,
) -> None:
    recorded_router.token = "admin-secret"
    app = dashboard(recorded_router, token="admin-secret")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        await pilot.press("down", "down")  # llama-8b-0, llama-8b-1, qwen3-30b-0
        assert app.query_one(BackendsTable).selected_id() == "qwen3-30b-0"
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Drain qwen3-30b-0 (http://10.0.0.1:8000/v1)?" in screen_text(app)
        await pilot.press("n")  # declined: nothing is sent
        assert not isinstance(app.screen, ConfirmScreen)
        assert recorded_router.admin_calls == []
        polls = app.polls_done
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: app.polls_done > polls)  # drain triggers a poll
        assert recorded_router.admin_calls == [("qwen3-30b-0", "drain", "Bearer admin-secret")]
        table = app.query_one(BackendsTable)
        assert str(table.get_cell("qwen3-30b-0", "state")) == "draining"
        assert table.selected_id() == "qwen3-30b-0"  # the cursor stayed on its backend
        polls = app.polls_done
        await pilot.press("u", "y")
        await wait_until(pilot, lambda: app.polls_done > polls)
        assert recorded_router.admin_calls[-1] == ("qwen3-30b-0", "undrain", "Bearer admin-secret")
        assert str(table.get_cell("qwen3-30b-0", "state")) == "healthy"


async def test_refused_drain_is_reported_not_fatal(recorded_router: RecordedRouter) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        recorded_router.token = "admin-secret"  # the router now wants a token we lack
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: bool(recorded_router.admin_calls))
        await wait_until(pilot, lambda: "admin token is needed" in screen_text(app))
        assert "drain llama-8b-0 failed" in screen_text(app)
        assert app.is_running


async def test_pause_stops_polling_and_resume_polls_at_once(
    recorded_router: RecordedRouter,
) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        await pilot.press("p")
        assert "PAUSED at" in screen_text(app)
        asked = recorded_router.status_requests
        await pilot.press("r")  # poll-now is ignored while paused
        await pilot.pause(0.3)
        assert recorded_router.status_requests == asked
        await pilot.press("p")
        await wait_until(pilot, lambda: recorded_router.status_requests == asked + 1)
        await wait_until(pilot, lambda: "PAUSED" not in screen_text(app))


async def test_help_and_quit_keys(recorded_router: RecordedRouter) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "drain / undrain the selected backend (asks first)" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_stale_indicator_while_down_and_recovery(recorded_router: RecordedRouter) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        await recorded_router.stop()
        await next_poll(pilot, app)
        shown = screen_text(app)
        assert "STALE since" in shown and "connection refused" in shown
        assert "qwen3-30b" in shown  # the last good data stays on screen
        assert app.health.failures == 1
        await pilot.press("enter")  # the detail screen says it too
        assert isinstance(app.screen, BackendScreen)
        assert "STALE since" in screen_text(app)
        await recorded_router.start()  # same port
        await next_poll(pilot, app)
        assert "STALE" not in screen_text(app)
        await pilot.press("escape")
        assert "STALE" not in screen_text(app)
        assert app.health.failures == 0 and app.health.next_delay_s() == LONG_INTERVAL_S


async def test_unauthorized_status_says_to_pass_a_token(recorded_router: RecordedRouter) -> None:
    recorded_router.token = "admin-secret"
    app = dashboard(recorded_router, token="wrong")
    async with app.run_test(size=(100, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        assert "HTTP 401: an admin token is needed (pass --token)" in screen_text(app)


async def test_polls_never_overlap_even_when_the_router_is_slow(
    recorded_router: RecordedRouter,
) -> None:
    recorded_router.status_delay_s = 0.2
    app = DashboardApp(recorded_router.url, interval_s=0.01)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(10):  # impatient keys while a poll is in flight
            await pilot.press("r")
        for _ in range(5):  # and calls within one tick, before any worker has started
            app.poll_now()
        await wait_until(pilot, lambda: app.polls_done >= 4)
        assert recorded_router.max_concurrent == 1


async def test_backs_off_while_the_router_fails(recorded_router: RecordedRouter) -> None:
    recorded_router.status_code = 503
    app = DashboardApp(recorded_router.url, interval_s=0.05)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: recorded_router.status_requests >= 1)
        first = recorded_router.status_requests
        await pilot.pause(1.5)
        more = recorded_router.status_requests - first
        # Without back-off: ~30 polls in 1.5 s; with it, retries come after 0.1, 0.2, 0.4,
        # 0.8 (then 1.6) s: at most 4 more, while the next one waits 3.1 s after the first.
        assert 1 <= more <= 4
        assert "HTTP 503: recorded failure" in screen_text(app)
        recorded_router.status_code = 200
        await wait_until(pilot, lambda: app.health.failures == 0, timeout_s=12)
        assert "STALE" not in screen_text(app)


async def test_polls_keep_the_cursor_and_the_sideways_scroll(
    recorded_router: RecordedRouter,
) -> None:
    app = dashboard(recorded_router)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.polls_done >= 1)
        table = app.query_one(BackendsTable)
        await pilot.press("down", "down", *["right"] * 4)
        await wait_until(pilot, lambda: table.scroll_x > 0)
        scroll_x = table.scroll_x
        assert "RPM" in screen_text(app)  # the columns past 80 columns are reachable
        recorded_router.data["backends"][0]["in_flight"] = 77  # qwen3-30b-0
        await next_poll(pilot, app)
        assert str(table.get_cell("qwen3-30b-0", "infl")) == "77"
        assert table.scroll_x == scroll_x
        assert table.selected_id() == "qwen3-30b-0"
        recorded_router.data["backends"].pop(3)  # a reload removed llama-8b-0
        await next_poll(pilot, app)
        assert "llama-8b-0" not in table_ids(app)
        assert table.selected_id() == "qwen3-30b-0"
