"""Short, fixed-style renderings of numbers for narrow terminal columns; unknown is ``-``."""

from __future__ import annotations

import time
from collections.abc import Sequence

from llmops.tui.snapshot import Percentiles

UNKNOWN = "-"


def count(value: int | None) -> str:
    if value is None:
        return UNKNOWN
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 100_000:
        return f"{value / 1000:.0f}k"
    return str(value)


def rate(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def ms(value: float | None) -> str:
    """Milliseconds as ``118ms``, or seconds once it reaches ten of them (``12.3s``)."""
    if value is None:
        return UNKNOWN
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    return f"{value:.0f}ms"


def ms_pair(value: Percentiles) -> str:
    """``p50/p95`` in bare milliseconds (the column header carries the unit)."""
    return f"{_bare_ms(value.p50)}/{_bare_ms(value.p95)}"


def _bare_ms(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    if value >= 10_000:
        return f"{value / 1000:.0f}s"
    return f"{value:.0f}"


def percent(fraction: float | None) -> str:
    return UNKNOWN if fraction is None else f"{fraction * 100:.0f}%"


def used_of(used: int | None, limit: int | None) -> str:
    """RPM as ``used/limit``; no limit shows as ``used/-``."""
    return f"{count(used)}/{count(limit)}"


def duration(seconds: float | None) -> str:
    """Uptime as ``45s``, ``12m05s``, ``3h02m`` or ``4d03h``."""
    if seconds is None or seconds < 0:
        return UNKNOWN
    total = int(seconds)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def clock(unix_s: float | None) -> str:
    """Local wall-clock time ``HH:MM:SS`` (tests pin TZ)."""
    if unix_s is None:
        return UNKNOWN
    return time.strftime("%H:%M:%S", time.localtime(unix_s))


def short_url(url: str | None) -> str:
    """Drop the scheme and a trailing ``/v1``: what is left names the host and port."""
    if not url:
        return UNKNOWN
    for scheme in ("http://", "https://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    url = url.rstrip("/")
    return url.removesuffix("/v1")


def one_line(text: str | None, width: int) -> str:
    """Collapse whitespace and cut to ``width`` characters with an ellipsis."""
    if not text:
        return UNKNOWN
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


SPARK_BARS = "▁▂▃▄▅▆▇█"


def spark(samples: Sequence[float | None], width: int) -> str:
    """The last ``width`` samples as one bar each, scaled from 0 to their maximum.

    Right-aligned so the newest sample is always in the last column; unknown samples are
    blanks, which keeps "no data" apart from "zero".
    """
    recent = list(samples)[-width:] if width > 0 else []
    known = [value for value in recent if value is not None]
    top = max(known, default=0.0)
    bars = []
    for value in recent:
        if value is None:
            bars.append(" ")
        elif top <= 0:
            bars.append(SPARK_BARS[0])
        else:
            level = round(max(value, 0.0) / top * (len(SPARK_BARS) - 1))
            bars.append(SPARK_BARS[level])
    return "".join(bars).rjust(width)
