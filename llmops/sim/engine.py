"""Continuous batching: one loop task advances every sequence, like a vLLM/SGLang scheduler.

Sequences wait in a FIFO queue; at each step the scheduler admits the head of the queue while
fewer than ``max_num_seqs`` run and the KV cache can hold the whole sequence (prompt + output
tokens are reserved at admission, so nothing is ever preempted). An admitted sequence gets
its first token ``ttft_ms`` later; after that it gets one token per step, all running
sequences together, one step every ``itl_ms``. The prompt tokens admitted in a step lengthen
that step by ``prefill_ms_per_token`` each: a burst of long prompts slows the whole batch.

The loop keeps an absolute schedule (next step = previous step + period) so timing does not
drift, and when nothing runs it awaits a wake-up instead of ticking. Handlers learn about new
tokens through one future per sequence (``Sequence.wait_tokens``), resolved by the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from dataclasses import dataclass

from llmops.sim.histogram import E2E_BUCKETS_S, TTFT_BUCKETS_S, Histogram, HistogramSnapshot
from llmops.sim.options import SimOptions

# Timers may fire a little before their deadline (libuv rounds to milliseconds); a deadline
# this close counts as reached, so the loop does not spin on sub-millisecond sleeps.
_EARLY_S = 0.0005

FINISH_REASONS = ("stop", "length", "abort")


class SeqState(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"
    ABORTED = "aborted"


class Sequence:
    """One request inside the engine; its handler reads ``generated`` as it grows."""

    __slots__ = (
        "_waiter",
        "arrived_at",
        "finish_reason",
        "first_token_at",
        "first_token_due",
        "generated",
        "prompt_tokens",
        "state",
        "target_tokens",
    )

    def __init__(self, prompt_tokens: int, target_tokens: int, finish_reason: str) -> None:
        self.prompt_tokens = prompt_tokens
        self.target_tokens = target_tokens
        self.finish_reason = finish_reason  # reported when it reaches target_tokens
        self.state = SeqState.WAITING
        self.generated = 0
        self.arrived_at = 0.0
        self.first_token_due = 0.0
        self.first_token_at = 0.0
        self._waiter: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        return self.state is SeqState.FINISHED or self.state is SeqState.ABORTED

    async def wait_tokens(self, seen: int) -> int:
        """Wait until more than ``seen`` tokens exist or the sequence is done; the count."""
        while self.generated <= seen and not self.done:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            await waiter
        return self.generated

    async def wait_done(self) -> None:
        while not self.done:
            await self.wait_tokens(self.generated)

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class EngineSnapshot:
    """The engine's gauges and counters at one moment, for ``/metrics`` and ``/sim/stats``."""

    running: int
    waiting: int
    kv_used_tokens: int
    kv_capacity_tokens: int
    prompt_tokens_total: int
    generation_tokens_total: int
    finished: dict[str, int]  # by finish reason: stop, length, abort
    ttft: HistogramSnapshot
    e2e: HistogramSnapshot

    @property
    def kv_usage(self) -> float:
        return self.kv_used_tokens / self.kv_capacity_tokens


class Engine:
    """The batching scheduler; ``start()`` it inside a running loop, ``await close()`` it."""

    def __init__(self, options: SimOptions) -> None:
        self._itl_s = options.itl_ms / 1000
        self._ttft_s = options.ttft_ms / 1000
        self._prefill_s_per_token = options.prefill_ms_per_token / 1000
        self._max_num_seqs = options.max_num_seqs
        self._kv_capacity = options.kv_cache_tokens
        # FIFO queues with lazy deletion: an aborted sequence stays queued until it is popped.
        self._waiting: deque[Sequence] = deque()
        self._num_waiting = 0
        self._prefilling: deque[Sequence] = deque()  # first-token due times are increasing
        self._num_prefilling = 0
        self._decoding: dict[Sequence, None] = {}
        self._kv_reserved = 0
        self._kv_used = 0
        self._prompt_tokens_total = 0
        self._generation_tokens_total = 0
        self._finished = dict.fromkeys(FINISH_REASONS, 0)
        self._ttft = Histogram(TTFT_BUCKETS_S)
        self._e2e = Histogram(E2E_BUCKETS_S)
        self._next_step_at = 0.0
        self._paused_at: float | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._wake_on_arrival = True
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> int:
        return self._num_prefilling + len(self._decoding)

    @property
    def waiting(self) -> int:
        return self._num_waiting

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="llmops-sim-engine")

    async def close(self) -> None:
        """Stop the loop and abort every sequence (their handlers see ``ABORTED``)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for seq in [*self._waiting, *self._prefilling, *self._decoding]:
            self.abort(seq)

    def submit(self, seq: Sequence) -> None:
        seq.arrived_at = asyncio.get_running_loop().time()
        seq.state = SeqState.WAITING
        self._waiting.append(seq)
        self._num_waiting += 1
        if self._wake_on_arrival:
            self._poke()

    def abort(self, seq: Sequence) -> None:
        """Take ``seq`` out of the batch at once (client gone); counted as finished by abort."""
        if seq.done:
            return
        self._release(seq)
        seq.state = SeqState.ABORTED
        self._finished["abort"] += 1
        seq._notify()
        if self._wake_on_arrival:
            self._poke()  # a freed slot may let a waiting sequence in

    def pause(self) -> None:
        """Stop producing tokens (a stalled engine); sequences keep their places."""
        if self._paused_at is None:
            self._paused_at = asyncio.get_running_loop().time()

    def resume(self) -> None:
        if self._paused_at is None:
            return
        paused_s = asyncio.get_running_loop().time() - self._paused_at
        self._paused_at = None
        # Shift the schedule by the pause so nothing bursts out to "catch up".
        self._next_step_at += paused_s
        for seq in self._prefilling:
            seq.first_token_due += paused_s
        self._poke()

    def snapshot(self) -> EngineSnapshot:
        return EngineSnapshot(
            running=self.running,
            waiting=self._num_waiting,
            kv_used_tokens=self._kv_used,
            kv_capacity_tokens=self._kv_capacity,
            prompt_tokens_total=self._prompt_tokens_total,
            generation_tokens_total=self._generation_tokens_total,
            finished=dict(self._finished),
            ttft=self._ttft.snapshot(),
            e2e=self._e2e.snapshot(),
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._paused_at is None:
                self._advance(loop.time())
            await self._sleep(loop, self._next_deadline())

    def _advance(self, now: float) -> None:
        if self._decoding:
            if now + _EARLY_S >= self._next_step_at:
                self._decode_step(now)
                prefill_s = self._admit(now)
                # Absolute schedule; if the loop fell a whole period behind, restart from now
                # rather than firing a burst of steps.
                self._next_step_at = max(self._next_step_at + self._itl_s + prefill_s, now)
        else:
            self._admit(now)  # an idle batch takes new sequences at once
        self._emit_first_tokens(now)

    def _next_deadline(self) -> float | None:
        self._wake_on_arrival = not self._decoding
        if self._paused_at is not None:
            return None
        deadlines = []
        if self._decoding:
            deadlines.append(self._next_step_at)
        head = self._first_prefilling()
        if head is not None:
            deadlines.append(head.first_token_due)
        return min(deadlines) if deadlines else None

    async def _sleep(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> None:
        waiter = loop.create_future()
        self._wakeup = waiter
        timer = loop.call_at(deadline, _resolve, waiter) if deadline is not None else None
        try:
            await waiter
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    def _poke(self) -> None:
        if self._wakeup is not None:
            _resolve(self._wakeup)

    def _admit(self, now: float) -> float:
        """Move waiting sequences into the batch; the extra step time their prefill costs."""
        admitted_prompt_tokens = 0
        while self._num_waiting and self.running < self._max_num_seqs:
            seq = self._waiting[0]
            if seq.state is not SeqState.WAITING:
                self._waiting.popleft()  # aborted while waiting
                continue
            need = seq.prompt_tokens + seq.target_tokens
            if self._kv_reserved + need > self._kv_capacity:
                break  # FIFO: the head waits for room, nobody overtakes it
            self._waiting.popleft()
            self._num_waiting -= 1
            self._kv_reserved += need
            self._kv_used += seq.prompt_tokens
            self._prompt_tokens_total += seq.prompt_tokens
            admitted_prompt_tokens += seq.prompt_tokens
            seq.state = SeqState.PREFILL
            seq.first_token_due = now + self._ttft_s
            self._prefilling.append(seq)
            self._num_prefilling += 1
        return admitted_prompt_tokens * self._prefill_s_per_token

    def _first_prefilling(self) -> Sequence | None:
        while self._prefilling and self._prefilling[0].state is not SeqState.PREFILL:
            self._prefilling.popleft()  # aborted during prefill
        return self._prefilling[0] if self._prefilling else None

    def _emit_first_tokens(self, now: float) -> None:
        while (seq := self._first_prefilling()) is not None:
            if seq.first_token_due > now + _EARLY_S:
                break
            self._prefilling.popleft()
            self._num_prefilling -= 1
            if not self._decoding:
                # The batch was idle: its step grid starts one period after this token.
                self._next_step_at = seq.first_token_due + self._itl_s
            seq.generated = 1
            seq.first_token_at = now
            self._kv_used += 1
            self._generation_tokens_total += 1
            self._ttft.observe(now - seq.arrived_at)
            if seq.generated >= seq.target_tokens:
                self._finish(seq, now)
            else:
                seq.state = SeqState.DECODE
                self._decoding[seq] = None
                seq._notify()

    def _decode_step(self, now: float) -> None:
        finished: list[Sequence] = []
        for seq in self._decoding:
            seq.generated += 1
            if seq.generated >= seq.target_tokens:
                finished.append(seq)
            else:
                seq._notify()
        batch = len(self._decoding)
        self._generation_tokens_total += batch
        self._kv_used += batch
        for seq in finished:
            del self._decoding[seq]
            self._free_kv(seq)
            self._finish(seq, now)

    def _finish(self, seq: Sequence, now: float) -> None:
        if seq.state is SeqState.PREFILL:
            self._free_kv(seq)  # a one-token sequence finishes with its first token
        seq.state = SeqState.FINISHED
        self._finished[seq.finish_reason] += 1
        self._e2e.observe(now - seq.arrived_at)
        seq._notify()

    def _release(self, seq: Sequence) -> None:
        """Take a not-yet-finished sequence out of whichever queue holds it."""
        if seq.state is SeqState.WAITING:
            self._num_waiting -= 1  # stays in the deque until popped (lazy deletion)
            return
        if seq.state is SeqState.PREFILL:
            self._num_prefilling -= 1
        else:
            del self._decoding[seq]
        self._free_kv(seq)

    def _free_kv(self, seq: Sequence) -> None:
        self._kv_reserved -= seq.prompt_tokens + seq.target_tokens
        self._kv_used -= seq.prompt_tokens + seq.generated


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
