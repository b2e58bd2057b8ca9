"""Hot reload: config changes are validated, diffed and swapped in atomically.

The files a config reads (the main file and its ``backends.config_dir`` sources) are watched
with inotify (a change is seen at once) and polled each second as a fallback; SIGHUP reloads
at once. An invalid config is rejected with a
logged error and the old one keeps serving. Backends that stay keep their state; new ones
join after a passing health check; removed ones finish their in-flight requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from llmops.config import LoadedConfig, load_router_config
from llmops.errors import ConfigError
from llmops.router.filewatch import DirectoryWatch
from llmops.router.health import admit_new_backends
from llmops.router.pool import build_snapshot
from llmops.router.state import RouterState

log = logging.getLogger("llmops.router")

FileStamp = tuple[int, int, int] | None  # (inode, size, mtime_ns), None if missing
_SETTLE_S = 0.05


def stamp(path: Path) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


async def apply_config(router: RouterState, loaded: LoadedConfig) -> None:
    """Swap ``loaded`` in, admitting its new backends once they pass a health check."""
    previous = router.snapshot
    snapshot = build_snapshot(loaded.backends, previous, previous.generation + 1)
    kept = {id(s) for s in previous.states}
    fresh = [s for s in snapshot.states if id(s) not in kept]
    if fresh and loaded.config.health_check.enabled:
        await admit_new_backends(router, fresh)
    if router.config.server != loaded.config.server:
        log.warning("server settings changed in the config: they take effect after a restart")
    router.swap(loaded, snapshot)
    old_ids = {s.id for s in previous.states}
    new_ids = {s.id for s in snapshot.states}
    added, removed = sorted(new_ids - old_ids), sorted(old_ids - new_ids)
    changed = sorted(s.id for s in fresh if s.id in old_ids)
    parts = [f"+{len(added)}", f"-{len(removed)}", f"~{len(changed)}"]
    detail = "; ".join(
        f"{label}: {', '.join(ids)}"
        for label, ids in (("added", added), ("removed", removed), ("changed", changed))
        if ids
    )
    router.events.record(
        "config_reloaded",
        "info",
        f"config reloaded (generation {snapshot.generation}, backends {' '.join(parts)})"
        + (f": {detail}" if detail else ""),
    )


class ConfigWatcher:
    """Reloads the config when one of its files changes or when asked (SIGHUP)."""

    def __init__(self, router: RouterState, config_path: Path, poll_s: float = 1.0) -> None:
        self._router = router
        self._path = config_path
        self._poll_s = poll_s
        self._wanted = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stamps = self._current_stamps()

    def request_reload(self) -> None:
        self._wanted.set()

    def _current_stamps(self) -> dict[Path, FileStamp]:
        return {path: stamp(path) for path in self._router.loaded.files}

    async def reload(self) -> bool:
        """Load and apply the config now; False (old config kept) if it is invalid."""
        async with self._lock:
            try:
                loaded = await asyncio.to_thread(load_router_config, self._path)
            except ConfigError as exc:
                self._stamps = self._current_stamps()
                self._router.events.record(
                    "config_rejected", "error", f"config reload rejected, old config kept: {exc}"
                )
                return False
            await apply_config(self._router, loaded)
            self._stamps = self._current_stamps()
            return True

    async def run(self) -> None:
        changed = asyncio.Event()
        watch: DirectoryWatch | None = None
        try:
            while True:
                directories = {path.parent for path in self._router.loaded.files}
                if watch is None or watch.directories != directories:
                    if watch is not None:
                        watch.close()
                    watch = DirectoryWatch(directories, changed.set)
                    watch.start()  # without inotify the poll below still sees every change
                wake = [asyncio.ensure_future(e.wait()) for e in (self._wanted, changed)]
                await asyncio.wait(wake, timeout=self._poll_s, return_when=asyncio.FIRST_COMPLETED)
                for waiter in wake:
                    waiter.cancel()
                if changed.is_set():
                    changed.clear()
                    await asyncio.sleep(_SETTLE_S)  # let a writer finish before reading
                if not self._wanted.is_set() and self._current_stamps() == self._stamps:
                    continue
                self._wanted.clear()
                await self.reload()
        finally:
            if watch is not None:
                watch.close()
