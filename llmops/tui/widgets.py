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

ENGINE_STALE_S = 15.0
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
        Binding("right", "scroll_columns(1)", "scroll right", show=False),
        Binding("left", "scroll_columns(-1)", "scroll left", show=False),
    ]

    def action_scroll_columns(self, direction: int) -> None:
        """Scroll sideways a whole column at a time: one cell per key press is too slow."""
        starts, x = [], 0
        for column in self.ordered_columns:
            starts.append(x)
            x += column.get_render_width(self)
        if direction > 0:
            target = next((s for s in starts if s > self.scroll_x), self.max_scroll_x)
        else:
            target = max((s for s in starts if s < self.scroll_x), default=0)
        self.scroll_to(x=min(target, self.max_scroll_x), animate=False)

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for column in COLUMNS:
            self.add_column(column, key=column)

    def show(self, backends: Sequence[BackendStatus], history: FleetHistory) -> None:
        rows = [(backend.id, self._cells(backend, history)) for backend in backends]
        ids = [backend_id for backend_id, _ in rows]
        if ids == [row.key.value for row in self.ordered_rows]:
            # Same rows in the same order (most polls): update in place, which keeps the
            # cursor and the scroll position where the operator left them.
            for backend_id, cells in rows:
                for column, cell in zip(COLUMNS, cells, strict=True):
                    if self.get_cell(backend_id, column) != cell:
                        self.update_cell(backend_id, column, cell, update_width=True)
            return
        selected, scroll_x, scroll_y = self.selected_id(), self.scroll_x, self.scroll_y
        self.clear()
        for backend_id, cells in rows:
            self.add_row(*cells, key=backend_id)
        if selected in ids:
            self.move_cursor(row=ids.index(selected), animate=False)
        self.scroll_to(scroll_x, scroll_y, animate=False, immediate=True)

    @staticmethod
    def _cells(backend: BackendStatus, history: FleetHistory) -> list[Text | str]:
        cells: list[Text | str] = list(backend_cells(backend, history.backend_rps(backend.id)))
        cells[COLUMNS.index("state")] = state_text(backend.state)
        age_s = backend.engine.age_s
        if age_s is not None and age_s > ENGINE_STALE_S:
            # Old numbers from an engine that stopped answering its metrics scrape.
            for column in ("run/wait", "KV"):
                index = COLUMNS.index(column)
                cells[index] = Text(str(cells[index]), style="dim")
        if backend.last_error:
            cells[-1] = Text(str(cells[-1]), style="red")
        return cells

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
