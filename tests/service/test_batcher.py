"""The dynamic batcher on its own: a fake model function, no HTTP, no torch.

No test reads the wall clock or sleeps for a period: they poll the batcher's state
(``until``), and where time must pass for the batcher (deadlines) they advance an injected
``FakeClock``. ``run`` bounds every test at 20 s only so that a bug hangs no one.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import pytest

from service.batcher import Batcher, JobResult
from service.errors import ClientDisconnectedError, DeadlineExceededError, ModelCallError, QueueFullError

T = TypeVar("T")
FAR = 60.0  # seconds: a deadline no test reaches


class FakeModel:
    """Doubles its input rows; records every batch it is called with; can block or fail."""

    def __init__(self, poison: float | None = None) -> None:
        self.calls: list[np.ndarray] = []
        self.poison = poison
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(10)
        self.calls.append(rows.copy())
        if self.poison is not None and (rows == self.poison).any():
            raise RuntimeError("poisoned batch")
        return rows * 2.0

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.calls]

    def seen(self) -> set[float]:
        return {float(v) for c in self.calls for v in c.ravel()}


class RecordingObserver:
    """The batcher's metrics hooks, recorded: (op, rows) depths, (op, rows, jobs) batches,
    (op, reason, rows) drops."""

    def __init__(self) -> None:
        self.depths: list[tuple[str, int]] = []
        self.batches: list[tuple[str, int, int]] = []
        self.drops: list[tuple[str, str, int]] = []

    def queue_depth(self, op: str, rows: int) -> None:
        self.depths.append((op, rows))

    def batch_done(self, op: str, rows: int, waits_s: list[float], inference_s: float) -> None:
        self.batches.append((op, rows, len(waits_s)))

    def dropped(self, op: str, reason: str, rows: int) -> None:
        self.drops.append((op, reason, rows))


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=True, cancel_futures=True)


class FakeClock:
    """The batcher's clock, advanced by hand: a frozen clock never ends a fill wait."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run(body: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(body(), 20))


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the event loop (and the executor thread) until ``condition()`` holds."""
    while not condition():
        await asyncio.sleep(0.001)


def make(fn: Any, executor: ThreadPoolExecutor, **kw: Any) -> Batcher:
    opts: dict[str, Any] = dict(max_batch_size=64, max_delay_s=0.05, max_queue_rows=1000, executor=executor)
    opts.update(kw)
    return Batcher({"decode": fn, "encode": fn}, **opts)


def rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32)[:, None]  # (n, 1)


def deadline(s: float = FAR, clock: Callable[[], float] = time.monotonic) -> float:
    return clock() + s


def test_concurrent_jobs_are_packed_into_one_call(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()

    async def body() -> list[JobResult]:
        b = make(model, executor, max_delay_s=0.2)
        b.start()
        try:
            return await asyncio.gather(
                *(b.run("decode", rows(10 * i, 3), deadline=deadline()) for i in range(10))
            )
        finally:
            await b.stop()

    results = run(body)
    assert model.sizes == [30]  # ten 3-row jobs, one model call
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r.output, rows(10 * i, 3) * 2)
        assert r.inference_s > 0 and r.queue_s >= 0


def test_a_full_batch_does_not_wait_for_the_delay(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    clock = FakeClock()  # frozen: the 5 s fill wait never ends, only a full batch runs

    async def body() -> JobResult:
        b = make(model, executor, max_batch_size=8, max_delay_s=5.0, clock=clock)
        b.start()
        first = asyncio.ensure_future(b.run("decode", rows(0, 3), deadline=deadline(clock=clock)))
        await until(lambda: b.queued_rows == 3)
        for _ in range(20):  # the loop has every chance to run the 3 rows; it must wait
            await asyncio.sleep(0)
        assert model.calls == [] and b.queued_rows == 3
        rest = await b.run("decode", rows(3, 5), deadline=deadline(clock=clock))  # 8 rows: full
        await first
        await b.stop()
        return rest

    rest = run(body)
    assert model.sizes == [8]
    np.testing.assert_array_equal(rest.output, rows(3, 5) * 2)


def test_a_150_row_job_is_split_64_64_22_and_reassembled_in_order(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()

    async def body() -> JobResult:
        b = make(model, executor, max_batch_size=64, max_delay_s=0.0)
        b.start()
        try:
            return await b.run("decode", rows(0, 150), deadline=deadline())
        finally:
            await b.stop()

    result = run(body)
    assert model.sizes == [64, 64, 22]
    np.testing.assert_array_equal(result.output, rows(0, 150) * 2)
    np.testing.assert_array_equal(np.concatenate(model.calls), rows(0, 150))


def test_split_jobs_share_batches_with_small_ones_fifo(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    model.gate.clear()  # hold the first call so everything else queues behind it

    async def body() -> list[JobResult]:
        b = make(model, executor, max_batch_size=64, max_delay_s=0.0)
        b.start()
        first = asyncio.ensure_future(b.run("decode", rows(1000, 1), deadline=deadline()))
        await until(model.entered.is_set)
        jobs = [b.run("decode", rows(0, 100), deadline=deadline())]
        jobs += [b.run("decode", rows(200 + i, 1), deadline=deadline()) for i in range(40)]
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await until(lambda: b.queued_rows == 140)
        model.gate.set()
        out = await asyncio.gather(first, *tasks)
        await b.stop()
        return out

    results = run(body)
    # 1 (held) | 64 of the big job | its last 36 + 28 small ones | the last 12 small ones
    assert model.sizes == [1, 64, 64, 12]
    np.testing.assert_array_equal(results[1].output, rows(0, 100) * 2)
    for i, r in enumerate(results[2:]):
        np.testing.assert_array_equal(r.output, rows(200 + i, 1) * 2)


def test_a_failing_batch_fails_only_its_own_jobs(executor: ThreadPoolExecutor) -> None:
    model = FakeModel(poison=-1.0)
    model.gate.clear()

    async def body() -> list[Any]:
        b = make(model, executor, max_batch_size=4, max_delay_s=0.0)
        b.start()
        held = asyncio.ensure_future(b.run("decode", rows(100, 1), deadline=deadline()))
        await until(model.entered.is_set)
        poisoned = np.array([[-1.0], [7.0]], np.float32)
        jobs = [rows(0, 2), poisoned, rows(10, 2), rows(20, 2)]  # batches: [0,1 | -1,7], [10,11 | 20,21]
        tasks = [asyncio.ensure_future(b.run("decode", j, deadline=deadline())) for j in jobs]
        await until(lambda: b.queued_rows == 8)
        model.gate.set()
        out = await asyncio.gather(held, *tasks, return_exceptions=True)
        after = await b.run("decode", rows(50, 1), deadline=deadline())  # the loop survived
        await b.stop()
        return [*out, after]

    held, a, poisoned, c, d, after = run(body)
    assert isinstance(a, ModelCallError) and isinstance(poisoned, ModelCallError)
    assert a.status == 500 and "RuntimeError" in a.detail
    np.testing.assert_array_equal(c.output, rows(10, 2) * 2)
    np.testing.assert_array_equal(d.output, rows(20, 2) * 2)
    np.testing.assert_array_equal(held.output, rows(100, 1) * 2)
    np.testing.assert_array_equal(after.output, rows(50, 1) * 2)


@pytest.mark.parametrize("expires", ["while_its_caller_waits", "before_its_batch_forms"])
def test_expired_rows_are_answered_504_and_never_reach_the_model(
    expires: str, executor: ThreadPoolExecutor
) -> None:
    """Either way a job can expire: its caller's wait ends first (a 50 ms deadline), or the
    next batch forms after its deadline (15 s on the batcher's clock, passed by advancing it)."""
    model = FakeModel()
    model.gate.clear()
    clock = FakeClock()
    observer = RecordingObserver()

    async def body() -> list[Any]:
        b = make(model, executor, max_delay_s=0.0, clock=clock, observer=observer)
        b.start()
        held = asyncio.ensure_future(b.run("decode", rows(100, 1), deadline=deadline(clock=clock)))
        await until(model.entered.is_set)
        late_s = 0.05 if expires == "while_its_caller_waits" else 15.0
        late = asyncio.ensure_future(b.run("decode", rows(500, 3), deadline=deadline(late_s, clock)))
        ok = asyncio.ensure_future(b.run("decode", rows(600, 2), deadline=deadline(clock=clock)))
        if expires == "while_its_caller_waits":
            await until(late.done)  # answered while the model is still busy with the held row
            assert b.queued_rows == 2  # only ``ok``'s rows are left
        else:
            await until(lambda: b.queued_rows == 5)
            clock.advance(20)  # the next batch forms at +20 s, past ``late``'s deadline
        model.gate.set()
        out = await asyncio.gather(held, late, ok, return_exceptions=True)
        await b.stop()
        return list(out)

    _, late, ok = run(body)
    assert isinstance(late, DeadlineExceededError) and late.status == 504
    np.testing.assert_array_equal(ok.output, rows(600, 2) * 2)
    assert not {500.0, 501.0, 502.0} & model.seen()  # never computed
    assert model.sizes == [1, 2] and observer.drops == [("decode", "deadline_exceeded", 3)]


def test_rows_of_a_cancelled_or_disconnected_caller_are_dropped(executor: ThreadPoolExecutor) -> None:
    model = FakeModel()
    model.gate.clear()
    gone = False

    async def disconnected() -> bool:
        return gone

    async def body() -> Any:
        nonlocal gone
        b = make(model, executor, max_delay_s=0.0)
        b.start()
        held = asyncio.ensure_future(b.run("decode", rows(100, 1), deadline=deadline()))
        await until(model.entered.is_set)
        cancelled = asyncio.ensure_future(b.run("decode", rows(300, 2), deadline=deadline()))
        left = asyncio.ensure_future(
            b.run("decode", rows(400, 2), deadline=deadline(), disconnected=disconnected)
        )
        await until(lambda: b.queued_rows == 4)
        cancelled.cancel()
        gone = True
        with pytest.raises(ClientDisconnectedError):
            await left
        assert b.queued_rows == 0  # both jobs left the queue at once
        model.gate.set()
        await held
        await b.stop()
        return cancelled

    cancelled = run(body)
    assert cancelled.cancelled()
    assert model.sizes == [1] and not {300.0, 301.0, 400.0, 401.0} & model.seen()


def test_queue_bound_and_retry_after(executor: ThreadPoolExecutor) -> None:
    async def body() -> None:
        b = make(FakeModel(), executor, max_batch_size=2, max_queue_rows=4)  # loop not started
        b.batch_time_s = 0.7
        b.submit("decode", rows(0, 3), deadline())
        b.submit("encode", rows(0, 1), deadline())  # the bound counts every op's rows
        with pytest.raises(QueueFullError) as info:
            b.submit("decode", rows(0, 1), deadline())
        # 4 rows = 2 batches of 2 ahead, + the running one: 3 × 0.7 s -> 3 s (rounded up)
        assert info.value.retry_after_s == 3 and info.value.headers["Retry-After"] == "3"
        assert info.value.status == 503
        await b.stop()
        # A request larger than the bound is admitted into an empty queue (never refused for ever).
        b2 = make(FakeModel(), executor, max_queue_rows=4)
        b2.submit("decode", rows(0, 10), deadline())
        assert b2.queued_rows == 10
        with pytest.raises(QueueFullError):
            b2.submit("decode", rows(0, 1), deadline())
        await b2.stop()

    run(body)


def test_ops_are_served_oldest_first_and_never_mixed(executor: ThreadPoolExecutor) -> None:
    calls: list[tuple[str, int]] = []

    def op(name: str) -> Callable[[np.ndarray], np.ndarray]:
        def fn(x: np.ndarray) -> np.ndarray:
            calls.append((name, len(x)))
            return -x if name == "encode" else x * 2

        return fn

    async def body() -> tuple[JobResult, JobResult]:
        b = Batcher(
            {"encode": op("encode"), "decode": op("decode")},
            max_batch_size=64,
            max_delay_s=0.05,
            max_queue_rows=100,
            executor=executor,
        )
        b.start()
        enc = b.run("encode", rows(0, 3), deadline=deadline())
        dec = b.run("decode", rows(0, 2), deadline=deadline())
        out = await asyncio.gather(enc, dec)
        await b.stop()
        return out[0], out[1]

    enc, dec = run(body)
    np.testing.assert_array_equal(enc.output, -rows(0, 3))
    np.testing.assert_array_equal(dec.output, rows(0, 2) * 2)
    assert calls == [("encode", 3), ("decode", 2)]


def test_a_function_returning_the_wrong_row_count_fails_the_batch(executor: ThreadPoolExecutor) -> None:
    async def body() -> None:
        b = Batcher(
            {"decode": lambda x: x[:1]},
            max_batch_size=8,
            max_delay_s=0.0,
            max_queue_rows=10,
            executor=executor,
        )
        b.start()
        with pytest.raises(ModelCallError):
            await b.run("decode", rows(0, 3), deadline=deadline())
        await b.stop()

    run(body)


def test_observer_sees_batches_and_depth(executor: ThreadPoolExecutor) -> None:
    observer = RecordingObserver()

    async def body() -> None:
        b = make(FakeModel(), executor, observer=observer, max_delay_s=0.05)
        b.start()
        await asyncio.gather(*(b.run("decode", rows(i, 2), deadline=deadline()) for i in range(3)))
        await b.stop()

    run(body)
    assert observer.batches == [("decode", 6, 3)]
    assert ("decode", 6) in observer.depths and observer.depths[-1][1] == 0
