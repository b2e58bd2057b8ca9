"""A worker process: one uvloop, one ClientSession, its share of the schedule.

Protocol over its pipe (coordinator → worker): ``("block", offsets)`` … ``("go", t0)``, later
maybe ``("stop",)``. Worker → coordinator: ``("ready",)`` once its imports are done, a
``Snapshot`` every ``SNAPSHOT_INTERVAL_S``, and finally ``("done", RequestRecords, WorkerHealth)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from time import perf_counter

from llmops.bench.histogram import LogHistogram
from llmops.bench.records import RequestRecords
from llmops.bench.request import Outcome, send_request
from llmops.bench.workload import BodySource
from llmops.process import raise_open_file_limit, settle_collector

SNAPSHOT_INTERVAL_S = 0.5
LOOP_PROBE_INTERVAL_S = 0.05
#: Sends overdue by this much are dispatched in a burst, yielding to the loop now and then.
_YIELD_EVERY = 64
_LONG_WAIT_S = 0.25
GC_GEN0_THRESHOLD = 50_000


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """Everything a worker needs, sent once when it starts (offsets follow in blocks)."""

    worker_id: int
    workers: int
    urls: tuple[str, ...]
    headers: dict[str, str]
    stream: bool
    bodies: BodySource
    #: Closed loop: slots this worker keeps busy, with their first-send offsets.
    slot_offsets: list[float]
    #: Closed loop: requests this worker sends (None: until the deadline).
    request_count: int | None
    #: Open loop: cap on this worker's requests in flight (None: no cap).
    in_flight_cap: int | None
    deadline_s: float | None
    timeout_s: float
    open_loop: bool


@dataclass(slots=True)
class Snapshot:
    """A worker's counters (cumulative) and sketches (since the previous snapshot)."""

    worker_id: int
    at_s: float
    sent: int
    completed: int
    failed: int
    in_flight: int
    interval_peak_in_flight: int
    output_tokens: int
    errors: dict[str, int]
    ttft_ms: LogHistogram
    itl_ms: LogHistogram
    schedule_lag_ms_max: float
    loop_lag_ms_max: float
    cpu_percent: float


@dataclass(slots=True)
class WorkerHealth:
    """A worker's client-side health over the whole run."""

    worker_id: int
    schedule_lag_ms: LogHistogram = field(default_factory=LogHistogram)
    schedule_lag_ms_max: float = 0.0
    loop_lag_ms: LogHistogram = field(default_factory=LogHistogram)
    loop_lag_ms_max: float = 0.0
    cpu_percent: float = 0.0
    cpu_percent_max: float = 0.0
    peak_in_flight: int = 0
    max_rss_bytes: int = 0


def worker_main(plan: WorkerPlan, conn: Connection) -> None:
    """Process entry point: receive the schedule, wait for go, run, report."""
    # Ctrl-C reaches the whole process group; the coordinator decides, via ("stop",).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_open_file_limit()
    import uvloop

    plan.bodies.prepare()
    # What exists now (modules, the corpus) lives for the whole run: keep it out of the
    # collector's passes, and collect young objects less often, so a full collection does not
    # stall a loop holding thousands of streams (vLLM's bench freezes its heap too).
    settle_collector(GC_GEN0_THRESHOLD)
    # Imports are done: from here on, starting is cheap, so t0 can be near.
    conn.send(("ready",))
    offsets: array[float] = array("d")
    while True:
        message = conn.recv()
        if message[0] == "block":
            offsets.extend(message[1])
        elif message[0] == "go":
            t0 = float(message[1])
            break
        else:  # stopped before the start
            conn.send(("done", RequestRecords(), WorkerHealth(plan.worker_id)))
            return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        records, health = runner.run(_Worker(plan, conn, t0, offsets).run())
    conn.send(("done", records, health))


class _Worker:
    def __init__(
        self, plan: WorkerPlan, conn: Connection, t0: float, offsets: array[float]
    ) -> None:
        self.plan = plan
        self.conn = conn
        self.t0 = t0
        self.offsets = offsets
        self.records = RequestRecords()
        self.health = WorkerHealth(plan.worker_id)
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.sent = self.completed = self.failed = self.output_tokens = 0
        self.in_flight = self.interval_peak = 0
        self.errors: dict[str, int] = {}
        self.ttft_ms = LogHistogram()
        self.itl_ms = LogHistogram()
        self.interval_schedule_lag_ms = 0.0
        self.interval_loop_lag_ms = 0.0
        self.next_local = 0
        self.cap = asyncio.Semaphore(plan.in_flight_cap) if plan.in_flight_cap else None
        self.headers = {"Content-Type": "application/json", **plan.headers}

    async def run(self) -> tuple[RequestRecords, WorkerHealth]:
        import aiohttp

        cpu_start, wall_start = time.process_time(), perf_counter()
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=self.plan.timeout_s)
        # A large read buffer: long contexts and fast streams must not stall on 64 KiB.
        async with aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            read_bufsize=1 << 20,
            auto_decompress=False,
            # Identity bodies only: the SSE byte scan reads the stream as it comes.
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        ) as session:
            self.session = session
            background = [
                asyncio.create_task(self._report_loop()),
                asyncio.create_task(self._probe_loop_lag()),
            ]
            try:
                if self.plan.open_loop:
                    await self._dispatch_open_loop()
                else:
                    await self._run_closed_loop()
                if self.tasks:
                    await asyncio.wait(set(self.tasks))
            finally:
                for task in (*background, *self.tasks):
                    task.cancel()
                await asyncio.gather(*background, *self.tasks, return_exceptions=True)
        elapsed = perf_counter() - wall_start
        self.health.cpu_percent = 100 * (time.process_time() - cpu_start) / max(elapsed, 1e-9)
        self.health.max_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self.records, self.health

    def _check_messages(self) -> None:
        """Handle a pending ("stop",); polled, since a loop reader would make the pipe
        non-blocking and break the large final send."""
        while self.conn.poll():
            try:
                message = self.conn.recv()
            except EOFError:
                message = ("stop",)
            if message[0] == "stop":
                self.stopping.set()
                for task in self.tasks:
                    task.cancel()
                return

    async def _dispatch_open_loop(self) -> None:
        plan, t0 = self.plan, self.t0
        for local, offset in enumerate(self.offsets):
            if self.stopping.is_set():
                return
            due = t0 + offset
            delay = due - perf_counter()
            if delay > _LONG_WAIT_S:
                # A sparse schedule: wait so that a stop request ends the wait at once.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
            elif delay > 0:
                await asyncio.sleep(delay)
            elif local % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if self.stopping.is_set():
                return
            self._note_schedule_lag(perf_counter() - due)
            index = plan.worker_id + local * plan.workers
            task = asyncio.create_task(self._one(index, offset))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _run_closed_loop(self) -> None:
        slots = [asyncio.create_task(self._slot(offset)) for offset in self.plan.slot_offsets]
        self.tasks.update(slots)
        await asyncio.gather(*slots, return_exceptions=True)
        self.tasks.difference_update(slots)

    async def _slot(self, start_offset_s: float) -> None:
        plan = self.plan
        delay = self.t0 + start_offset_s - perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        deadline = self.t0 + plan.deadline_s if plan.deadline_s is not None else None
        while not self.stopping.is_set():
            if plan.request_count is not None and self.next_local >= plan.request_count:
                return
            if deadline is not None and perf_counter() >= deadline:
                return
            local = self.next_local
            self.next_local += 1
            index = plan.worker_id + local * plan.workers
            await self._one(index, perf_counter() - self.t0)

    async def _one(self, index: int, intended_s: float) -> None:
        if self.cap is not None:
            await self.cap.acquire()
        try:
            await self._measure(index, intended_s)
        finally:
            if self.cap is not None:
                self.cap.release()

    async def _measure(self, index: int, intended_s: float) -> None:
        plan = self.plan
        body, input_len = plan.bodies.body(index)
        url = plan.urls[index % len(plan.urls)]
        self.sent += 1
        self.in_flight += 1
        self.interval_peak = max(self.interval_peak, self.in_flight)
        self.health.peak_in_flight = max(self.health.peak_in_flight, self.in_flight)
        try:
            outcome = await send_request(self.session, url, body, self.headers, plan.stream)
        except asyncio.CancelledError:
            self.in_flight -= 1
            raise
        self.in_flight -= 1
        self._account(index, input_len, intended_s, outcome)

    def _account(self, index: int, input_len: int, intended_s: float, outcome: Outcome) -> None:
        t0 = self.t0
        sent_s = outcome.sent - t0
        input_tokens = input_len if outcome.input_tokens is None else outcome.input_tokens
        self.records.add(
            index=index,
            intended_s=intended_s,
            sent_s=sent_s,
            end_s=outcome.end - t0,
            ttft_s=outcome.ttft_s,
            output_tokens=outcome.output_tokens,
            input_tokens=input_tokens,
            from_usage=outcome.from_usage,
            itls_s=outcome.itls_s,
            error=outcome.error,
        )
        if outcome.error:
            self.failed += 1
            self.errors[outcome.error] = self.errors.get(outcome.error, 0) + 1
            self.records.error_samples.setdefault(outcome.error, outcome.detail)
            return
        self.completed += 1
        self.output_tokens += outcome.output_tokens
        self.ttft_ms.record(outcome.ttft_s * 1000)
        record_itl = self.itl_ms.record
        for gap in outcome.itls_s:
            record_itl(gap * 1000)

    def _note_schedule_lag(self, lag_s: float) -> None:
        lag_ms = max(lag_s, 0.0) * 1000
        self.health.schedule_lag_ms.record(lag_ms)
        self.health.schedule_lag_ms_max = max(self.health.schedule_lag_ms_max, lag_ms)
        self.interval_schedule_lag_ms = max(self.interval_schedule_lag_ms, lag_ms)

    async def _probe_loop_lag(self) -> None:
        """How late the loop wakes a sleeper: the delay every callback in this worker sees."""
        health = self.health
        while True:
            before = perf_counter()
            await asyncio.sleep(LOOP_PROBE_INTERVAL_S)
            lag_ms = max(perf_counter() - before - LOOP_PROBE_INTERVAL_S, 0.0) * 1000
            health.loop_lag_ms.record(lag_ms)
            health.loop_lag_ms_max = max(health.loop_lag_ms_max, lag_ms)
            self.interval_loop_lag_ms = max(self.interval_loop_lag_ms, lag_ms)

    async def _report_loop(self) -> None:
        cpu_before, wall_before = time.process_time(), perf_counter()
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)
            cpu_now, wall_now = time.process_time(), perf_counter()
            cpu_percent = 100 * (cpu_now - cpu_before) / max(wall_now - wall_before, 1e-9)
            cpu_before, wall_before = cpu_now, wall_now
            self.health.cpu_percent_max = max(self.health.cpu_percent_max, cpu_percent)
            self.conn.send(self._snapshot(wall_now - self.t0, cpu_percent))
            self._check_messages()

    def _snapshot(self, at_s: float, cpu_percent: float) -> Snapshot:
        snapshot = Snapshot(
            worker_id=self.plan.worker_id,
            at_s=at_s,
            sent=self.sent,
            completed=self.completed,
            failed=self.failed,
            in_flight=self.in_flight,
            interval_peak_in_flight=self.interval_peak,
            output_tokens=self.output_tokens,
            errors=dict(self.errors),
            ttft_ms=self.ttft_ms,
            itl_ms=self.itl_ms,
            schedule_lag_ms_max=self.interval_schedule_lag_ms,
            loop_lag_ms_max=self.interval_loop_lag_ms,
            cpu_percent=cpu_percent,
        )
        self.ttft_ms, self.itl_ms = LogHistogram(), LogHistogram()
        self.interval_peak = self.in_flight
        self.interval_schedule_lag_ms = self.interval_loop_lag_ms = 0.0
        return snapshot
