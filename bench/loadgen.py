"""Closed-loop load generator: ``concurrency`` asyncio workers, each sending requests back to back.

One process, one event loop, one ``httpx.AsyncClient`` with a keep-alive connection per
worker: the lightest client Python offers, because on a small machine the client and the
server share the CPU. ``procs > 1`` splits the workers over that many child processes
(``python -m bench.child``), for machines with cores to spare.

A cell runs in three phases. Warm-up: at least ``warmup_s`` and, with ``warmup_round``, one
full round (as many completions as workers), so the server's queue has reached its steady
depth. Window: at
least ``duration_s`` and ``min_requests`` completions, at most ``max_window_s``; only
requests that *finish* inside the window are counted. Drain: workers stop sending and the
requests in flight finish (up to ``drain_s``, then they are cancelled: the service drops
the rows of a client that has gone, so the next cell does not pay for them).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import httpx

# Worker w's k-th request uses seed w * SEED_STRIDE + k: every request asks for new faces,
# so no cache in front of the model could flatter the numbers.
SEED_STRIDE = 1_000_000
RETRY_AFTER_CAP_S = 1.0  # a shed request (503) backs off this long at most, not a busy loop
PROGRESS_EVERY_S = 0.05
T = TypeVar("T")
CHILD_START_TIMEOUT_S = 60.0


class Sample(NamedTuple):
    start: float  # time.monotonic() at send (system-wide clock: comparable across processes)
    end: float  # time.monotonic() when the whole body was read
    status: int  # HTTP status; 0 = connection error, -1 = client timeout
    images: int  # images delivered (0 unless the response was a non-empty 200)


@dataclass(frozen=True)
class RequestSpec:
    """One kind of request. JSON bodies get fresh seeds at ``seed_fields`` (dotted paths)."""

    path: str
    images: int
    json_body: dict[str, Any] | None = None
    seed_fields: tuple[str, ...] = ()
    files: tuple[tuple[str, str, bytes, str], ...] = ()  # multipart (field, filename, bytes, type)
    form: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    raw_seed: bool = False  # the body is the seed as decimal text (TorchServe's /predictions)

    def request_kwargs(self, seed: int) -> dict[str, Any]:
        if self.raw_seed:
            return {"content": str(seed).encode(), "headers": {"Content-Type": "text/plain"}}
        if self.files:
            return {
                "files": [(f, (name, data, ctype)) for f, name, data, ctype in self.files],
                "data": self.form,
            }
        body = copy.deepcopy(self.json_body or {})
        for i, dotted in enumerate(self.seed_fields):
            *parents, leaf = dotted.split(".")
            node = body
            for p in parents:  # a list is indexed by number (KServe v2's "inputs.0.data.0")
                node = node[int(p)] if isinstance(node, list) else node[p]
            node[int(leaf) if isinstance(node, list) else leaf] = (
                seed + i
            )  # interpolate's end seed differs from its start seed
        return {"json": body}

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "images": self.images,
            "json_body": self.json_body,
            "seed_fields": list(self.seed_fields),
            "form": self.form,
            "method": self.method,
            "raw_seed": self.raw_seed,
            "files": [[f, n, base64.b64encode(d).decode(), t] for f, n, d, t in self.files],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RequestSpec:
        files = tuple((f, n, base64.b64decode(d64), t) for f, n, d64, t in d["files"])
        return cls(
            d["path"],
            int(d["images"]),
            d["json_body"],
            tuple(d["seed_fields"]),
            files,
            dict(d["form"]),
            d["method"],
            bool(d.get("raw_seed", False)),
        )


@dataclass(frozen=True)
class Timing:
    warmup_s: float = 2.0
    max_warmup_s: float = 30.0
    warmup_round: bool = True
    duration_s: float = 10.0
    min_requests: int = 20
    max_window_s: float = 60.0
    drain_s: float = 30.0
    request_timeout_s: float = 120.0
    max_requests: int = 1_000_000  # a hard bound on requests per cell, whatever the timing


class WorkerGroup:
    """``concurrency`` workers in the current event loop."""

    def __init__(
        self, url: str, spec: RequestSpec, concurrency: int, first_worker: int, timing: Timing
    ) -> None:
        self.url, self.spec, self.timing = url, spec, timing
        self.worker_ids = range(first_worker, first_worker + concurrency)
        self.samples: list[Sample] = []
        self.sent = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: list[httpx.AsyncClient] = []

    @property
    def completed(self) -> int:
        return len(self.samples)

    async def start(self) -> None:
        """One client (one keep-alive connection) per worker: httpx's pool scans all of its
        connections and waiting requests on every request, so one pool shared by 64 workers
        costs the client several times more CPU per request than 64 pools of one (measured
        against the tiny model at concurrency 64: 8-9 ms vs 1.1 ms of client CPU per request)."""
        self._clients = [
            httpx.AsyncClient(
                base_url=self.url,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=httpx.Timeout(self.timing.request_timeout_s),
            )
            for _ in self.worker_ids
        ]
        self._tasks = [
            asyncio.create_task(self._worker(w, c))
            for w, c in zip(self.worker_ids, self._clients, strict=True)
        ]

    async def _worker(self, wid: int, client: httpx.AsyncClient) -> None:
        k = 0
        while not self._stop.is_set() and self.sent < self.timing.max_requests:
            self.sent += 1
            kwargs = self.spec.request_kwargs(wid * SEED_STRIDE + k)
            k += 1
            t = time.monotonic()
            retry_after = 0.0
            try:
                r = await client.request(self.spec.method, self.spec.path, **kwargs)
                status = r.status_code
                ok = status == 200 and len(r.content) > 0
                if status == 503:
                    with contextlib.suppress(ValueError):
                        retry_after = float(r.headers.get("retry-after", "1"))
            except httpx.TimeoutException:
                status, ok = -1, False
            except httpx.HTTPError:
                status, ok = 0, False
                retry_after = 0.1  # the server is gone or refusing: do not spin
            self.samples.append(Sample(t, time.monotonic(), status, self.spec.images if ok else 0))
            if retry_after > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), min(retry_after, RETRY_AFTER_CAP_S))

    async def stop(self, drain_s: float) -> list[Sample]:
        """Stop sending; let in-flight requests finish for up to ``drain_s``; return all samples."""
        self._stop.set()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=drain_s)
            for t in pending:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.aclose()
        return self.samples


class ChildGroup:
    """The same workers in a child process (``python -m bench.child``), spoken to over pipes."""

    def __init__(
        self, url: str, spec: RequestSpec, concurrency: int, first_worker: int, timing: Timing
    ) -> None:
        self.config = {
            "url": url,
            "spec": spec.to_json(),
            "concurrency": concurrency,
            "first_worker": first_worker,
            "timing": timing.__dict__,
        }
        self.completed = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._samples: list[Sample] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._started = False

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 28,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(self.config) + "\n").encode())
        await self.proc.stdin.drain()
        self._reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(self._ready.wait(), CHILD_START_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            raise RuntimeError(
                f"A load-generator child process did not start within {CHILD_START_TIMEOUT_S:.0f} s; "
                f"run with --client-procs 1."
            ) from None
        if self.proc.returncode is not None or not self._started:
            raise RuntimeError(
                "A load-generator child process exited at start; run with --client-procs 1 to see why."
            )

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            kind, _, payload = raw.decode().strip().partition(" ")
            if kind == "started":
                self._started = True
                self._ready.set()
            elif kind == "completed":
                self.completed = int(payload)
            elif kind == "samples":
                self._samples = [Sample(*s) for s in json.loads(payload)]
        self._ready.set()  # a child that died must not hang start()

    async def stop(self, drain_s: float) -> list[Sample]:
        assert self.proc is not None and self.proc.stdin is not None and self._reader is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        self.proc.stdin.close()
        await asyncio.wait_for(self._reader, drain_s + 30.0)
        await self.proc.wait()
        if self._samples is None:
            raise RuntimeError(
                f"A load-generator child process exited with code {self.proc.returncode} "
                f"without reporting its samples; run with --client-procs 1 to see its error."
            )
        return self._samples


@dataclass
class CellRun:
    samples: list[Sample]
    t0: float  # window open (time.monotonic())
    t1: float  # window close
    client_pids: list[int]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (uvicorn's own loop; less client CPU)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def event_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


Hook = Callable[[list[int]], Awaitable[None]]  # called with the child pids (none in-process)


async def run_cell(
    url: str,
    spec: RequestSpec,
    concurrency: int,
    timing: Timing,
    procs: int = 1,
    on_open: Hook | None = None,
    on_close: Hook | None = None,
) -> CellRun:
    """Drive one (request kind, concurrency) cell; ``on_open``/``on_close`` run at the window edges.

    Requests go only to ``url``, at most ``timing.max_requests`` of them.
    """
    procs = max(1, min(procs, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    firsts = [sum(shares[:i]) for i in range(procs)]
    group_cls: type[WorkerGroup] | type[ChildGroup] = WorkerGroup if procs == 1 else ChildGroup
    share_timing = dataclasses.replace(timing, max_requests=max(1, timing.max_requests // procs))
    groups = [group_cls(url, spec, n, f, share_timing) for n, f in zip(shares, firsts, strict=True)]
    for g in groups:
        await g.start()
    pids = [g.proc.pid for g in groups if isinstance(g, ChildGroup) and g.proc is not None]

    def completed() -> int:
        return sum(g.completed for g in groups)

    async def wait_until(ok: Callable[[float], bool], cap_s: float) -> float:
        begin = time.monotonic()
        while not ok(time.monotonic() - begin) and time.monotonic() - begin < cap_s:
            await asyncio.sleep(PROGRESS_EVERY_S)
        return time.monotonic()

    cap = timing.max_requests
    await wait_until(
        lambda dt: (
            dt >= timing.warmup_s and completed() >= (min(concurrency, cap) if timing.warmup_round else 1)
        ),
        timing.max_warmup_s,
    )
    if on_open is not None:
        await on_open(pids)
    t0, c0 = time.monotonic(), completed()
    t1 = await wait_until(
        lambda dt: dt >= timing.duration_s and completed() - c0 >= min(timing.min_requests, cap - c0),
        timing.max_window_s,
    )
    if on_close is not None:
        await on_close(pids)
    samples: list[Sample] = []
    for g in groups:
        samples += await g.stop(timing.drain_s)
    return CellRun(samples, t0, t1, pids)
