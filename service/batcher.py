"""Dynamic batching: rows of concurrent requests packed into few model calls.

In the style of BentoML's dispatcher: a small job record, one queue per operation, one
loop. Every request becomes a ``Job`` of R rows (latents to decode, images to encode) on
its op's queue. The loop picks the op whose oldest job waited longest, waits up to
``max_delay_s`` for ``max_batch_size`` rows to gather, takes rows from the head of that
queue (splitting a job across batches when it does not fit; its parts are reassembled in
order) and runs one model call on the model's own executor. Batches run one at a time:
there is one device, and rows that arrive meanwhile make the next batch fuller.

Guarantees the service relies on:

* the queue is bounded by ``max_queue_rows`` (rows not yet in a batch, all ops together);
  ``submit`` raises ``QueueFullError`` with a Retry-After from the depth and the measured
  (EWMA) batch time. A request larger than the bound is admitted only to an empty queue,
  so no valid request is refused for ever;
* rows whose deadline has passed, or whose caller has gone (its future cancelled), are
  dropped before they reach the model;
* a failing model call fails exactly the jobs with rows in that batch (``ModelCallError``
  on each future), and the loop goes on.

Every time (enqueue, deadlines, fill wait, batch duration) is read from ``clock``
(``time.monotonic`` unless a test injects its own), so tests can expire deadlines by
advancing a clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from service.errors import ClientDisconnectedError, DeadlineExceededError, ModelCallError, QueueFullError

log = logging.getLogger(__name__)

BatchFn = Callable[[np.ndarray], np.ndarray]  # (B, ...) in -> (B, ...) out, row for row
DISCONNECT_POLL_S = 0.1


class BatchObserver(Protocol):
    """Hooks for metrics; every method is called on the event loop and must not block."""

    def queue_depth(self, op: str, rows: int) -> None: ...

    def batch_done(self, op: str, rows: int, waits_s: list[float], inference_s: float) -> None: ...

    def dropped(self, op: str, reason: str, rows: int) -> None: ...


class _NullObserver:
    def queue_depth(self, op: str, rows: int) -> None:
        pass

    def batch_done(self, op: str, rows: int, waits_s: list[float], inference_s: float) -> None:
        pass

    def dropped(self, op: str, reason: str, rows: int) -> None:
        pass


@dataclass(eq=False)
class Job:
    """One request's rows for one op, and the future its caller awaits."""

    op: str
    payload: np.ndarray  # (rows, ...)
    deadline: float  # the batcher's clock (time.monotonic) after which its rows are not worth computing
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.monotonic)
    taken: int = 0  # rows already handed to a batch
    parts: list[np.ndarray] = field(default_factory=list)  # outputs, in row order
    queue_s: float = 0.0  # time spent waiting (not computing) until its last batch started
    inference_s: float = 0.0  # summed duration of the model calls its rows were in

    @property
    def rows(self) -> int:
        return int(self.payload.shape[0])

    @property
    def pending(self) -> int:
        return self.rows - self.taken


@dataclass(frozen=True)
class JobResult:
    output: np.ndarray  # (rows, ...), row i from payload row i
    queue_s: float
    inference_s: float


class Batcher:
    """Packs rows of many jobs into model calls of at most ``max_batch_size`` rows."""

    def __init__(
        self,
        ops: Mapping[str, BatchFn],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_rows: int,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        initial_batch_s: float = 0.05,
        ewma_alpha: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch_size < 1 or max_queue_rows < 1 or max_delay_s < 0:
            raise ValueError("max_batch_size and max_queue_rows must be ≥ 1 and max_delay_s ≥ 0.")
        self._fns = dict(ops)
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_rows = max_queue_rows
        self._executor = executor
        self._observer: BatchObserver = observer or _NullObserver()
        self._queues: dict[str, deque[Job]] = {op: deque() for op in ops}
        self._queued: dict[str, int] = dict.fromkeys(ops, 0)  # rows not yet in a batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batch_time_s = initial_batch_s  # EWMA of one model call, for Retry-After
        self._alpha = ewma_alpha
        self._clock = clock

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="facegen-batcher")

    async def stop(self) -> None:
        """Stop the loop and cancel every waiting job (shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for op, queue in self._queues.items():
            while queue:
                job = queue.popleft()
                if not job.future.done():
                    job.future.cancel()
            self._set_queued(op, 0)

    # ------------------------------------------------------------------ callers

    @property
    def queued_rows(self) -> int:
        return sum(self._queued.values())

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained: batches ahead (+ the running one) × EWMA."""
        batches = math.ceil(self.queued_rows / self.max_batch_size) + 1
        return max(1, math.ceil(batches * self.batch_time_s))

    def submit(self, op: str, payload: np.ndarray, deadline: float) -> Job:
        """Queue ``payload``'s rows; raises QueueFullError when the bound would be passed."""
        if op not in self._queues:
            raise KeyError(f"Unknown batch operation {op!r}; known: {sorted(self._queues)}.")
        rows = int(payload.shape[0])
        if rows < 1:
            raise ValueError("A job needs at least one row.")
        depth = self.queued_rows
        if depth > 0 and depth + rows > self.max_queue_rows:
            raise QueueFullError(
                f"The server is busy: {depth} rows are queued for the model (limit "
                f"{self.max_queue_rows}, FACEGEN_MAX_QUEUE_ROWS). Retry after the number of "
                f"seconds in the Retry-After header.",
                retry_after_s=self.retry_after_s(),
            )
        job = Job(op, payload, deadline, asyncio.get_running_loop().create_future(), enqueued=self._clock())
        before = self._queued[op]
        self._queues[op].append(job)
        self._set_queued(op, before + rows)
        # Wake the loop only when it has something new to decide: the op's first rows (an idle
        # loop starts a fill wait) or a full batch (a fill wait ends early). Waking it for every
        # row cost a timer and a task switch per request while a batch filled.
        if before == 0 or before + rows >= self.max_batch_size:
            self._wake.set()
        return job

    async def run(
        self,
        op: str,
        payload: np.ndarray,
        *,
        deadline: float,
        disconnected: Callable[[], Awaitable[bool]] | None = None,
    ) -> JobResult:
        """Submit and await the output rows. Raises QueueFullError, DeadlineExceededError,
        ClientDisconnectedError (``disconnected()`` turned true) or ModelCallError; on any of
        these, or on cancellation, the job's remaining rows are dropped.
        """
        job = self.submit(op, payload, deadline)
        watcher = None
        if disconnected is not None:
            watcher = asyncio.ensure_future(_wait_disconnected(disconnected))
        try:
            waits: set[asyncio.Future[Any]] = {job.future}
            if watcher is not None:
                waits.add(watcher)
            timeout = max(0.0, deadline - self._clock())
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._discard(job, "client_gone")
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if job.future in done:
            return JobResult(job.future.result(), job.queue_s, job.inference_s)
        if watcher is not None and watcher in done:
            self._discard(job, "client_gone")
            raise ClientDisconnectedError("The client disconnected before its result was ready.")
        self._discard(job, "deadline_exceeded")
        raise DeadlineExceededError(_deadline_message())

    # ------------------------------------------------------------------ the loop

    def _set_queued(self, op: str, rows: int) -> None:
        self._queued[op] = rows
        self._observer.queue_depth(op, rows)

    def _discard(self, job: Job, reason: str) -> None:
        """Forget a job whose caller no longer wants it; its queued rows never run."""
        if not job.future.done():
            job.future.cancel()
        queue = self._queues[job.op]
        if job in queue:
            queue.remove(job)
            self._set_queued(job.op, self._queued[job.op] - job.pending)
            self._observer.dropped(job.op, reason, job.pending)

    def _next_op(self) -> str | None:
        """The op whose head job is oldest (FIFO across ops, so neither starves)."""
        heads = [(q[0].enqueued, op) for op, q in self._queues.items() if q]
        return min(heads)[1] if heads else None

    async def _loop(self) -> None:
        while True:
            op = self._next_op()
            if op is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            fill_until = self._queues[op][0].enqueued + self.max_delay_s
            while self._queued[op] < self.max_batch_size:
                remaining = fill_until - self._clock()
                if remaining <= 0:
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):  # no extra task, unlike wait_for
                        await self._wake.wait()
            batch = self._take(op)
            if batch:
                await self._run_batch(op, batch)

    def _take(self, op: str) -> list[tuple[Job, int, int]]:
        """Up to max_batch_size rows from the head of ``op``'s queue, as (job, start, stop)."""
        now = self._clock()
        queue, room = self._queues[op], self.max_batch_size
        batch: list[tuple[Job, int, int]] = []
        while queue and room:
            job = queue[0]
            if job.future.done() or now >= job.deadline:
                queue.popleft()
                self._set_queued(op, self._queued[op] - job.pending)
                reason = "client_gone" if job.future.done() else "deadline_exceeded"
                self._observer.dropped(op, reason, job.pending)
                if not job.future.done():
                    job.future.set_exception(DeadlineExceededError(_deadline_message()))
                continue
            k = min(room, job.pending)
            batch.append((job, job.taken, job.taken + k))
            job.taken += k
            room -= k
            self._set_queued(op, self._queued[op] - k)
            if job.pending == 0:
                queue.popleft()
        return batch

    async def _run_batch(self, op: str, batch: list[tuple[Job, int, int]]) -> None:
        start = self._clock()
        waits = []
        for job, _, _ in batch:
            job.queue_s = start - job.enqueued - job.inference_s
            waits.append(job.queue_s)
        rows = sum(b - a for _, a, b in batch)
        try:
            payload = np.concatenate([job.payload[a:b] for job, a, b in batch])  # (B, ...)
            output = await asyncio.get_running_loop().run_in_executor(self._executor, self._fns[op], payload)
            if len(output) != rows:
                raise RuntimeError(f"The {op} function returned {len(output)} rows for {rows}.")
        except Exception as exc:  # the loop must survive anything a batch does
            log.exception("A %s model call of %d rows failed; failing its %d requests.", op, rows, len(batch))
            for job, _, _ in batch:
                if not job.future.done():
                    job.future.set_exception(_model_error(op, exc))
                self._discard(job, "model_error")  # a split job's later rows need not run
            return
        elapsed = self._clock() - start
        self.batch_time_s += self._alpha * (elapsed - self.batch_time_s)
        self._observer.batch_done(op, rows, waits, elapsed)
        offset = 0
        for job, a, b in batch:
            job.inference_s += elapsed
            job.parts.append(output[offset : offset + (b - a)])
            offset += b - a
            if b == job.rows and not job.future.done():
                job.future.set_result(np.concatenate(job.parts) if len(job.parts) > 1 else job.parts[0])


def _model_error(op: str, exc: Exception) -> ModelCallError:
    err = ModelCallError(
        f"The model's {op} call for this request's batch failed ({type(exc).__name__}). This is a "
        f"facegen bug, not a problem with the request; retrying may succeed."
    )
    err.__cause__ = exc
    return err


def _deadline_message() -> str:
    return (
        "The request did not finish within its deadline (FACEGEN_REQUEST_TIMEOUT_S); the server "
        "is overloaded. Retry later or with fewer images."
    )


async def _wait_disconnected(disconnected: Callable[[], Awaitable[bool]]) -> None:
    while not await disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
