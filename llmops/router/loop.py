"""The process settings the servers run with: the event loop and the open-file limit."""

from __future__ import annotations

import asyncio
import logging
import resource

log = logging.getLogger("llmops.router")

#: Two sockets per proxied stream: below this, thousands of streams run out of descriptors.
WANTED_OPEN_FILES = 65536


def install_fast_loop() -> None:
    """Use uvloop when it is installed (measurably faster for non-streaming proxying)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit as far as the hard limit allows; say so if it is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < WANTED_OPEN_FILES:
        log.warning(
            "open-file limit is %d: the router can hold about %d concurrent streams; raise it "
            "with `ulimit -n %d` (or LimitNOFILE= in a systemd unit)",
            soft,
            soft // 2,
            WANTED_OPEN_FILES,
        )
    return soft
