"""The router's /dashboard page in real headless Chromium, against a recorded /status.

Chromium runs as an asyncio subprocess so the test's own aiohttp server keeps answering
the page's polls meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import struct
from pathlib import Path

from tui_recorded_router import DASHBOARD_HTML, RecordedRouter

from tests.conftest import StartRouter, StartSim, require_binary, router_config

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
    "--virtual-time-budget=5000",
)


def chromium() -> str:
    return require_binary("chromium", shutil.which("chromium-browser") or "")


async def run_chromium(tmp_path: Path, url: str, *output: str) -> str:
    process = await asyncio.create_subprocess_exec(
        chromium(),
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        *output,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0
    return stdout.decode()


async def dump_dom(tmp_path: Path, url: str) -> str:
    return await run_chromium(tmp_path, url, "--dump-dom")


def backend_rows(dom: str) -> dict[str, str]:
    rows = re.findall(r'<tr data-backend="([^"]+)">(.*?)</tr>', dom, flags=re.S)
    return {backend_id: re.sub(r"<[^>]+>", "|", cells) for backend_id, cells in rows}


def test_the_page_is_self_contained() -> None:
    html = DASHBOARD_HTML.read_text()
    # Nothing may come from the internet: no external scripts, styles, fonts or images.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    assert re.findall(r"https?://[^\s\"'<]+", html) == ["http://www.w3.org/2000/svg"]


async def test_page_shows_backends_models_events_and_charts(
    recorded_router: RecordedRouter, tmp_path: Path
) -> None:
    dom = await dump_dom(tmp_path, f"{recorded_router.url}/dashboard")
    rows = backend_rows(dom)
    assert list(rows) == ["llama-8b-0", "llama-8b-1", "qwen3-30b-0", "qwen3-30b-1", "qwen3-30b-2"]
    assert "|10.0.0.1:8000|" in rows["qwen3-30b-0"] and "|104/310|" in rows["qwen3-30b-0"]
    assert "|412/600|" in rows["qwen3-30b-0"] and "|63%|" in rows["qwen3-30b-0"]
    assert "|-/-|" in rows["qwen3-30b-2"]  # unknown latencies render as -
    for state in ("healthy", "unhealthy", "draining", "ejected", "probing"):
        assert f'class="state state-{state}">{state}<' in dom
    assert '<div class="value" id="t-rps">42.7</div>' in dom
    assert "up 1h02m · gen 3 · least-load · router 0.1.0" in dom
    assert "circuit opened after 5 consecutive 503s" in dom
    assert 'qwen3-30b</td><td class="num">1/3</td>' in dom
    # Charts: SVG paths with real coordinates, several polls in the virtual time budget.
    series = {
        label: d for d, label in re.findall(r'<path d="([^"]+)"[^>]*data-series="([^"]+)"', dom)
    }
    assert set(series) == {"total req/s", "p50", "p95"}
    assert re.match(r"M[\d.]+,[\d.]+ ", series["total req/s"])
    assert "L" in series["p50"]  # at least two samples drawn as a line
    assert recorded_router.status_requests >= 2
    assert 'class="shown"' not in dom  # no error banner


async def test_screenshot_of_the_page(recorded_router: RecordedRouter, tmp_path: Path) -> None:
    shot = tmp_path / "dashboard.png"
    await run_chromium(tmp_path, f"{recorded_router.url}/dashboard", f"--screenshot={shot}")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1280, 900)
    assert len(png) > 20_000  # a rendered page, not a blank one
    if os.environ.get("LLMOPS_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["LLMOPS_KEEP_SCREENSHOT"])


async def test_token_from_query_param_is_sent_and_missing_token_shows_a_prompt(
    recorded_router: RecordedRouter, tmp_path: Path
) -> None:
    recorded_router.token = "admin-secret"
    dom = await dump_dom(tmp_path, f"{recorded_router.url}/dashboard?token=admin-secret")
    assert len(backend_rows(dom)) == 5
    dom = await dump_dom(tmp_path / "fresh", f"{recorded_router.url}/dashboard")
    assert backend_rows(dom) == {}
    assert 'id="banner" role="alert" class="shown"' in dom
    assert "HTTP 401: unauthorized: this router needs an admin token" in dom
    assert '<form id="token-form">' in dom  # the token prompt is visible (not hidden)


async def test_router_errors_show_a_clear_banner(
    recorded_router: RecordedRouter, tmp_path: Path
) -> None:
    recorded_router.status_code = 503
    dom = await dump_dom(tmp_path, f"{recorded_router.url}/dashboard")
    assert 'class="shown"' in dom
    assert "HTTP 503: recorded failure" in dom
    assert '<form id="token-form" hidden="">' in dom


async def test_page_served_by_the_real_router(
    start_sim: StartSim, start_router: StartRouter, tmp_path: Path
) -> None:
    sims = [await start_sim(model="m", ttft_ms=5, itl_ms=2) for _ in range(2)]
    url = await start_router(router_config([("m", s.url) for s in sims]))
    shot = tmp_path / "router-dashboard.png"
    dom = await run_chromium(tmp_path, f"{url}/dashboard", "--dump-dom")
    rows = backend_rows(dom)
    assert len(rows) == 2
    assert all("|healthy|" in cells for cells in rows.values())
    assert f"|127.0.0.1:{sims[0].port}|" in "".join(rows.values())
    assert re.search(r'<path d="M[\d.]+,[\d.]+ [^"]*" stroke="var\(--accent\)"', dom)
    assert 'class="shown"' not in dom
    await run_chromium(tmp_path, f"{url}/dashboard", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("LLMOPS_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["LLMOPS_KEEP_SCREENSHOT"] + ".router.png")


async def test_page_keeps_the_data_and_says_stale_when_the_router_goes_away(
    recorded_router: RecordedRouter, tmp_path: Path
) -> None:
    recorded_router.hang_up_after = 2
    dom = await dump_dom(tmp_path, f"{recorded_router.url}/dashboard")
    assert len(backend_rows(dom)) == 5  # the last good data stays
    assert re.search(r"stale since \d\d:\d\d:\d\d: router unreachable", dom)
    assert '<span id="pill" class="stale">stale</span>' in dom
    assert '<form id="token-form" hidden="">' in dom  # a dead router is not a token problem
    # Back-off (2 s, 4 s...) leaves two failed polls in the 5 s virtual budget; Chromium
    # retries a GET once when a kept-alive connection closes, hence up to two requests each.
    assert recorded_router.status_requests <= 2 + 2 * 2
