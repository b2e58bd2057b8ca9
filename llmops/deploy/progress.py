"""How deploy shows what happens: a live table on a terminal, one line per change elsewhere."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from llmops.deploy.plan import Instance, Plan
from llmops.deploy.ssh import remote_command

_STYLES = {
    "ready": "green",
    "unchanged": "green",
    "stopped": "yellow",
    "not running": "dim",
    "failed": "bold red",
    "removed": "yellow",
}


def plan_table(plan: Plan) -> Table:
    table = Table(title=f"deployment {plan.deployment}: {len(plan.instances)} instances", box=None)
    for column in ("instance", "node", "engine", "gpus", "port", "internal", "spec", "command"):
        table.add_column(column, overflow="fold", no_wrap=column != "command")  # only it folds
    for i in plan.instances:
        gpus = ",".join(str(g) for g in i.gpus)
        table.add_row(
            Text(i.name),
            Text(i.node),
            i.engine,
            gpus,
            str(i.port),
            str(i.internal_port),
            i.spec_hash,
            Text(remote_command(i.argv)),  # as the shell on the node sees it
        )
    return table


class Progress:
    """Receives (instance, state, detail) reports; renders them live or line by line."""

    def __init__(self, console: Console, instances: Sequence[Instance] = ()) -> None:
        self._console = console
        self._rows: dict[str, list[Any]] = {}
        for instance in instances:
            self._rows[instance.name] = [
                instance.node,
                str(instance.port),
                "planned",
                "",
                time.monotonic(),
            ]
        self._live: Live | None = None

    def add(self, instances: Sequence[Instance]) -> None:
        for instance in instances:
            self._rows.setdefault(
                instance.name, [instance.node, str(instance.port), "planned", "", time.monotonic()]
            )
        self._refresh()

    def __call__(self, name: str, state: str, detail: str) -> None:
        row = self._rows.setdefault(name, ["", "", state, detail, time.monotonic()])
        if row[2] != state:
            row[4] = time.monotonic()  # "for" counts time in the current state
        row[2], row[3] = state, detail
        if self._live is None:
            style = _STYLES.get(state, "cyan")
            line = f"{escape(name)}: [{style}]{state}[/{style}] {escape(detail)}"
            self._console.print(line.rstrip(), highlight=False)
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False)
        for column in ("instance", "node", "port", "state", "for", "detail"):
            table.add_column(column, overflow="fold")
        now = time.monotonic()
        for name, (node, port, state, detail, since) in self._rows.items():
            style = _STYLES.get(state, "cyan")
            state_text = Text(state, style=style)
            table.add_row(
                Text(name), Text(node), port, state_text, f"{now - since:.0f}s", Text(detail)
            )
        return table

    def __enter__(self) -> Progress:
        if self._console.is_terminal:
            self._live = Live(self._table(), console=self._console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(kind, exc, tb)
            self._live = None
