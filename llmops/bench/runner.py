"""The command's edge: the chosen UI around a run, the printed summary, the files written."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from llmops.bench.coordinator import RunOutcome, run
from llmops.bench.live import LiveState
from llmops.bench.options import BenchOptions
from llmops.bench.report import summary_text, write_requests, write_result
from llmops.errors import BenchError

#: ``--ui plain`` prints one line this often.
PLAIN_INTERVAL_S = 5.0
#: Exit status after Ctrl-C (128 + SIGINT), once the partial results are out.
INTERRUPTED_EXIT = 130


def run_and_report(options: BenchOptions) -> RunOutcome:
    """Run with the UI ``options.ui`` asks for, print the summary, write the requested files."""
    try:
        with _ui(options) as on_snapshot:
            outcome = run(options, on_snapshot)
    except KeyboardInterrupt:
        # Only before the workers start: after that, run() turns Ctrl-C into partial results.
        raise BenchError("interrupted before the run started") from None
    print(summary_text(outcome.result), flush=True)
    if options.output:
        write_result(options.output, outcome.result)
    if options.save_requests:
        write_requests(options.save_requests, outcome.records, options.warmup)
    if outcome.result["interrupted"]:
        sys.exit(INTERRUPTED_EXIT)
    result = outcome.result
    if result["completed"] == 0 and result["failed"] > 0:
        classes = ", ".join(f"{k} {v}" for k, v in sorted(result["errors_by_class"].items()))
        raise BenchError(f"every request failed ({classes})")
    return outcome


@contextlib.contextmanager
def _ui(options: BenchOptions) -> Iterator[Callable[[LiveState], None]]:
    if options.ui == "live":
        from rich.console import Console
        from rich.live import Live

        with Live(console=Console(), refresh_per_second=4, transient=False) as live:
            yield lambda state: live.update(state.table())
    elif options.ui == "plain":
        # The first snapshot prints at once: a log shows the run started.
        last = [time.monotonic() - PLAIN_INTERVAL_S]

        def plain(state: LiveState) -> None:
            now = time.monotonic()
            if now - last[0] >= PLAIN_INTERVAL_S:
                last[0] = now
                print(state.plain_line(), flush=True)

        yield plain
    else:
        yield lambda state: None
