"""The model worker: the one thread that owns the device and runs encode/decode batches.

``ModelRunner.load`` (on the worker thread) verifies and loads the artifact, then warms up;
its outcome is ``state`` ("loading", "ready" or "failed" with ``reason``), which /readyz and
/models report. A failed load leaves the process running: /healthz stays 200, /readyz 503.
One runner is one model version. When another version is swapped in while serving
(service.versions), its ``prepare`` (resolve, verify, copy the weights to the device) runs on
a loader thread, and its ``warm_up_steps`` (everything that runs the networks, CUDA graph
capture included) on the model thread shared by all versions.

Determinism. A conv's result for one sample depends on the batch it is computed in
(oneDNN/cuDNN pick kernels and blockings by shape, and by memory layout). Measured on this
CPU (torch 2.13, 1 thread): decoding 64 latents as one batch vs one at a time gave different
floats for every face (up to 7e-8) and a different uint8 pixel in 7 of 1024 tiny-model
faces and 4 of 256 ``ModelConfig.small()`` faces. Within one fixed shape and layout,
though, a row's output did not depend on its position or on the other rows (0 of 3357
rows differed, random batches of 1-64, tiny and small, 1 and 2 threads, encode and decode).
So every forward pass here runs exactly ``chunk_rows`` NCHW-contiguous rows, the last chunk
padded with zeros, through networks of one fixed layout (the decoder channels-last on CPU,
``Settings.decoder_memory_format``; bench.invariance measured 0 rows differing in it too): a
face's pixels are the same whether asked for alone, in a grid, or batched with strangers.
The price is padding work on small batches. On CPU, with one torch thread, passes of 1 row
were the fastest per row anyway (ModelConfig.small() decoder: 9.3 ms/row at 1, 11.5 at 8,
13.8 at 32 rows per pass), so ``chunk_rows`` defaults to 1 there: the batcher still packs
requests into one model call, run as 1-row passes. On CUDA it defaults to max_batch_size
(padding is nearly free on a GPU). Determinism holds for one server configuration (device,
precision, threads, chunk_rows, decoder layout, cuda_graphs), not across them.

Row threads (CPU). Two torch threads on one 1-row pass are poor value: on the 2-core
development machine the faces64 decoder took 14.9 ms a row on 2 threads but 23 ms of CPU,
while two threads of one torch thread each, one pass apiece, decoded 90 rows/s against 67
(``FACEGEN_ROW_THREADS``, docs/bench.md). So a model call of several passes runs them on
``row_threads`` lane threads of one torch thread each; a lone pass (one request at low load)
keeps every torch thread, for its latency. The passes are the same fixed-shape passes, and
with this model a pass's floats did not depend on the number of torch threads (0 of 256
decoded and 256 encoded rows differed between 1 and 2 threads); because that is a property
of the kernels, not a promise, warm-up checks it on this machine and turns the lanes off,
with a warning, if any float differs.

CUDA graphs. Because every pass has one shape and layout, on CUDA each of decode and encode
is captured once as a CUDA graph during warm-up (``FACEGEN_CUDA_GRAPHS``, default on) and
replayed for every pass: the rows are copied into the graph's static input, the kernels
recorded for that shape run again, and the static output is cloned out. A graph replays the
very kernels of its shape, so the argument above holds for the pixels. Measured on an H200
(tests/gpu, 2026-11-30): a face's uint8 pixels were the same alone, among 64 and among random
strangers, for the tiny and the small model; the tiny model's floats, though, differed by
rounding with the row's position (cuDNN's kernels there), the small model's did not. If capture fails, or the
graph's output does not match an eager pass, the runner logs a warning and runs eagerly;
``cuda_graphs`` says which (logged at ready, reported by /models).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image

from facegen_core import align
from facegen_core.artifact import Artifact, ModelStore, load_artifact
from facegen_core.device import PRECISIONS, autocast, resolve_device, set_memory_format
from facegen_core.preprocess import model_to_uint8, uint8_to_model
from facegen_core.refine import RefineState, adam_step, inside_photo, latent_gradient
from service.model_info import DECODE, ENCODE, REFINE, ModelInfo
from service.refining import start_rows
from service.settings import Settings

log = logging.getLogger(__name__)

Pass = Callable[[torch.Tensor], torch.Tensor]
WARMUP_SLICE_PASSES = 8  # forward passes per warm-up step (a swap interleaves serving between steps)
GRAPH_WARMUP_ITERS = 3  # eager passes on a side stream before capture (cuDNN/cuBLAS set-up)


def set_torch_threads(threads: int) -> None:
    """``threads`` torch intra-op threads (FACEGEN_TORCH_THREADS; 0 keeps torch's default) and
    one inter-op thread. ``python -m service`` calls it before any torch work, the runner again
    on the model thread when it loads (an OpenMP thread count is a per-thread setting); the
    inter-op count can be set only once per process, so a second call leaves it."""
    if not threads:
        return
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # already set, or inter-op work has started
        torch.set_num_interop_threads(1)


class ModelRunner:
    """Loads one artifact and runs its encoder/decoder on a single dedicated thread."""

    def __init__(
        self,
        settings: Settings,
        executor: ThreadPoolExecutor | None = None,
        name: str | None = None,
        version: int | None = None,
    ) -> None:
        """``name``/``version``: what to load (default: the settings'); ``executor``: the model
        thread, shared by every version loaded over the process's life (service.versions)."""
        self.settings = settings
        self.name, self.version = name or settings.model_name, version or settings.model_version
        # One thread owns the device: torch calls are never interleaved across threads,
        # and the event loop never blocks on them.
        self._owns_executor = executor is None
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="facegen-model")
        self.fingerprint = ""  # hash of what fixes a request's output bytes (caching ETags), once ready
        self.state = "loading"
        self.reason = "The model is loading."
        self.path: str | None = None
        self.info: ModelInfo | None = None
        self.device = torch.device("cpu")
        self.chunk_rows = 1
        self.decoder_memory_format = "contiguous"  # Settings.decoder_memory_format resolved, once loaded
        self.cuda_graphs = False  # True once decode and encode replay captured CUDA graphs
        self._graphs: dict[str, _GraphedPass] = {}
        self.row_threads = 1  # lane threads for a call of several passes (CPU; see the module docstring)
        self._lanes: ThreadPoolExecutor | None = None
        self._refine_pass_s = 0.0  # EWMA wall time of one refinement gradient pass (_refine_rows)
        self._artifact: Artifact | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    # ------------------------------------------------------------------ loading

    @property
    def label(self) -> str:
        """NAME/VERSION (X-Model-Version), once the manifest is read."""
        return f"{self.info.name}/{self.info.version}" if self.info else f"{self.name}/{self.version}"

    def load(self) -> None:
        """Resolve, verify, load and warm up; never raises (the outcome is in ``state``)."""
        started = time.perf_counter()
        if self.prepare():
            self.warm_up(started)

    def prepare(self) -> bool:
        """Resolve, verify every sha256 and load the weights; never raises. Touches no model the
        service is running, so a version swap runs it on another thread than the model's."""
        s = self.settings
        try:
            set_torch_threads(s.torch_threads)
            self.device = resolve_device(s.device)
            self.chunk_rows = s.effective_chunk_rows(self.device.type)
            self.row_threads = s.effective_row_threads(self.device.type, torch.get_num_threads())
            store = ModelStore(s.model_store)
            name = self.name or store.default_name()
            path = store.resolve(name, self.version)
            self.path = str(path)
            log.info("Loading model %s from %s on %s (%s).", name, path, self.device, s.precision)
            artifact = load_artifact(path, self.device)
            # The decoder only: the encoder was measured no faster in channels-last (its first
            # conv has 3 input channels; docs/bench.md, "Memory layout").
            self.decoder_memory_format = s.effective_decoder_memory_format(self.device.type)
            set_memory_format(artifact.decoder, memory_format=self.decoder_memory_format)
            self._artifact = artifact
            cfg = artifact.config
            self.info = ModelInfo(
                name=artifact.name,
                version=artifact.version,
                sha256=artifact.weights_sha256,
                image_size=cfg.image_size,
                channels=cfg.channels,
                latent_dim=cfg.latent_dim,
                input_crop=cfg.input_crop,
                manifest=artifact.manifest,
                prior=artifact.prior,
                attributes=artifact.attributes,
            )
            self.state, self.reason = "warming_up", "The model is loaded and warming up."
        except Exception as exc:  # any failure: report it, keep the process up
            self.fail(exc)
            return False
        return True

    def warm_up(self, started: float | None = None) -> None:
        """Warm up and probe (on the model thread); never raises (the outcome is in ``state``)."""
        started = time.perf_counter() if started is None else started
        try:
            for step in self.warm_up_steps():
                step()
        except Exception as exc:
            self.fail(exc)
            return
        self.mark_ready(started)

    def warm_up_steps(self) -> list[Callable[[], None]]:
        """The warm-up and the probe as short steps, each to run on the model thread in order.
        A swap (service.versions) submits them one at a time, so the version still serving
        runs its batches between them instead of waiting for the whole warm-up."""
        s, info = self.settings, self.info
        assert info is not None
        steps: list[Callable[[], None]] = [self._capture_graphs, self._start_lanes]
        # Every pass has chunk_rows rows, so a warm-up batch of b rows is ceil(b / chunk_rows)
        # identical passes: cut into slices of a few passes, it warms the same kernels.
        slice_rows = WARMUP_SLICE_PASSES * self.chunk_rows
        for b in sorted({min(max(1, b), s.max_batch_size) for b in s.warmup_batch_sizes}):
            steps += [partial(self._warm_up_rows, min(slice_rows, b - i)) for i in range(0, b, slice_rows)]
        if s.max_refine_steps > 0:
            steps.append(self._warm_up_refine)
        if info.input_crop == "align":
            steps.append(_warm_up_detector)
        if s.warmup_delay_s:
            steps.append(partial(time.sleep, s.warmup_delay_s))  # test hook (FACEGEN_WARMUP_DELAY_S)
        steps.append(self._probe)
        return steps

    def mark_ready(self, started: float) -> None:
        assert self.info is not None
        self.fingerprint = _fingerprint(
            self.info.sha256, str(self.device), self.settings, self.chunk_rows, self.decoder_memory_format
        )
        self.state, self.reason = "ready", "The model is loaded, verified and warmed up."
        log.info(
            "Model %s v%d ready in %.2f s (%s, chunk_rows=%d, threads=%d, row_threads=%d, cuda_graphs=%s).",
            self.info.name,
            self.info.version,
            time.perf_counter() - started,
            self.decoder_memory_format,
            self.chunk_rows,
            torch.get_num_threads(),
            self.row_threads,
            self.cuda_graphs,
        )

    def fail(self, exc: Exception) -> None:
        self.state = "failed"
        self.reason = f"The model could not be loaded: {exc}"
        self._artifact, self._graphs = None, {}
        self._stop_lanes()
        log.error("%s", self.reason, exc_info=not _expected(exc))

    def release(self) -> None:
        """Drop the weights (a retired version); later calls fail as before a load."""
        self._artifact, self._graphs = None, {}
        self._stop_lanes()
        if self.state == "ready":
            self.state, self.reason = "retired", "This model version was replaced by another."

    def _probe(self) -> None:
        """Faces from the model's own prior must be finite and not all one colour: a checksum
        proves the files are the ones exported, not that the export was a working model."""
        art, info = self._require(), self.info
        assert info is not None
        z = info.prior.latents_for_seeds(0, 4, info.latent_dim, 1.0).to(self.device)  # (4, D)
        with self._lock, torch.inference_mode(), autocast(self.device, self.settings.precision):
            x = art.decoder(z).float()  # (4, C, H, W) in [-1, 1]
        if not torch.isfinite(x).all():
            raise RuntimeError("The probe's faces (seeds 0-3) hold non-finite values.")
        if float(x.std()) < 1e-4:
            raise RuntimeError("The probe's faces (seeds 0-3) are one flat colour.")

    def _warm_up_refine(self) -> None:
        """One refinement step of one row, so the first request's autograd set-up is paid here."""
        assert self.info is not None
        s, d = self.info.image_size, self.info.latent_dim
        self.refine(
            start_rows(np.zeros((1, s, s, self.info.channels), np.uint8), np.zeros((1, d), np.float32), 1)
        )

    def _warm_up_rows(self, rows: int) -> None:
        """Decode and encode ``rows`` rows (through the CUDA graphs, when captured), so the
        first request pays no one-off costs."""
        assert self.info is not None
        images = self.decode(np.zeros((rows, self.info.latent_dim), np.float32))
        stats = self.encode(images)
        if not np.isfinite(stats).all():
            raise RuntimeError("The encoder returned non-finite values during warm-up.")

    def _capture_graphs(self) -> None:
        """One CUDA graph per op at the pass shape (chunk_rows rows); on any failure, eager."""
        self._graphs, self.cuda_graphs = {}, False
        if self.device.type != "cuda" or not self.settings.cuda_graphs:
            return
        art, info = self._require(), self.info
        assert info is not None
        c, size = self.chunk_rows, info.image_size
        try:
            with torch.cuda.device(self.device), torch.inference_mode(), self._capture_autocast():
                # Example inputs made exactly as decode/encode make theirs: same dtype, layout.
                z = torch.zeros((c, info.latent_dim), dtype=torch.float32, device=self.device)
                u8 = torch.zeros((c, info.channels, size, size), dtype=torch.uint8, device=self.device)
                passes: dict[str, tuple[Pass, torch.Tensor]] = {
                    DECODE: (art.decoder, z),
                    ENCODE: (self._encode_pass, uint8_to_model(u8).contiguous()),
                }
                graphs = {name: _GraphedPass(fn, x) for name, (fn, x) in passes.items()}
                # A graph must compute what the eager pass computes: check on random inputs.
                g = torch.Generator().manual_seed(0)
                for name, (fn, x) in passes.items():
                    probe = (torch.rand(x.shape, generator=g) * 2 - 1).to(self.device, x.dtype)
                    replayed, eager = graphs[name](probe).float(), fn(probe).float()
                    if not torch.isfinite(replayed).all() or not torch.allclose(
                        replayed, eager, rtol=1e-2, atol=1e-2
                    ):
                        raise RuntimeError(
                            f"the {name} graph's output differs from the eager pass's "
                            f"(max |diff| {(replayed - eager).abs().max().item():.3g})"
                        )
                torch.cuda.synchronize(self.device)
        except Exception as exc:  # capture is an optimisation: never fail the load for it
            log.warning(
                "CUDA graph capture failed (%s: %s); running decode and encode eagerly.",
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            return
        self._graphs, self.cuda_graphs = graphs, True
        log.info("Captured CUDA graphs for decode and encode passes of %d rows.", c)

    def _start_lanes(self) -> None:
        """Start the row lanes, then check that they compute what the model thread computes,
        bit for bit, for decode and encode; on any difference, run without them."""
        self._stop_lanes()
        if self.row_threads < 2:
            return
        self._lanes = lane_pool(self.row_threads)
        art, info = self._require(), self.info
        assert info is not None
        g = torch.Generator().manual_seed(0)
        rows = 2 * self.row_threads * self.chunk_rows
        pixels = info.channels * info.image_size**2
        probes: dict[str, tuple[Pass, torch.Tensor]] = {
            DECODE: (art.decoder, torch.randn((rows, info.latent_dim), generator=g)),
            ENCODE: (
                self._encode_pass,
                torch.rand((rows, info.channels, info.image_size, info.image_size), generator=g) * 2 - 1,
            ),
            # refine's gradient pass: rows of [z, x, photo mask of ones]
            REFINE: (
                self._refine_pass(),
                torch.cat(
                    [
                        torch.randn((rows, info.latent_dim), generator=g),
                        torch.rand((rows, pixels), generator=g) * 2 - 1,
                        torch.ones((rows, info.image_size**2)),
                    ],
                    dim=1,
                ),
            ),
        }
        with self._lock, torch.inference_mode():
            for name, (fn, x) in probes.items():
                laned, alone = self._chunked(fn, x), self._chunked(fn, x, lanes=False)
                if not torch.equal(laned, alone):
                    log.warning(
                        "Row threads change the %s pass's floats on this machine (max |diff| %.3g); "
                        "running every pass on the model thread (FACEGEN_ROW_THREADS=1).",
                        name,
                        (laned - alone).abs().max().item(),
                    )
                    self._stop_lanes()
                    self.row_threads = 1
                    return

    def _stop_lanes(self) -> None:
        if self._lanes is not None:
            self._lanes.shutdown(wait=False, cancel_futures=True)
            self._lanes = None

    def _capture_autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast of decode/encode, with its weight-cast cache off: a cast cached
        during capture would live in memory the graph does not own (torch's CUDA graph docs).
        The weights here do not require grad, so autocast would not cache them anyway."""
        if self.settings.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(
            device_type="cuda", dtype=PRECISIONS[self.settings.precision], cache_enabled=False
        )

    # ------------------------------------------------------------------ batch functions

    def _chunked(self, fn: Pass, x: torch.Tensor, lanes: bool = True) -> torch.Tensor:
        """fn over x in passes of exactly chunk_rows rows (see the module docstring), on the
        row lanes when there are several passes and ``lanes``, else on this thread."""
        pool = self._lanes if lanes else None
        return run_passes(fn, x, self.chunk_rows, pool, self.device, self.settings.precision)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """float32 (B, latent_dim) -> uint8 (B, H, W, C). Runs on the model thread."""
        art = self._require()
        with self._lock, torch.inference_mode(), autocast(self.device, self.settings.precision):
            z = torch.from_numpy(np.ascontiguousarray(latents, np.float32)).to(self.device)
            x = self._chunked(self._graphs.get(DECODE, art.decoder), z)  # (B, C, H, W) in [-1, 1]
            x = torch.nan_to_num(x.float(), nan=0.0)
            out = model_to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C)
        return np.ascontiguousarray(out)

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, C) -> float32 (B, 2, latent_dim): mu and logvar of q(z|x)."""
        self._require()
        with self._lock, torch.inference_mode(), autocast(self.device, self.settings.precision):
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
            x = x.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W), NCHW-contiguous
            x = uint8_to_model(x)  # (B, C, H, W) in [-1, 1]
            stats = self._chunked(self._graphs.get(ENCODE, self._encode_pass), x)  # (B, 2, D)
        return stats.cpu().numpy().astype(np.float32)

    def refine(self, rows: np.ndarray) -> np.ndarray:
        """A slice of refinement (facegen_core.refine) for rows of ``service.refining.refine_dtype``:
        rows with steps left take steps together until ``refine_slice_ms`` has passed (at least
        one step); the rows come back with their state advanced. Only as many rows are stepped
        as one step of them fits in the slice (``_refine_rows``); the others come back untouched
        and are queued again, so a request of many faces does not hold the model for a step of
        all of them. Each step's gradients are computed in fixed-shape passes like decode's, so a
        row's floats do not depend on its batch or on which call stepped it; refinement runs in
        fp32 (its gradients are small: fp16 would underflow them)."""
        budget = self.settings.refine_slice_ms / 1000.0
        with self._lock:
            started = time.perf_counter()
            dev = self.device
            u8 = (
                torch.from_numpy(np.ascontiguousarray(rows["image"])).to(dev).permute(0, 3, 1, 2)
            )  # (B, C, H, W)
            x = uint8_to_model(u8).flatten(1)  # (B, C*H*W) in [-1, 1]
            mask = inside_photo(u8).flatten(1).float()  # (B, H*W): the photo's pixels
            state = RefineState(
                z=torch.from_numpy(rows["z"].copy()).to(dev),
                m=torch.from_numpy(rows["m"].copy()).to(dev),
                v=torch.from_numpy(rows["v"].copy()).to(dev),
                done=torch.from_numpy(rows["done"].astype(np.int64)).to(dev),
                total=torch.from_numpy(rows["total"].astype(np.int64)).to(dev),
            )
            limit = self._refine_rows(budget)
            while True:
                active = state.active.nonzero().flatten()[:limit]  # (k,)
                if active.numel() == 0:
                    break
                t0 = time.perf_counter()
                packed = torch.cat([state.z[active], x[active], mask[active]], dim=1)  # (k, D + CHW + HW)
                grad = self._chunked(self._refine_pass(), packed)  # (k, D)
                adam_step(state, grad, active)
                passes = -(-active.numel() // self.chunk_rows)
                self._refine_pass_s += 0.2 * ((time.perf_counter() - t0) / passes - self._refine_pass_s)
                if time.perf_counter() - started >= budget:
                    break
            out = rows.copy()
            out["z"], out["m"], out["v"] = (t.cpu().numpy() for t in (state.z, state.m, state.v))
            out["done"] = state.done.cpu().numpy()
        return out

    def _refine_rows(self, budget_s: float) -> int:
        """Rows one refinement step may take so that it fits in ``budget_s``: whole passes of
        chunk_rows, at least one, from the measured wall time of a pass (lanes included)."""
        if self._refine_pass_s <= 0:
            return self.settings.max_batch_size  # not measured yet: every row
        return max(1, int(budget_s / self._refine_pass_s)) * self.chunk_rows

    def _encode_pass(self, x: torch.Tensor) -> torch.Tensor:
        """(b, C, H, W) in [-1, 1] -> (b, 2, D): ``encode_pass`` with the loaded encoder."""
        return encode_pass(self._require().encoder, x)

    def _refine_pass(self) -> Pass:
        """``refine_pass`` bound to the loaded decoder and the model's shapes."""
        art, info = self._require(), self.info
        assert info is not None
        return partial(refine_pass, art.decoder, info.latent_dim, info.channels, info.image_size)

    def _require(self) -> Artifact:
        if self._artifact is None:
            raise RuntimeError("The model is not loaded; wait for /readyz.")
        return self._artifact

    def gpu_memory_allocated(self) -> float:
        return float(torch.cuda.memory_allocated(self.device)) if self.device.type == "cuda" else 0.0

    def shutdown(self) -> None:
        self._stop_lanes()
        if self._owns_executor:
            self.executor.shutdown(wait=False, cancel_futures=True)


def lane_pool(n: int) -> ThreadPoolExecutor:
    """``n`` row lanes: threads that run torch ops on one torch thread each."""
    return ThreadPoolExecutor(
        n, thread_name_prefix="facegen-rows", initializer=torch.set_num_threads, initargs=(1,)
    )


def run_passes(
    fn: Pass,
    x: torch.Tensor,
    chunk_rows: int,
    lanes: ThreadPoolExecutor | None = None,
    device: torch.device | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """``fn`` over x (B, ...) in passes of exactly ``chunk_rows`` NCHW-contiguous rows, the last
    padded with zeros (the determinism note); with ``lanes`` and several passes, each lane takes
    the next pass as it finishes one (a lane slowed by the event loop's share of its core does
    less, instead of the other lane idling at the end; a fixed round-robin deal measured 84 vs
    94 faces/s against TorchServe's two independent workers). Also the bench's ceiling."""
    c, parts, kept = chunk_rows, [], []
    for i in range(0, x.shape[0], c):
        part = x[i : i + c]
        k = part.shape[0]
        if k < c:
            part = torch.cat([part, part.new_zeros((c - k, *part.shape[1:]))])
        # Same shape *and* memory layout every pass: a channels-last view and a contiguous
        # tensor take different conv kernels, with different rounding.
        parts.append(part.contiguous())
        kept.append(k)
    if lanes is not None and len(parts) > 1:
        job = partial(_run_passes, fn, device or x.device, precision)
        outs = [out for (out,) in lanes.map(job, [[part] for part in parts])]  # in row order
    else:
        outs = [fn(part) for part in parts]
    return torch.cat([out[:k] for out, k in zip(outs, kept, strict=True)])


def encode_pass(encoder: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One encode pass: (b, C, H, W) in [-1, 1] -> (b, 2, D), mu and logvar of q(z|x) in fp32."""
    mu, logvar = encoder(x)
    return torch.stack([mu.float(), logvar.float()], dim=1)


def refine_pass(decoder: torch.nn.Module, d: int, c: int, s: int, packed: torch.Tensor) -> torch.Tensor:
    """One pass of refinement gradients for a model of latent size ``d``, ``c`` channels and side
    ``s``: rows (b, d + c*s*s + s*s) of [z, x in [-1, 1], photo mask] -> ∂loss/∂z (b, d), in fp32
    (``latent_gradient`` turns autograd on in the lanes' inference mode)."""
    with torch.autocast(packed.device.type, enabled=False):
        z = packed[:, :d]  # (b, D)
        x = packed[:, d : d + c * s * s].reshape(-1, c, s, s)  # (b, C, H, W)
        mask = packed[:, d + c * s * s :].reshape(-1, 1, s, s)  # (b, 1, H, W); padding rows: all 0
        return latent_gradient(decoder, z, x, mask)


def _run_passes(
    fn: Pass, device: torch.device, precision: str, parts: list[torch.Tensor]
) -> list[torch.Tensor]:
    """One lane's passes. Inference mode and autocast are per thread: set them here as well."""
    with torch.inference_mode(), autocast(device, precision):
        return [fn(part) for part in parts]


def _fingerprint(weights_sha256: str, device: str, s: Settings, chunk_rows: int, memory_format: str) -> str:
    """What, beside the request, fixes the bytes of a response (see the determinism note)."""
    parts = [
        weights_sha256,
        device,
        s.precision,
        str(chunk_rows),
        memory_format,
        str(s.cuda_graphs),
        str(s.png_compress_level),
    ]
    parts += [torch.__version__, str(torch.get_num_threads())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


class _GraphedPass:
    """``fn`` on inputs of one fixed shape, as a captured CUDA graph.

    Follows torch's CUDA graph recipe: a static input buffer, a few eager iterations on a side
    stream (so one-off work such as cuDNN plan creation and workspace allocation is not
    captured), capture, then per call: copy the rows into the static input, replay, and clone
    the static output (the next replay overwrites it). Built and called under
    ``torch.inference_mode`` and the runner's autocast, on the model thread.
    """

    def __init__(self, fn: Pass, example: torch.Tensor, warmup_iters: int = GRAPH_WARMUP_ITERS) -> None:
        self.static_in = example.clone(memory_format=torch.contiguous_format)
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(warmup_iters):
                fn(self.static_in)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = fn(self.static_in)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape != self.static_in.shape:
            raise ValueError(
                f"A CUDA graph captured for inputs of shape {tuple(self.static_in.shape)} "
                f"was called with {tuple(x.shape)}."
            )
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out.clone()


def _expected(exc: Exception) -> bool:
    """Artifact problems are reported in a sentence; only surprises need a traceback."""
    from facegen_core.artifact import ArtifactError

    return isinstance(exc, ArtifactError)


def _warm_up_detector() -> None:
    """Load the face detector before the first upload (a model trained on aligned faces aligns
    every upload by default). Missing weights do not fail the load: align=false still works,
    and each aligned upload gets a 503 saying what the operator must install."""
    try:
        align.detect_faces(Image.new("RGB", (48, 48)))
    except align.DetectorUnavailableError as exc:
        log.error("Uploads cannot be aligned: %s Requests with align=false still work.", exc)
