"""Fixtures that start real servers on loopback port 0 and always stop them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
import yaml
from aiohttp import web

from llmops.router.app import router_url, running_router
from llmops.sim import SimOptions, running_sim

StartSim = Callable[..., Awaitable[Any]]
StartRouter = Callable[..., Awaitable[str]]


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, ssl_context: ssl.SSLContext | None = None, **runner_options: Any
) -> AsyncIterator[str]:
    """Serve a test-local aiohttp ``app`` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def router_process(
    config: Path, open_files: int | None = None
) -> AsyncIterator[tuple[subprocess.Popen[str], str]]:
    """``llmops router serve`` in its own process on a free port (with at most
    ``open_files`` descriptors, if given): the process and its URL. Killed at the end if it
    is still running."""

    def limit_open_files() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    argv = [sys.executable, "-m", "llmops", "router", "serve", "--config", str(config)]
    router = subprocess.Popen(
        [*argv, "--port", "0"], stdout=subprocess.PIPE, text=True, preexec_fn=limit_open_files
    )
    assert router.stdout is not None
    try:
        line = await asyncio.to_thread(router.stdout.readline)
        yield router, line.rsplit(" on ", 1)[1].strip()
    finally:
        with contextlib.suppress(ProcessLookupError):
            router.kill()
        router.wait()
        router.stdout.close()


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has an empty command line)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return bool(cmdline.read())
    except OSError:
        return False


def missing_part(message: str) -> NoReturn:
    """A real part the test needs is not there: a failure under CI, a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_binary(name: str, *candidates: str) -> str:
    """The path of an external program the test needs; under CI its absence is a failure."""
    for candidate in (*candidates, shutil.which(name)):
        if candidate and os.path.exists(candidate):
            return candidate
    missing_part(f"{name} is not installed (scripts/test installs it)")


async def leave_streams_midway(
    url: str, body: dict[str, Any], times: int, after_events: int = 3
) -> None:
    """Open ``times`` streams at ``url`` and drop each connection after a few events."""
    from llmops.openai import SSEParser

    for _ in range(times):
        async with aiohttp.ClientSession() as client:
            response = await client.post(f"{url}/v1/chat/completions", json=body)
            parser, received = SSEParser(), 0
            async for chunk in response.content.iter_any():
                received += len(parser.feed(chunk))
                if received >= after_events:
                    break
            response.close()  # drop the connection mid-stream


def router_config(
    model_list: list[tuple[str, str]] | list[dict[str, Any]], **sections: Any
) -> dict[str, Any]:
    """A router config dict: ``model_list`` as (model, base URL) pairs or full entries."""
    entries = [
        {"model_name": e[0], "litellm_params": {"api_base": f"{e[1]}/v1"}}
        if isinstance(e, tuple)
        else e
        for e in model_list
    ]
    return {"model_list": entries, **sections}


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Start in-process sims: ``sim = await start_sim(model="m", itl_ms=5)``; ``sim.url``."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**options: Any) -> Any:
            options.setdefault("port", 0)
            return await stack.enter_async_context(running_sim(SimOptions(**options)))

        yield start


@pytest.fixture
async def start_router(tmp_path: Path) -> AsyncIterator[StartRouter]:
    """Start in-process routers from a config dict; returns the router's base URL."""
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def start(config: dict[str, Any]) -> str:
            nonlocal count
            count += 1
            path = tmp_path / f"router-{count}.yaml"
            path.write_text(yaml.safe_dump(config))
            runner = await stack.enter_async_context(running_router(path, "127.0.0.1", 0))
            return router_url(runner)

        yield start


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
