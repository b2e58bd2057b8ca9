"""The panels of the main screen; each renders from a FleetHistory, none polls."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Input, Static

from llmops.tui import text
from llmops.tui.history import FleetHistory
from llmops.tui.rows import COLUMNS, STATE_COLOURS, backend_cells
from llmops.tui.snapshot import BackendStatus, RouterEvent

LEVEL_STYLES = {"error": "bold red", "warning": "yellow", "warn": "yellow", "info": ""}
LEVEL_WORDS = {"error": "err", "warning": "warn", "critical": "crit", "debug": "dbg"}


def state_text(state: str | None) -> Text:
    """The state word, coloured (NO_COLOR leaves the word, which is the point)."""
    return Text(state or text.UNKNOWN, style=f"bold {STATE_COLOURS.get(state or '', '')}".strip())


class Totals(Static):
    """Two lines of router totals above everything else."""

    def show(self, history: FleetHistory, url: str) -> None:
        snap = history.latest
        if snap is None:
            self.update(Text(f"llmops dashboard · {text.short_url(url)} · waiting for /status…"))
            return
        router, totals = snap.router, snap.totals
        first = Text.assemble(
            ("llmops ", "bold"),
            text.short_url(url),
            f" · up {text.duration(router.uptime_s)}",
            f" · gen {router.config_generation if router.config_generation is not None else '-'}",
            f" · {router.strategy or '-'}",
            f" · router {router.version or '-'}",
        )
        errors = Text(f"errors {text.count(totals.errors)}")
        if totals.errors:
            errors.stylize("red")
        second = Text.assemble(
            ("req/s ", "dim"),
            (text.rate(totals.rps), "bold"),
            ("  in flight ", "dim"),
            (text.count(totals.in_flight), "bold"),
            ("  requests ", "dim"),
            text.count(totals.requests),
            "  ",
            errors,
            ("  TTFT p50 ", "dim"),
            (text.ms(totals.ttft_ms.p50), "bold"),
            (" p95 ", "dim"),
            (text.ms(totals.ttft_ms.p95), "bold"),
        )
        self.update(Text("\n").join([first, second]))


class Trend(Static):
    """``title latest`` then a sparkline of the recent samples, one column per poll."""

    def __init__(self, title: str, *, id: str) -> None:
        super().__init__(id=id, classes="trend")
        self._title = title
        self._samples: list[float | None] = []
        self._latest = text.UNKNOWN

    def show(self, samples: Iterable[float | None], latest: str) -> None:
        self._samples = list(samples)
        self._latest = latest
        self.refresh()

    def render(self) -> Text:
        label = f"{self._title} {self._latest}"
        width = max(self.size.width - len(label) - 1, 0)
        return Text.assemble((label, "bold"), " ", (text.spark(self._samples, width), "dark_cyan"))


class BackendsTable(DataTable[Text | str]):
    """One row per backend, keyed by backend id; the cursor stays on its backend across polls."""

    # DataTable's own enter binding is hidden; this one shows in the footer.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "detail", key_display="⏎"),
    ]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for column in COLUMNS:
            self.add_column(column, key=column)

    def show(self, backends: Sequence[BackendStatus], history: FleetHistory) -> None:
        selected = self.selected_id()
        self.clear()
        for backend in backends:
            cells: list[Text | str] = list(backend_cells(backend, history.backend_rps(backend.id)))
            cells[COLUMNS.index("state")] = state_text(backend.state)
            if backend.last_error:
                cells[-1] = Text(str(cells[-1]), style="red")
            self.add_row(*cells, key=backend.id)
        ids = [b.id for b in backends]
        if selected in ids:
            self.move_cursor(row=ids.index(selected), animate=False)

    def selected_id(self) -> str | None:
        if self.row_count == 0:
            return None
        row_key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return row_key.value


class ModelsTable(DataTable[str]):
    def on_mount(self) -> None:
        self.cursor_type = "none"
        for column in ("model", "healthy", "infl", "req/s"):
            self.add_column(column, key=column)

    def show(self, history: FleetHistory) -> None:
        self.clear()
        if history.latest is None:
            return
        for model in history.latest.models:
            self.add_row(
                model.name,
                f"{text.count(model.healthy)}/{text.count(model.backends)}",
                text.count(model.in_flight),
                text.rate(model.rps),
                key=model.name,
            )


def event_lines(events: Sequence[RouterEvent], limit: int) -> Text:
    """Newest first, one line each: ``HH:MM:SS level backend message``."""
    lines = []
    for event in list(reversed(events))[:limit]:
        line = Text.assemble(
            (text.clock(event.at), "dim"),
            " ",
            (
                f"{LEVEL_WORDS.get(event.level, event.level):<4.4}",
                LEVEL_STYLES.get(event.level, ""),
            ),
            " ",
            # Router messages often name the backend already; once is enough in a narrow pane.
            (
                f"{event.backend} " if event.backend and event.backend not in event.message else "",
                "bold",
            ),
            event.message,
        )
        lines.append(line)
    if not lines:
        return Text("no events", style="dim")
    joined = Text("\n").join(lines)
    joined.no_wrap = True  # one event per line; the pane is narrow at 80 columns
    joined.overflow = "ellipsis"
    return joined


class EventsPane(Static):
    def show(self, history: FleetHistory) -> None:
        events = history.latest.events if history.latest else ()
        self.update(event_lines(events, limit=50))


class FilterInput(Input):
    """The ``/`` filter line; its footer says how to leave it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "submit", "keep filter", key_display="⏎"),
        Binding("escape", "app.clear_filter", "clear filter", key_display="esc"),
    ]
