"""Seeds -> PNG bytes, exactly as ``POST /generate {"seed": s, "n": 1}`` makes them.

Both peers call ``FaceHandler.handle`` with the seeds of one dynamic batch. In mode
``per-row`` it repeats facegen's work step for step (service/api/routes/generate.py and
service/runner.py): each seed's latent from ``LatentPrior.latents_for_seeds(seed, 1, ...)``,
the decoder in passes of one NCHW-contiguous row (facegen's CPU determinism contract), NaN
to 0, ``model_to_uint8``, and ``service.imaging.encode_png`` with the same text chunks and
zlib level, so the bytes, not only the pixels, are facegen's. In mode ``batched`` the batch
is decoded in one forward pass, as a framework user would write it. The artifact is loaded
with ``facegen_core.artifact.load_artifact`` (safetensors, checksums verified), never pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from facegen_core.artifact import load_artifact
from facegen_core.preprocess import model_to_uint8
from service.imaging import encode_png, png_text

MODES = ("per-row", "batched")
TEMPERATURE = 1.0  # what the bench's facegen requests ask for (bench/workloads.py gen1)


class FaceHandler:
    """One loaded artifact; ``handle(seeds)`` -> one PNG per seed, in order."""

    def __init__(
        self,
        artifact_dir: str | Path,
        mode: str = "per-row",
        png_level: int = 1,
        torch_threads: int | None = None,
        stats_path: str | Path | None = None,
    ) -> None:
        """``stats_path``: where to write ``{"calls", "rows"}`` after every call (rows per model
        call for a peer whose own metrics do not count them); ``torch_threads``: as facegen's
        FACEGEN_TORCH_THREADS (None: torch's default)."""
        if mode not in MODES:
            raise ValueError(f"Unknown peer mode {mode!r}; use one of {', '.join(MODES)}.")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        art = load_artifact(artifact_dir, "cpu")
        self.decoder = art.decoder.eval()
        self.prior = art.prior
        self.name, self.version = art.name, art.version
        self.latent_dim = art.config.latent_dim
        self.mode, self.png_level = mode, png_level
        self.stats_path = Path(stats_path) if stats_path else None
        self.calls = self.rows = 0

    def latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """(B, D) float32: row i is facegen's latent for ``{"seed": seeds[i], "n": 1}``."""
        return torch.cat(
            [self.prior.latents_for_seeds(int(s), 1, self.latent_dim, TEMPERATURE) for s in seeds]
        )

    def faces(self, z: torch.Tensor) -> np.ndarray:
        """(B, D) -> uint8 (B, H, W, C)."""
        with torch.inference_mode():
            if self.mode == "per-row":
                x = torch.cat([self.decoder(z[i : i + 1].contiguous()) for i in range(z.shape[0])])
            else:
                x = self.decoder(z.contiguous())  # (B, C, H, W) in [-1, 1], one pass
            x = torch.nan_to_num(x.float(), nan=0.0)
            return np.ascontiguousarray(model_to_uint8(x).permute(0, 2, 3, 1).numpy())

    def png(self, face: np.ndarray, seed: int) -> bytes:
        """facegen's n=1 PNG: ``png_text`` with n and temperature, as /generate writes them."""
        text = png_text(self.name, self.version, int(seed), n="1", temperature=f"{TEMPERATURE:g}")
        return encode_png(face, text, self.png_level)

    def handle(self, seeds: Sequence[int]) -> list[bytes]:
        faces = self.faces(self.latents(seeds))
        out = [self.png(f, s) for f, s in zip(faces, seeds, strict=True)]
        self.calls, self.rows = self.calls + 1, self.rows + len(seeds)
        if self.stats_path is not None:
            tmp = self.stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"calls": self.calls, "rows": self.rows}))
            os.replace(tmp, self.stats_path)  # atomic: the bench never reads half a file
        return out


def read_stats(path: Path) -> tuple[float, float] | None:
    """(calls, rows) a handler wrote to ``path``; (0, 0) before its first call."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return 0.0, 0.0
    except (OSError, ValueError):
        return None
    return float(d["calls"]), float(d["rows"])
