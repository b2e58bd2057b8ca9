"""Process settings the long-running commands share (the router, the bench workers): the
open-file limit and the garbage collector."""

from __future__ import annotations

import contextlib
import gc
import resource


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit as far as the hard limit allows; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def settle_collector(young_threshold: int) -> None:
    """Once a process has started: what exists then (modules, config, corpus) lives as long
    as the process, so it leaves the collector's sight, and young collections (CPython's
    default: every 700 tracked allocations) become rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young_threshold, 20, 100)
