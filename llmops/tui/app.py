"""The Textual dashboard: polls ``/status`` one request at a time and renders the fleet.

Polling follows dolphie: a one-shot timer is re-armed only after each answer, so polls never
overlap however slow the router is; failures stretch the delay (see staleness.py).
"""

from __future__ import annotations

import time
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Static

from llmops.errors import DashboardError
from llmops.tui import text
from llmops.tui.client import RouterClient
from llmops.tui.history import FleetHistory
from llmops.tui.rows import SORT_KEYS, next_sort, visible_backends
from llmops.tui.screens import BackendScreen, ConfirmScreen, HelpScreen, show_notice
from llmops.tui.staleness import PollHealth
from llmops.tui.widgets import (
    BackendsTable,
    EventsPane,
    FilterInput,
    ModelsTable,
    Totals,
    Trend,
)


class DashboardApp(App[None]):
    TITLE = "llmops dashboard"
    ENABLE_COMMAND_PALETTE = False
    CSS = """
    Totals { height: 2; padding: 0 1; }
    .banner { height: 1; padding: 0 1; display: none; }
    .banner.stale { display: block; background: $error; color: $text; text-style: bold; }
    .banner.paused { display: block; background: $warning; color: $text; text-style: bold; }
    #trends { height: 1; }
    .trend { height: 1; width: 1fr; padding: 0 1; }
    #backends { height: 1fr; min-height: 5; border: round $primary; border-title-align: left; }
    #bottom { height: 9; }
    #models { width: 40; border: round $primary-darken-2; }
    #events { width: 1fr; border: round $primary-darken-2; overflow-y: auto; padding: 0 1; }
    EventsPane { text-wrap: nowrap; text-overflow: ellipsis; }
    #filter { display: none; height: 1; border: none; padding: 0 1; }
    #filter.active { display: block; }
    .modal-box {
        width: 72; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    ModalScreen { align: center middle; }
    #detail-summary { height: auto; padding: 0 1; }
    #detail-rps, #detail-ttft { height: 1; }
    #detail-errors { height: 1fr; padding: 1 1 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("s", "sort", "sort"),
        Binding("d", "drain", "drain"),
        Binding("u", "undrain", "undrain"),
        Binding("p", "pause", "pause"),
        Binding("r", "refresh", "poll now", show=False),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, url: str, token: str | None = None, interval_s: float = 1.0) -> None:
        super().__init__()
        self.client = RouterClient(url, token)
        self.history = FleetHistory()
        self.health = PollHealth(interval_s=interval_s)
        self.sort = SORT_KEYS[0]
        self.query_text = ""
        self.paused_at: float | None = None
        self.polls_done = 0  # finished polls, good or bad: tests wait on it
        self._timer: Timer | None = None
        self._polling = False
        self._poll_again = False
        self._closing = False

    def compose(self) -> ComposeResult:
        yield Totals(id="totals")
        yield Static(id="banner", classes="banner")
        with Horizontal(id="trends"):
            yield Trend("req/s", id="trend-rps")
            yield Trend("TTFT p50", id="trend-ttft")
        yield BackendsTable(id="backends")
        with Horizontal(id="bottom"):
            yield ModelsTable(id="models")
            with Vertical(id="events"):
                yield EventsPane(id="events-text")
        yield FilterInput(placeholder="filter: words to match in any column", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.client.open()
        self.query_one("#models").border_title = "models"
        self.query_one("#events").border_title = "events"
        self.query_one(BackendsTable).focus()
        self.render_all()
        self.poll_now()

    async def on_unmount(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.stop()
        self.workers.cancel_group(self, "poll")
        await self.client.close()

    # --- polling ---------------------------------------------------------------------------

    def poll_now(self) -> None:
        """Poll at once, or right after the poll in flight answers."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._closing:
            return
        if self._polling:
            self._poll_again = True
        else:
            # Set before the worker starts, so a second call in the same tick cannot start two.
            self._polling = True
            self.run_worker(self._poll(), group="poll")

    async def _poll(self) -> None:
        try:
            snapshot = await self.client.fetch_status()
        except DashboardError as exc:
            if not self.paused:
                self.health.failed(time.time(), str(exc))
                self.history.record_gap()
        else:
            if not self.paused:
                self.health.succeeded(snapshot.received_at)
                self.history.record(snapshot)
        finally:
            self._polling = False
            self.polls_done += 1
        if self.paused or self._closing:
            return
        self.render_all()
        if self._poll_again:
            self._poll_again = False
            self.poll_now()
        else:
            self._timer = self.set_timer(self.health.next_delay_s(), self.poll_now)

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    # --- rendering -------------------------------------------------------------------------

    def render_all(self) -> None:
        self.query_one(Totals).show(self.history, self.client.base_url)
        self._render_banner()
        totals = self.history.latest.totals if self.history.latest else None
        self.query_one("#trend-rps", Trend).show(
            self.history.total_rps, text.rate(totals.rps if totals else None)
        )
        self.query_one("#trend-ttft", Trend).show(
            self.history.total_ttft_p50_ms, text.ms(totals.ttft_ms.p50 if totals else None)
        )
        self._render_backends()
        self.query_one(ModelsTable).show(self.history)
        self.query_one(EventsPane).show(self.history)
        if isinstance(self.screen, BackendScreen) and self.screen.is_mounted:
            self.screen.show(self.history, self.notice())

    def _render_backends(self) -> None:
        table = self.query_one(BackendsTable)
        every = self.history.latest.backends if self.history.latest else ()
        shown = visible_backends(every, self.history, self.query_text, self.sort)
        table.show(shown, self.history)
        title = f"backends {len(shown)}/{len(every)} · sort: {self.sort.label}"
        if self.query_text:
            title += f" · filter: {self.query_text}"
        table.border_title = title

    def notice(self) -> tuple[str, str] | None:
        """(kind, text) of the banner every screen shows: paused, or stale since when."""
        if self.paused_at is not None:
            return "paused", f"PAUSED at {text.clock(self.paused_at)}: p resumes"
        if self.health.stale:
            retry_s = self.health.next_delay_s()
            return "stale", f"{self.health.describe()} (next try in {retry_s:.0f}s)"
        return None

    def _render_banner(self) -> None:
        show_notice(self.query_one("#banner", Static), self.notice())
        if isinstance(self.screen, BackendScreen) and self.screen.is_mounted:
            show_notice(self.screen.query_one("#detail-banner", Static), self.notice())

    # --- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # The table actions act on the main screen only; over the detail screen they hide.
        if action in ("filter", "clear_filter", "sort", "details"):
            return self.screen is self.default_screen
        return True

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.add_class("active")
        field.value = self.query_text
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self._render_backends()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._close_filter()

    def action_clear_filter(self) -> None:
        self.query_text = ""
        self._render_backends()
        self._close_filter()

    def _close_filter(self) -> None:
        self.query_one("#filter", Input).remove_class("active")
        self.query_one(BackendsTable).focus()

    def action_sort(self) -> None:
        self.sort = next_sort(self.sort)
        self._render_backends()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "backends":
            self.action_details()

    def action_details(self) -> None:
        backend_id = self.query_one(BackendsTable).selected_id()
        if backend_id is None:
            return
        self.push_screen(BackendScreen(backend_id, self.history, self.notice))

    def action_drain(self) -> None:
        self._ask_drain(drain=True)

    def action_undrain(self) -> None:
        self._ask_drain(drain=False)

    def _ask_drain(self, drain: bool) -> None:
        if isinstance(self.screen, BackendScreen):
            backend_id: str | None = self.screen.backend_id
        else:
            backend_id = self.query_one(BackendsTable).selected_id()
        if backend_id is None:
            self.notify("no backend selected", severity="warning")
            return
        backend = self.history.latest.backend(backend_id) if self.history.latest else None
        where = f" ({backend.url})" if backend and backend.url else ""
        if drain:
            question = (
                f"Drain [b]{backend_id}[/b]{where}?\n"
                "No new requests go to it; those in flight finish."
            )
        else:
            question = f"Undrain [b]{backend_id}[/b]{where}?\nIt takes new requests again."

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._set_draining(backend_id, drain), group="admin")

        self.push_screen(ConfirmScreen(question), answered)

    async def _set_draining(self, backend_id: str, drain: bool) -> None:
        verb = "drain" if drain else "undrain"
        try:
            await self.client.set_draining(backend_id, drain)
        except DashboardError as exc:
            self.notify(f"{verb} {backend_id} failed: {exc}", severity="error", timeout=8)
            return
        self.notify(f"{verb} {backend_id}: done")
        if not self.paused:
            self.poll_now()

    def action_pause(self) -> None:
        if self.paused_at is None:
            self.paused_at = time.time()
            if self._timer is not None:
                self._timer.stop()
                self._timer = None
            self._render_banner()
        else:
            self.paused_at = None
            self._render_banner()
            self.poll_now()

    def action_refresh(self) -> None:
        if not self.paused:
            self.poll_now()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())
