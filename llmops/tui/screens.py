"""Screens over the main view: one backend in detail, the drain confirmation, the key help."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Static

from llmops.tui import text
from llmops.tui.history import FleetHistory
from llmops.tui.snapshot import StatusSnapshot
from llmops.tui.widgets import Trend, event_lines, state_text

HELP = """\
[b]llmops dashboard[/b]: the router's /status, one poll at a time.

  [b]/[/b]      filter: words match model, URL, state, error
         (enter keeps the filter, esc clears it)
  [b]s[/b]      cycle the sort: model, state, in flight, req/s,
         latency p95, TTFT p95, errors
  [b]enter[/b]  one backend in detail: its history, last errors
  [b]d[/b] [b]u[/b]    drain / undrain the selected backend (asks first)
  [b]p[/b]      pause polling; [b]r[/b] poll now
  [b]↑ ↓[/b]    select a backend; [b]← →[/b] scroll the table sideways
  [b]?[/b]      this help; [b]q[/b] quit

Unknown values show as -. While polls fail, the banner says
since when the data is stale, and polls back off up to 10 s."""


def show_notice(banner: Static, notice: tuple[str, str] | None) -> None:
    """Fill a ``.banner`` line with (kind, text), or hide it."""
    banner.remove_class("paused", "stale")
    if notice is not None:
        kind, message = notice
        banner.update(Text(message))
        banner.add_class(kind)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box", classes="modal-box"):
            yield Static(HELP)
            yield Static("[dim]esc closes[/dim]")


class ConfirmScreen(ModalScreen[bool]):
    """Asks one yes/no question; dismisses with True only on an explicit ``y``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self._question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box"):
            yield Static(self._question, id="question")
            yield Static("[b]y[/b] yes    [b]n[/b] / [b]esc[/b] no")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class BackendScreen(Screen[None]):
    """Everything known about one backend; refreshed by the app after each poll."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,backspace", "app.pop_screen", "back", key_display="esc"),
        Binding("d", "app.drain", "drain"),
        Binding("u", "app.undrain", "undrain"),
        Binding("p", "app.pause", "pause"),
        Binding("q", "app.quit", "quit"),
    ]

    def __init__(
        self,
        backend_id: str,
        history: FleetHistory,
        notice: Callable[[], tuple[str, str] | None],
    ) -> None:
        super().__init__()
        self.backend_id = backend_id
        self._history = history
        self._notice = notice

    def on_mount(self) -> None:
        self.show(self._history, self._notice())

    def compose(self) -> ComposeResult:
        yield Static(id="detail-banner", classes="banner")
        yield Static(id="detail-summary")
        yield Trend("req/s", id="detail-rps")
        yield Trend("TTFT p50", id="detail-ttft")
        yield Static(id="detail-errors")
        yield Footer()

    def show(self, history: FleetHistory, notice: tuple[str, str] | None) -> None:
        show_notice(self.query_one("#detail-banner", Static), notice)
        summary = self.query_one("#detail-summary", Static)
        latest = history.latest
        backend = latest.backend(self.backend_id) if latest else None
        if latest is None or backend is None:
            summary.update(Text(f"{self.backend_id}: no longer in /status (removed by a reload?)"))
            return
        engine = backend.engine
        summary.update(
            Text.assemble(
                (backend.id, "bold"),
                "  ",
                state_text(backend.state),
                f"  {backend.model or '-'}  {backend.url or '-'}  weight {backend.weight or '-'}\n",
                f"in flight {text.count(backend.in_flight)}",
                f"  requests {text.count(backend.requests)}",
                f"  errors {text.count(backend.errors)}",
                f"  RPM {text.used_of(backend.rpm_used, backend.rpm_limit)}\n",
                f"latency p50 {text.ms(backend.latency_ms.p50)}",
                f" p95 {text.ms(backend.latency_ms.p95)}",
                f"  TTFT p50 {text.ms(backend.ttft_ms.p50)} p95 {text.ms(backend.ttft_ms.p95)}\n",
                f"engine running {text.count(engine.running)} waiting {text.count(engine.waiting)}",
                f"  KV {text.percent(engine.kv_cache_usage)}",
                f"  scraped {text.duration(engine.age_s)} ago" if engine.age_s is not None else "",
            )
        )
        backend_history = history.backends.get(self.backend_id)
        rps = list(backend_history.rps) if backend_history else []
        ttft = list(backend_history.ttft_p50_ms) if backend_history else []
        self.query_one("#detail-rps", Trend).show(rps, text.rate(history.backend_rps(backend.id)))
        self.query_one("#detail-ttft", Trend).show(ttft, text.ms(backend.ttft_ms.p50))
        self.query_one("#detail-errors", Static).update(self._errors(history, latest))

    def _errors(self, history: FleetHistory, latest: StatusSnapshot) -> Text:
        backend_history = history.backends.get(self.backend_id)
        lines = [Text("last errors", style="bold")]
        errors = list(reversed(backend_history.errors)) if backend_history else []
        lines += [Text(f"{text.clock(at)} {message}", style="red") for at, message in errors]
        if not errors:
            lines.append(Text("none seen since the dashboard started", style="dim"))
        events = [e for e in latest.events if e.backend == self.backend_id]
        lines += [Text(""), Text("events", style="bold"), event_lines(events, limit=20)]
        return Text("\n").join(lines)
