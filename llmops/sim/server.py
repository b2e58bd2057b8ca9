"""``running_sim``: start the sim's server and engine, and stop both cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from llmops.errors import SimError
from llmops.sim.engine import Engine
from llmops.sim.faults import Faults
from llmops.sim.handlers import SimState, build_app
from llmops.sim.options import SimMode, SimOptions


@dataclass(frozen=True, slots=True)
class RunningSim:
    """A sim serving on ``url``; ``engine`` gives its live state for tests and stats."""

    url: str
    port: int
    engine: Engine
    state: SimState

    @property
    def options(self) -> SimOptions:
        return self.state.options

    def set_mode(self, mode: SimMode, abort_after_tokens: int | None = None) -> None:
        """Switch failure injection from the same process (what ``POST /sim/mode`` does)."""
        self.state.faults.set_mode(mode, abort_after_tokens)


@contextlib.asynccontextmanager
async def running_sim(options: SimOptions) -> AsyncIterator[RunningSim]:
    """Serve a simulated engine on ``options.host``/``options.port`` (0 = a free port).

    On exit every sequence is aborted, hung requests are released, connections are closed
    and the engine loop task has ended.
    """
    engine = Engine(options)
    faults = Faults(options, engine)
    state = SimState(options, engine, faults)
    runner = web.AppRunner(
        build_app(state),
        handler_cancellation=True,  # a client that goes away cancels its handler: an abort
        access_log=None,  # per-request logging has no place on a token-pacing hot path
        shutdown_timeout=1.0,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port, backlog=4096)
        try:
            await site.start()
        except OSError as exc:
            raise SimError(
                f"cannot listen on {options.host}:{options.port}: {exc.strerror}"
            ) from None
        port = int(runner.addresses[0][1])
        engine.start()
        try:
            yield RunningSim(f"http://{_url_host(options.host)}:{port}", port, engine, state)
        finally:
            faults.close()
            await engine.close()
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve_until_signalled(
    options: SimOptions, on_ready: Callable[[RunningSim], None]
) -> None:
    """Run the sim until SIGTERM or SIGINT, then stop cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_sim(options) as sim:
        on_ready(sim)
        await stop.wait()
