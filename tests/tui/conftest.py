"""Fixtures of the dashboard tests: pinned time zone, a recorded router on loopback."""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from tui_recorded_router import RecordedRouter, recorded_status


@pytest.fixture
def pinned_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
async def recorded_router(pinned_tz: None) -> AsyncIterator[RecordedRouter]:
    router = RecordedRouter(copy.deepcopy(recorded_status()))
    await router.start()
    try:
        yield router
    finally:
        await router.stop()
