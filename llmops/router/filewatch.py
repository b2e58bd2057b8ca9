"""Change notifications for the directories holding the config files: inotify on Linux.

Directories are watched, not files, because editors and deploy tools replace a file by
renaming a new one over it. Where inotify is missing the watcher simply reports that it
could not start, and the caller keeps polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Callable, Iterable
from pathlib import Path

_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
# modify, attrib, close_write, moved_from, moved_to, create, delete
_EVENTS = 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200


class DirectoryWatch:
    """Calls ``on_change`` (on the event loop) when anything in ``directories`` changes."""

    def __init__(self, directories: Iterable[Path], on_change: Callable[[], None]) -> None:
        self.directories = frozenset(directories)
        self._on_change = on_change
        self._fd = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> bool:
        """Begin watching; False where inotify is not available."""
        name = ctypes.util.find_library("c")
        if name is None:
            return False
        try:
            libc = ctypes.CDLL(name, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError):
            return False
        if fd < 0:
            return False
        watched = sum(
            libc.inotify_add_watch(fd, os.fsencode(d), _EVENTS) >= 0 for d in self.directories
        )
        if not watched:
            os.close(fd)
            return False
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)
        return True

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._fd, 65536):
                pass
        self._on_change()

    def close(self) -> None:
        if self._fd >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
