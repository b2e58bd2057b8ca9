"""The coordinator: plans the run, starts the workers, merges what they report.

Workers are spawned (not forked) so each starts with a clean interpreter and its own uvloop.
The schedule is computed here once and handed out in blocks before the start signal, so the
run itself needs no per-request messages.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import orjson

from llmops.bench.arrivals import (
    closed_loop_start_offsets,
    open_loop_offsets,
    split_evenly,
    split_round_robin,
)
from llmops.bench.live import LiveState
from llmops.bench.options import BenchOptions, base_url
from llmops.bench.records import RequestRecords
from llmops.bench.report import build_result
from llmops.bench.worker import (
    Snapshot,
    WorkerHealth,
    WorkerPlan,
    worker_main,
)
from llmops.bench.workload import body_source
from llmops.errors import BenchError
from llmops.process import raise_open_file_limit

BLOCK_SIZE = 65536
#: Head start between the go message and t0, so every worker is waiting when the run starts.
START_MARGIN_S = 0.25
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
#: File descriptors a worker needs beyond one per connection (pipes, epoll, stdio, ...).
FD_HEADROOM = 64


@dataclass(slots=True)
class RunOutcome:
    result: dict[str, Any]
    records: RequestRecords


def resolve_model(options: BenchOptions) -> str:
    """``--model``, or the first model the first URL's ``GET /v1/models`` lists."""
    if options.model:
        return options.model
    url = base_url(options.urls[0]) + "/v1/models"
    request = urllib.request.Request(url, headers=_auth_headers(options))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            listing = orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise BenchError(f"GET {url} answered {exc.code}; pass --model") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BenchError(f"cannot reach {url}: {reason}") from None
    except orjson.JSONDecodeError:
        raise BenchError(f"GET {url} did not return JSON; pass --model") from None
    models = listing.get("data") if isinstance(listing, dict) else None
    if not models or not isinstance(models[0], dict) or "id" not in models[0]:
        raise BenchError(f"GET {url} lists no model; pass --model")
    return str(models[0]["id"])


def run(
    options: BenchOptions,
    on_snapshot: Callable[[LiveState], None] = lambda state: None,
) -> RunOutcome:
    """Run the load; Ctrl-C stops the workers and returns the partial result."""
    model = resolve_model(options)
    _check_open_files(options)
    plans, blocks, scheduled_rate, planned = _plan(options, model)
    context = multiprocessing.get_context("spawn")
    conns: list[Connection] = []
    processes = []
    # Children inherit an ignored SIGINT through exec, so a Ctrl-C while they are still
    # starting cannot kill them mid-import; the coordinator stops them with ("stop",).
    previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for plan in plans:
            parent_end, child_end = context.Pipe(duplex=True)
            process = context.Process(
                target=worker_main,
                args=(plan, child_end),
                name=f"llmops-bench-{plan.worker_id}",
                daemon=True,
            )
            process.start()
            child_end.close()
            conns.append(parent_end)
            processes.append(process)
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    state = LiveState(planned=planned)
    interrupted = False
    done: dict[int, tuple[RequestRecords, WorkerHealth]] = {}
    try:
        for conn, worker_blocks in zip(conns, blocks, strict=True):
            for block in worker_blocks:
                conn.send(("block", block))
        _wait_ready(conns)
        t0 = time.perf_counter() + START_MARGIN_S
        for conn in conns:
            conn.send(("go", t0))
        _collect(conns, done, state, on_snapshot, deadline=None)
    except KeyboardInterrupt:
        interrupted = True
        for worker_id, conn in enumerate(conns):
            if worker_id not in done:
                _send_quietly(conn, ("stop",))
        with contextlib.suppress(KeyboardInterrupt):
            _collect(conns, done, state, on_snapshot, deadline=time.monotonic() + STOP_GRACE_S)
    finally:
        for process in processes:
            process.join(timeout=2)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2)
        for conn in conns:
            conn.close()
    records = RequestRecords()
    healths: list[WorkerHealth] = []
    for worker_id in sorted(done):
        worker_records, health = done[worker_id]
        records.extend(worker_records)
        healths.append(health)
    if len(done) < len(plans) and not interrupted:
        raise BenchError(f"{len(plans) - len(done)} worker(s) died before reporting; see stderr")
    result = build_result(
        options, model, records, healths, scheduled_rate=scheduled_rate, interrupted=interrupted
    )
    coordinator_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["client_health"]["coordinator_max_rss_bytes"] = coordinator_rss
    return RunOutcome(result, records)


def _wait_ready(conns: list[Connection]) -> None:
    """Block until every worker has finished importing (spawn start-up takes a while)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = set(conns)
    while pending:
        remaining = deadline - time.monotonic()
        ready = wait(list(pending), timeout=max(remaining, 0))
        if not ready:
            raise BenchError(
                f"{len(pending)} worker(s) did not start within {READY_TIMEOUT_S:.0f} s"
            )
        for conn in ready:
            assert isinstance(conn, Connection)
            try:
                message = conn.recv()
            except EOFError:
                raise BenchError("a worker exited while starting; see stderr") from None
            if message[0] == "ready":
                pending.discard(conn)


def _collect(
    conns: list[Connection],
    done: dict[int, tuple[RequestRecords, WorkerHealth]],
    state: LiveState,
    on_snapshot: Callable[[LiveState], None],
    deadline: float | None,
) -> None:
    waiting = {conn: worker_id for worker_id, conn in enumerate(conns) if worker_id not in done}
    while waiting:
        timeout = 0.5 if deadline is None else max(0.0, deadline - time.monotonic())
        if deadline is not None and timeout == 0:
            return
        for ready in wait(list(waiting), timeout=timeout):
            assert isinstance(ready, Connection)
            worker_id = waiting[ready]
            try:
                message = ready.recv()
            except EOFError:
                # A worker that dies without a word: stop waiting for it.
                del waiting[ready]
                continue
            if isinstance(message, Snapshot):
                state.add(message)
                on_snapshot(state)
            elif message[0] == "done":
                done[worker_id] = (message[1], message[2])
                del waiting[ready]


def _plan(
    options: BenchOptions, model: str
) -> tuple[list[WorkerPlan], list[list[Any]], float | None, int | None]:
    """Per-worker plans, their schedule blocks, the schedule's own rate and the planned count."""
    workers = options.workers
    scheduled_rate: float | None = None
    if options.concurrency is not None and options.concurrency < workers:
        # Every worker needs at least one slot (or one unit of the in-flight cap).
        workers = options.concurrency
    if options.closed_loop:
        total = options.num_requests
        offsets = None
    else:
        assert options.rate is not None
        offsets = open_loop_offsets(
            options.rate,
            arrival=options.arrival,
            burstiness=options.burstiness,
            num_requests=options.num_requests,
            duration_s=options.duration_s,
            ramp_up_s=options.ramp_up_s,
            seed=options.seed,
        )
        total = len(offsets)
        if not total:
            raise BenchError("the schedule is empty: raise --rate or --duration")
        scheduled_rate = total / offsets[-1] if offsets[-1] > 0 else None
    bodies = body_source(options, model)
    headers = _auth_headers(options)
    urls = options.endpoint_urls()
    slot_shares = split_evenly(options.concurrency or 0, workers)
    cap_shares = slot_shares if options.concurrency and not options.closed_loop else [0] * workers
    starts = closed_loop_start_offsets(options.concurrency or 1, options.ramp_up_s)
    plans: list[WorkerPlan] = []
    blocks: list[list[Any]] = []
    for worker_id in range(workers):
        plans.append(
            WorkerPlan(
                worker_id=worker_id,
                workers=workers,
                urls=urls,
                headers=headers,
                stream=options.stream,
                bodies=bodies,
                slot_offsets=starts[worker_id::workers] if options.closed_loop else [],
                request_count=(
                    len(split_round_robin(total, workers, worker_id))
                    if options.closed_loop and total is not None
                    else None
                ),
                in_flight_cap=cap_shares[worker_id] or None,
                deadline_s=options.duration_s if options.closed_loop else None,
                timeout_s=options.timeout_s,
                open_loop=not options.closed_loop,
            )
        )
        worker_offsets = offsets[worker_id::workers] if offsets is not None else []
        blocks.append(
            [worker_offsets[i : i + BLOCK_SIZE] for i in range(0, len(worker_offsets), BLOCK_SIZE)]
        )
    return plans, blocks, scheduled_rate, total


def _check_open_files(options: BenchOptions) -> None:
    limit = raise_open_file_limit()
    per_worker = -(-(options.concurrency or 0) // options.workers) + FD_HEADROOM
    if per_worker > limit:
        raise BenchError(
            f"--concurrency {options.concurrency} over {options.workers} worker(s) needs "
            f"{per_worker} open files per worker but the limit is {limit}; "
            f"raise it (ulimit -n {per_worker}) or add --workers"
        )


def _auth_headers(options: BenchOptions) -> dict[str, str]:
    headers = dict(options.headers)
    if options.api_key:
        headers["Authorization"] = f"Bearer {options.api_key}"
    return headers


def _send_quietly(conn: Connection, message: tuple[Any, ...]) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, OSError):
        print("llmops bench: a worker is already gone", file=sys.stderr)
