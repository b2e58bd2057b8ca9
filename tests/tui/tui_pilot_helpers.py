"""Pilot helpers shared by the dashboard tests: read the screen, wait for polls."""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot

from llmops.tui.app import DashboardApp
from llmops.tui.widgets import BackendsTable


def screen_text(app: DashboardApp) -> str:
    """What a terminal would show, as plain text lines."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def wait_until(
    pilot: Pilot[None], condition: Callable[[], bool], timeout_s: float = 5.0
) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if condition():
            await pilot.pause()
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not met in time")


async def next_poll(pilot: Pilot[None], app: DashboardApp) -> None:
    done = app.polls_done
    app.poll_now()
    await wait_until(pilot, lambda: app.polls_done > done)


def table_ids(app: DashboardApp) -> list[str]:
    table = app.query_one(BackendsTable)
    return [str(row.key.value) for row in table.ordered_rows]


async def poll_until(
    pilot: Pilot[None], app: DashboardApp, condition: Callable[[], bool], tries: int = 50
) -> None:
    """Poll again and again (0.1 s apart) until ``condition`` holds after a poll."""
    for _ in range(tries):
        await next_poll(pilot, app)
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError("condition not met after polling")
