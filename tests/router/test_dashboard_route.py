"""The web dashboard is admin-only, and a browser can open it with ?token=."""

from __future__ import annotations

import aiohttp

from tests.conftest import StartRouter, StartSim, router_config


async def test_dashboard_page_needs_the_admin_token_in_header_or_query(
    start_sim: StartSim, start_router: StartRouter, http: aiohttp.ClientSession
) -> None:
    sim = await start_sim(model="m")
    url = await start_router(router_config([("m", sim.url)], auth={"admin_tokens": ["adm-secret"]}))
    async with http.get(f"{url}/dashboard") as response:
        assert response.status == 401
    async with http.get(f"{url}/dashboard?token=wrong") as response:
        assert response.status == 401
    async with http.get(f"{url}/dashboard?token=adm-secret") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "/status" in page
    assert "adm-secret" not in page
    async with http.get(
        f"{url}/dashboard", headers={"Authorization": "Bearer adm-secret"}
    ) as response:
        assert response.status == 200
    async with http.get(f"{url}/status?token=adm-secret") as response:
        assert response.status == 401  # data endpoints take the header only
