"""inotify on the config directories: a replaced, edited or deleted file is noticed at once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from llmops.router.filewatch import DirectoryWatch


async def test_changes_in_a_watched_directory_are_reported(tmp_path: Path) -> None:
    noticed = asyncio.Event()
    watch = DirectoryWatch([tmp_path], noticed.set)
    assert watch.start()  # Linux: inotify is there
    try:
        for change in (
            lambda: (tmp_path / "router.yaml").write_text("a: 1\n"),  # created / written
            lambda: (tmp_path / "new.tmp").write_text("b: 2\n"),
            lambda: os.replace(tmp_path / "new.tmp", tmp_path / "router.yaml"),  # replaced
            lambda: (tmp_path / "router.yaml").unlink(),  # deleted
        ):
            noticed.clear()
            change()
            await asyncio.wait_for(noticed.wait(), 1.0)
        noticed.clear()
        (tmp_path.parent / f"{tmp_path.name}-elsewhere").write_text("x")  # not watched
        await asyncio.sleep(0.2)
        assert not noticed.is_set()
    finally:
        watch.close()
