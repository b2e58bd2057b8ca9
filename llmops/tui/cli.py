"""`llmops dashboard`: the terminal dashboard over the router's ``/status``."""

from __future__ import annotations

import typer


def dashboard(
    url: str = typer.Option(
        "http://127.0.0.1:8000", "--url", help="The router to watch (its /status is polled)."
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="LLMOPS_ADMIN_TOKEN",
        help="Admin token, when the router has admin_tokens (also for drain/undrain).",
    ),
    interval: float = typer.Option(
        1.0, "--interval", min=0.1, help="Seconds between polls while the router answers."
    ),
) -> None:
    """Watch the router's backends live in the terminal (keys: / s enter d u p ? q).

    Example: llmops dashboard --url http://127.0.0.1:8000 --token "$ADMIN_TOKEN"
    """
    from llmops.tui.app import DashboardApp
    from llmops.tui.client import normalize_url

    DashboardApp(normalize_url(url), token=token, interval_s=interval).run()
