"""The workloads (request kinds × concurrencies) and the timings of each mode.

=========  ===============================================  =====  ===============
key        request                                           faces  model op
=========  ===============================================  =====  ===============
gen1       POST /generate n=1, format png (one PNG)            1    decode
gen16      POST /generate n=16, format json (16 base64 PNGs)   16   decode
gen64      POST /generate n=64, format json (64 base64 PNGs)   64   decode
recon      POST /reconstruct, one 178×218 JPEG, format png      1    encode + decode
interp16   POST /interpolate steps=16 slerp, format apng       16   decode
=========  ===============================================  =====  ===============
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.loadgen import RequestSpec, Timing


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    op: str  # the model op whose batch sizes /metrics reports for it
    spec: RequestSpec
    concurrencies: tuple[int, ...]


@dataclass(frozen=True)
class Mode:
    name: str
    timing: Timing
    ceiling_s: float  # seconds per raw-decoder batch size, split over ceiling_rounds
    ceiling_rounds: int
    concurrencies: dict[str, tuple[int, ...]]


# gen1 includes 64: the first target check is stated at concurrency 64.
MODES = {
    "full": Mode(
        "full",
        Timing(
            warmup_s=3.0,
            max_warmup_s=60.0,
            duration_s=15.0,
            min_requests=30,
            max_window_s=90.0,
            drain_s=10.0,
        ),
        ceiling_s=10.0,
        ceiling_rounds=4,
        concurrencies={
            "gen1": (1, 8, 32, 64, 128),
            "gen16": (1, 8, 32, 128),
            "recon": (1, 8, 32, 128),
            "interp16": (1, 8, 32, 128),
            "gen64": (1, 4),
        },
    ),
    "short": Mode(
        "short",
        Timing(
            warmup_s=1.0,
            max_warmup_s=5.0,
            warmup_round=False,
            duration_s=3.0,
            min_requests=5,
            max_window_s=6.0,
            drain_s=2.0,
        ),
        ceiling_s=2.0,
        ceiling_rounds=2,
        concurrencies={"gen1": (1, 64), "gen16": (4,), "recon": (8,), "interp16": (4,)},
    ),
    "smoke": Mode(
        "smoke",
        Timing(warmup_s=0.2, max_warmup_s=5.0, duration_s=0.5, min_requests=2, max_window_s=5.0, drain_s=5.0),
        ceiling_s=0.2,
        ceiling_rounds=1,
        concurrencies={"gen1": (1, 4), "gen16": (2,), "recon": (2,), "interp16": (2,)},
    ),
}
# On a GPU the model is no longer the bottleneck at n=1, so measure faces/s with big requests.
GPU_GEN64 = (1, 4, 16, 32)


def upload_image(face: np.ndarray) -> bytes:
    """A (H, W, C) uint8 face scaled to CelebA's aligned 178×218 and saved as a JPEG (quality 90).

    Real uploads are photos bigger than the model's input, so the service's decode, crop
    and Lanczos resize are part of what /reconstruct costs.
    """
    img = Image.fromarray(face.squeeze(-1) if face.shape[-1] == 1 else face)
    img = img.resize((178, 218), Image.Resampling.BICUBIC).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def build_workloads(
    mode: Mode, upload: bytes, gpu: bool = False, keys: list[str] | None = None
) -> list[Workload]:
    """The mode's workloads (all of ``keys`` instead, when given; gen64 runs at 1 and 4 then)."""
    specs = {
        "gen1": (
            "generate n=1",
            "decode",
            RequestSpec("/generate", 1, {"n": 1, "seed": 0, "temperature": 1.0, "format": "png"}, ("seed",)),
        ),
        "gen16": (
            "generate n=16",
            "decode",
            RequestSpec(
                "/generate", 16, {"n": 16, "seed": 0, "temperature": 1.0, "format": "json"}, ("seed",)
            ),
        ),
        "gen64": (
            "generate n=64",
            "decode",
            RequestSpec(
                "/generate", 64, {"n": 64, "seed": 0, "temperature": 1.0, "format": "json"}, ("seed",)
            ),
        ),
        "recon": (
            "reconstruct 1 image",
            "encode",
            RequestSpec(
                "/reconstruct",
                1,
                files=(("image", "face.jpg", upload, "image/jpeg"),),
                form={"format": "png"},
            ),
        ),
        "interp16": (
            "interpolate steps=16",
            "decode",
            RequestSpec(
                "/interpolate",
                16,
                {"start": {"seed": 0}, "end": {"seed": 1}, "steps": 16, "method": "slerp", "format": "apng"},
                ("start.seed", "end.seed"),
            ),
        ),
    }
    concurrencies = dict(mode.concurrencies)
    if gpu:
        concurrencies["gen64"] = GPU_GEN64 if mode.name == "full" else (4,)
    for key in keys or ():
        if key not in specs:
            raise ValueError(f"Unknown workload {key!r}; use one of {', '.join(specs)}.")
        concurrencies.setdefault(key, (1, 4))
    chosen = [k for k in concurrencies if keys is None or k in keys]
    return [Workload(key, *specs[key], concurrencies=tuple(concurrencies[key])) for key in chosen]
