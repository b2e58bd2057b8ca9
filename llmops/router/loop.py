"""The process settings the router runs with: the event loop, the open-file limit and the
garbage collector."""

from __future__ import annotations

import asyncio
import logging
import resource

from llmops import process

log = logging.getLogger("llmops.router")

#: Two sockets per proxied stream: below this, thousands of streams run out of descriptors.
WANTED_OPEN_FILES = 65536

#: Tracked allocations between young-generation collections (CPython's default: 700). A
#: request allocates about a hundred such objects, nearly all freed by reference counting,
#: so the default collects every seven requests; measured, the collector then took about a
#: tenth of the router's CPU (10,000: a fortieth).
_YOUNG_COLLECTION_THRESHOLD = 10_000


def install_fast_loop() -> None:
    """Use uvloop when it is installed (measurably faster for non-streaming proxying)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def check_open_files() -> int:
    """Raise the open-file limit as far as the hard limit allows; say so if it stays low."""
    soft = process.raise_open_file_limit()
    if soft != resource.RLIM_INFINITY and soft < WANTED_OPEN_FILES:
        log.warning(
            "open-file limit is %d: the router can hold about %d concurrent streams; raise it "
            "with `ulimit -n %d` (or LimitNOFILE= in a systemd unit)",
            soft,
            soft // 2,
            WANTED_OPEN_FILES,
        )
    return soft


def settle_collector() -> None:
    """Once the server is up (see ``process.settle_collector``)."""
    process.settle_collector(_YOUNG_COLLECTION_THRESHOLD)
