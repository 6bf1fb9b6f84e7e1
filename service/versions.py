"""The served model version, and switching to another one while serving (docs/versions.md).

A ``Served`` is one loaded version: its ``ModelRunner`` and a ``Batcher`` of its own, so a
batch never mixes rows of two versions. ``ModelVersions.current`` is the one new requests get
(``deps.get_model`` binds a request to it once, at its start); a swap

1. loads and verifies the new version (every sha256) on a loader thread, while the old one
   keeps serving on the model thread;
2. warms it up and probes it on the model thread (its passes interleave with the old
   version's batches: a pause of one warm-up, not of the load);
3. replaces ``current`` in one assignment on the event loop (atomic for every request);
4. retires the old version after ``request_timeout_s`` (no request bound to it can outlive its
   deadline) and once its queue is empty: its batcher stops and its weights are dropped.

A failed load leaves ``current`` untouched and raises ``ModelLoadError`` with the reason. One
swap runs at a time (``SwapInProgressError`` otherwise). With ``FACEGEN_WATCH_STORE_S``, a task
polls the store and swaps to a new highest version of the served model when one appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from facegen_core.artifact import ArtifactError, ModelStore
from service.batcher import Batcher
from service.errors import ModelLoadError, SwapInProgressError
from service.metrics import Metrics
from service.model_info import DECODE, ENCODE, REFINE
from service.runner import ModelRunner
from service.settings import Settings

log = logging.getLogger(__name__)
RETIRE_POLL_S = 0.5
RETIRE_MARGIN_S = 1.0  # past the last deadline, so a job is never cancelled before it would time out


@dataclass
class Served:
    """One loaded version and the batcher that feeds it."""

    runner: ModelRunner
    batcher: Batcher

    @property
    def label(self) -> str:
        return self.runner.label


@dataclass(frozen=True)
class SwapOutcome:
    previous: str
    serving: str
    seconds: float


class ModelVersions:
    """``current`` and the swaps that replace it (module docstring)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facegen-model")
        self.current = self._make(settings.model_name, settings.model_version)
        self.last_swap: dict[str, Any] | None = None  # the last swap's outcome, for GET /admin/models
        self._swap_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._retiring: list[Served] = []
        self._watch_failed: set[tuple[str, int, int]] = set()

    def _make(self, name: str | None, version: int | None) -> Served:
        s = self.settings
        runner = ModelRunner(s, self.executor, name, version)
        batcher = Batcher(
            {ENCODE: runner.encode, DECODE: runner.decode, REFINE: runner.refine},
            max_batch_size=s.max_batch_size,
            max_delay_s=s.max_delay_s,
            max_queue_rows=s.max_queue_rows,
            executor=self.executor,
            observer=self.metrics,
        )
        return Served(runner, batcher)

    # ------------------------------------------------------------------ lifecycle

    @property
    def retiring(self) -> list[Served]:
        return list(self._retiring)

    async def start(self) -> None:
        """Start the first version's batcher and load it (the lifespan runs this as a task)."""
        self.current.batcher.start()
        runner = self.current.runner
        await asyncio.get_running_loop().run_in_executor(self.executor, runner.load)
        if runner.ready:
            self._publish(None, self.current)
            if runner.device.type == "cuda":
                self.metrics.track_gpu_memory(runner.gpu_memory_allocated)
        if self.settings.watch_store_s > 0 and self.settings.model_version is None:
            self._spawn(self._watch())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for served in [self.current, *self._retiring]:
            await served.batcher.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ swapping

    async def swap(self, name: str | None = None, version: int | None = None, by: str = "-") -> SwapOutcome:
        """Load ``name``/``version`` (default: the served name, its highest version) beside the
        current one and switch to it; ModelLoadError (old one still serving) on any failure."""
        if self._swap_lock.locked():
            raise SwapInProgressError("Another model swap is running; retry when it has finished.")
        async with self._swap_lock:
            old = self.current
            target_name = name or (old.runner.info.name if old.runner.info else old.runner.name)
            started = time.perf_counter()
            log.info(
                "Swap requested by key %s: %s -> %s/%s.", by, old.label, target_name, version or "latest"
            )
            new = self._make(target_name, version)
            loop = asyncio.get_running_loop()
            if await asyncio.to_thread(new.runner.prepare):
                try:
                    for step in new.runner.warm_up_steps():  # the old version's batches run between
                        await loop.run_in_executor(self.executor, step)
                except Exception as exc:
                    new.runner.fail(exc)
                else:
                    new.runner.mark_ready(started)
            if not new.runner.ready:
                new.runner.release()
                self.metrics.model_swaps.labels(outcome="failed").inc()
                reason = new.runner.reason
                self.last_swap = {"outcome": "failed", "target": new.label, "reason": reason}
                log.error("Swap to %s failed; %s keeps serving. %s", new.label, old.label, reason)
                raise ModelLoadError(
                    f"{reason} {old.label} keeps serving.", serving=old.label, target=new.label
                )
            new.batcher.start()
            self.current = new  # the swap: new requests bind to `new` from here on
            seconds = time.perf_counter() - started
            self.metrics.model_swaps.labels(outcome="ok").inc()
            self._publish(old, new)
            self.last_swap = {
                "outcome": "ok",
                "previous": old.label,
                "serving": new.label,
                "seconds": seconds,
            }
            log.info("Swapped %s -> %s in %.2f s (key %s).", old.label, new.label, seconds, by)
            self._retiring.append(old)
            self._spawn(self._retire(old))
            return SwapOutcome(previous=old.label, serving=new.label, seconds=seconds)

    async def _retire(self, old: Served) -> None:
        """Stop the old version once no request bound to it can still be waiting for it."""
        await asyncio.sleep(self.settings.request_timeout_s + RETIRE_MARGIN_S)
        while old.batcher.queued_rows:
            await asyncio.sleep(RETIRE_POLL_S)
        await old.batcher.stop()
        await asyncio.get_running_loop().run_in_executor(self.executor, old.runner.release)
        with contextlib.suppress(ValueError):
            self._retiring.remove(old)
        log.info("Retired %s.", old.label)

    def _publish(self, old: Served | None, new: Served) -> None:
        """facegen_model_info: the old version's series removed, the new one's set."""
        s, g = self.settings, self.metrics.model_info
        for served, value in ((old, None), (new, 1)):
            info = served.runner.info if served else None
            if served is None or info is None:
                continue
            labels = dict(
                name=info.name,
                version=str(info.version),
                sha256=info.sha256,
                device=served.runner.device.type,
                precision=s.precision,
            )
            if value is None:
                with contextlib.suppress(KeyError):
                    g.remove(*labels.values())
            else:
                g.labels(**labels).set(value)

    async def _watch(self) -> None:
        """Swap to a new highest version of the served model when one appears in the store."""
        store = ModelStore(self.settings.model_store)
        while True:
            await asyncio.sleep(self.settings.watch_store_s)
            info = self.current.runner.info
            if info is None or self._swap_lock.locked():
                continue
            try:
                versions = await asyncio.to_thread(store.versions, info.name)
            except (OSError, ArtifactError):
                continue
            newest = versions[-1] if versions else 0
            if newest <= info.version:
                continue
            # A version folder still being copied fails its load: it is tried again once its
            # manifest changes (the exporter writes the manifest last).
            manifest = store.root / info.name / str(newest) / "manifest.json"
            stamp = (info.name, newest, manifest.stat().st_mtime_ns if manifest.exists() else 0)
            if stamp in self._watch_failed:
                continue
            try:
                await self.swap(info.name, newest, by="store-watch")
            except ModelLoadError:
                self._watch_failed.add(stamp)
            except SwapInProgressError:
                pass
