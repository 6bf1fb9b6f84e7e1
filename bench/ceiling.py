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

from facegen_core.device import autocast
from facegen_core.networks import Decoder
from facegen_core.preprocess import model_to_uint8

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


@dataclass
class RawResult:
    batch_size: int
    batches: int
    images_per_s: float
    batch_p50_ms: float  # decoder + uint8 + PNG for one whole batch
    forward_ms_per_image: float
    png_ms_per_image: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_raw(
    decoder: Decoder,
    latent_dim: int,
    batch_size: int,
    device: torch.device,
    precision: str,
    encode: PngEncoder,
    duration_s: float,
    min_batches: int = 3,
    warmup_batches: int = 2,
) -> RawResult:
    """Decode + PNG batches of ``batch_size`` back to back for ``duration_s`` (and ``min_batches``)."""
    gen = torch.Generator().manual_seed(batch_size)
    z = torch.randn(batch_size, latent_dim, generator=gen).to(device)  # (B, latent_dim)
    fwd: list[float] = []
    png: list[float] = []
    total: list[float] = []
    with torch.inference_mode():
        i = 0
        begin = time.perf_counter()
        while i < warmup_batches + min_batches or time.perf_counter() - begin < duration_s:
            if i == warmup_batches:
                fwd.clear()
                png.clear()
                total.clear()
                begin = time.perf_counter()
            t = time.perf_counter()
            with autocast(device, precision):
                x = decoder(z)  # (B, C, H, W) in [-1, 1]
            images = model_to_uint8(x).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, C); syncs
            t_fwd = time.perf_counter()
            for j in range(batch_size):
                encode(images[j], j)
            t_end = time.perf_counter()
            fwd.append(t_fwd - t)
            png.append(t_end - t_fwd)
            total.append(t_end - t)
            i += 1
    n = len(total)
    return RawResult(
        batch_size=batch_size,
        batches=n,
        images_per_s=n * batch_size / sum(total),
        batch_p50_ms=float(np.median(total)) * 1e3,
        forward_ms_per_image=sum(fwd) / (n * batch_size) * 1e3,
        png_ms_per_image=sum(png) / (n * batch_size) * 1e3,
    )
