"""The ceiling: the raw decoder in a loop, plus the server's PNG encoding, with no HTTP.

This is what the service could deliver if batching, HTTP and JSON cost nothing: a batch
of latents through the decoder, to uint8, each image encoded as the service encodes it
(``service.imaging.encode_png`` with the same text chunks and compress level).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from facegen_core.device import autocast, set_memory_format
from facegen_core.networks import Decoder
from facegen_core.preprocess import model_to_uint8
from service.runner import lane_pool, run_passes
from service.settings import Settings

PngEncoder = Callable[[np.ndarray, int], bytes]  # (H, W, C) uint8, seed -> PNG bytes


def png_encoder(model: str, version: int, compress_level: int) -> tuple[PngEncoder, str]:
    """The service's own PNG encoder when importable, else Pillow at the same compress level."""
    try:
        from service.imaging import encode_png, png_text
    except ImportError:
        import io

        from PIL import Image

        def fallback(image: np.ndarray, seed: int) -> bytes:
            buf = io.BytesIO()
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
                buf, "PNG", compress_level=compress_level
            )
            return buf.getvalue()

        return fallback, f"Pillow PNG, compress_level={compress_level} (service.imaging not importable)"

    def encode(image: np.ndarray, seed: int) -> bytes:
        return encode_png(image, png_text(model, version, seed), compress_level)

    return encode, f"service.imaging.encode_png, compress_level={compress_level}"


def lay_out_as_served(decoder: Decoder, device_type: str) -> str:
    """Lay ``decoder`` out as the service would on ``device_type`` (its settings read from this
    environment, which the bench's servers inherit), so the ceiling runs the kernels the servers
    run. Returns the layout."""
    fmt = Settings().effective_decoder_memory_format(device_type)
    set_memory_format(decoder, memory_format=fmt)
    return fmt


@dataclass
class RawResult:
    batch_size: int
    rows_per_pass: int  # the decoder ran the batch in passes of this many rows
    batches: int
    images_per_s: float
    batch_p50_ms: float  # decoder + uint8 + PNG for one whole batch
    forward_ms_per_image: float
    png_ms_per_image: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RawBench:
    """Times decode + uint8 + PNG per batch; ``run`` may be called again to add rounds."""

    def __init__(
        self,
        decoder: Decoder,
        latent_dim: int,
        device: torch.device,
        precision: str,
        encode: PngEncoder,
        row_threads: int = 1,
    ) -> None:
        self.decoder, self.latent_dim, self.device = decoder, latent_dim, device
        self.precision, self.encode = precision, encode
        # The service's row lanes (service/runner.py), for batches run in passes as it runs them.
        self.row_threads = row_threads
        self.lanes = lane_pool(row_threads) if row_threads > 1 else None
        # (batch, rows per forward pass) -> [(forward s, png s)] per batch
        self.times: dict[tuple[int, int], list[tuple[float, float]]] = {}

    def close(self) -> None:
        """Stop the row lanes (the servers measured next need the cores)."""
        if self.lanes is not None:
            self.lanes.shutdown()
            self.lanes = None

    def _forward(self, z: torch.Tensor, chunk: int) -> torch.Tensor:
        """The decoder over z in passes of ``chunk`` rows, the last padded with zeros, on the
        row lanes, exactly as the service runs it (``service.runner.run_passes``: fixed-shape
        passes make a face's pixels independent of what it was batched with)."""
        if chunk >= z.shape[0]:
            return self.decoder(z)
        return run_passes(self.decoder, z, chunk, self.lanes, self.device, self.precision)

    def _batch(self, z: torch.Tensor, chunk: int) -> tuple[float, float]:
        t = time.perf_counter()
        with autocast(self.device, self.precision):
            x = self._forward(z, chunk)  # (B, C, H, W) in [-1, 1]
        images = model_to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C); syncs the GPU
        t_fwd = time.perf_counter()
        for j in range(images.shape[0]):
            self.encode(images[j], j)
        return t_fwd - t, time.perf_counter() - t_fwd

    def run(
        self,
        batch_size: int,
        duration_s: float,
        chunk: int = 0,
        min_batches: int = 2,
        warmup_batches: int = 1,
    ) -> None:
        """Batches of ``batch_size`` back to back for ``duration_s`` (and at least ``min_batches``),
        each decoded in one pass, or in passes of ``chunk`` rows when 0 < chunk < batch_size."""
        chunk = chunk if 0 < chunk < batch_size else batch_size
        gen = torch.Generator().manual_seed(batch_size)
        z = torch.randn(batch_size, self.latent_dim, generator=gen).to(self.device)  # (B, latent_dim)
        times = self.times.setdefault((batch_size, chunk), [])
        with torch.inference_mode():
            for _ in range(warmup_batches):
                self._batch(z, chunk)
            begin, n = time.perf_counter(), 0
            while n < min_batches or time.perf_counter() - begin < duration_s:
                times.append(self._batch(z, chunk))
                n += 1

    def result(self, batch_size: int, chunk: int = 0) -> RawResult:
        chunk = chunk if 0 < chunk < batch_size else batch_size
        times = self.times[(batch_size, chunk)]
        fwd = np.array([f for f, _ in times])
        png = np.array([p for _, p in times])
        n = len(times)
        return RawResult(
            batch_size=batch_size,
            rows_per_pass=chunk,
            batches=n,
            images_per_s=n * batch_size / float((fwd + png).sum()),
            batch_p50_ms=float(np.median(fwd + png)) * 1e3,
            forward_ms_per_image=float(fwd.sum()) / (n * batch_size) * 1e3,
            png_ms_per_image=float(png.sum()) / (n * batch_size) * 1e3,
        )


def measure_ceiling(
    bench: RawBench, max_batch: int, chunk: int, duration_s: float, rounds: int = 3
) -> dict[str, RawResult]:
    """Batch 1, ``max_batch`` in one pass, and ``max_batch`` in passes of ``chunk`` rows (when
    that differs), alternated over ``rounds`` so that drift in the machine's load (it is
    shared) hits all alike and their ratios, like the raw gain, stay honest."""
    chunked = 0 < chunk < max_batch
    for _ in range(rounds):
        bench.run(1, duration_s / rounds)
        bench.run(max_batch, duration_s / rounds)
        if chunked:
            bench.run(max_batch, duration_s / rounds, chunk)
    out = {"batch_1": bench.result(1), "batch_max": bench.result(max_batch)}
    if chunked:
        out["batch_max_chunked"] = bench.result(max_batch, chunk)
    return out
