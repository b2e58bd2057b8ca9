"""The dashboard against a real router in front of real sims on loopback."""

from __future__ import annotations

import contextlib

import aiohttp
from tui_pilot_helpers import poll_until, screen_text, table_ids, wait_until

from llmops.sim import SimOptions, running_sim
from llmops.tui.app import DashboardApp
from llmops.tui.widgets import BackendsTable
from tests.conftest import StartRouter, StartSim, router_config

ADMIN = "admin-secret"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


async def test_dashboard_over_a_real_router_and_sims(
    start_sim: StartSim,
    start_router: StartRouter,
    http: aiohttp.ClientSession,
    pinned_tz: None,
) -> None:
    async with contextlib.AsyncExitStack() as doomed:
        sims = [await start_sim(model="m", ttft_ms=5, itl_ms=2) for _ in range(2)]
        victim = await doomed.enter_async_context(running_sim(SimOptions(port=0, model="other")))
        config = router_config(
            [("m", sims[0].url), ("m", sims[1].url), ("other", victim.url)],
            auth={"admin_tokens": [ADMIN]},
            health_check={"interval": 0.2, "timeout": 0.5, "failure_threshold": 1},
        )
        url = await start_router(config)
        app = DashboardApp(url, token=ADMIN, interval_s=60.0)
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.polls_done >= 1)
            table = app.query_one(BackendsTable)
            ids = table_ids(app)
            assert len(ids) == 3
            assert [str(table.get_cell(i, "state")) for i in ids] == ["healthy"] * 3
            shown = screen_text(app)
            assert f"127.0.0.1:{sims[0].port}" in shown and "backends 3/3" in shown
            assert "STALE" not in shown

            for _ in range(5):
                async with http.post(f"{url}/v1/chat/completions", json=CHAT) as response:
                    assert response.status == 200
            # The router counts a request as it finishes, maybe just after we read the answer.
            await poll_until(pilot, app, lambda: "requests 5" in screen_text(app))
            # Per-backend req/s is derived from the counters between two polls.
            assert sum(app.history.backend_rps(i) or 0 for i in ids) > 0

            # d on the first row drains it in the real router; the next poll shows it.
            first = table.selected_id()
            assert first is not None
            await pilot.press("d", "y")
            await wait_until(pilot, lambda: str(table.get_cell(first, "state")) == "draining")
            async with http.get(
                f"{url}/status", headers={"Authorization": f"Bearer {ADMIN}"}
            ) as response:
                status = await response.json()
            assert {b["id"]: b["state"] for b in status["backends"]}[first] == "draining"

            # Killing a sim turns its row unhealthy within a few health checks.
            other = next(b["id"] for b in status["backends"] if b["model"] == "other")
            await doomed.aclose()
            await poll_until(pilot, app, lambda: str(table.get_cell(other, "state")) == "unhealthy")
