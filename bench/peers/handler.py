"""Seeds -> PNG bytes, exactly as ``POST /generate {"seed": s, "n": 1}`` makes them.

Both peers call ``FaceHandler.handle`` with the seeds of one dynamic batch. In mode
``per-row`` it repeats facegen's work step for step (service/api/routes/generate.py and
service/runner.py): each seed's latent from ``LatentPrior.latents_for_seeds(seed, 1, ...)``,
the decoder in passes of one row (facegen's CPU determinism contract), laid out as the
service lays it out, NaN to 0, ``model_to_uint8``, and ``service.imaging.encode_png`` with the
same text chunks and zlib level, so the bytes, not only the pixels, are facegen's. In mode
``batched`` the batch is decoded in one forward pass, as a framework user would write it. The
artifact is loaded with ``facegen_core.artifact.load_artifact`` (safetensors, checksums
verified), never pickle.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from facegen_core.artifact import load_artifact
from facegen_core.device import serving_decoder_memory_format, set_memory_format
from facegen_core.preprocess import model_to_uint8
from service.imaging import encode_png, png_text

MODES = ("per-row", "batched")
STATS = struct.Struct("<QQ")  # the stats file: model calls, rows (uint64 little-endian)
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
        """``stats_path``: a file holding (calls, rows) after every call, for a peer whose own
        metrics do not count model calls (see ``read_stats``); ``torch_threads``: as facegen's
        FACEGEN_TORCH_THREADS (None: torch's default)."""
        if mode not in MODES:
            raise ValueError(f"Unknown peer mode {mode!r}; use one of {', '.join(MODES)}.")
        if torch_threads:
            torch.set_num_threads(torch_threads)
        art = load_artifact(artifact_dir, "cpu")
        self.decoder = art.decoder.eval()
        # Laid out as facegen's service lays it out on CPU (FACEGEN_DECODER_MEMORY_FORMAT's
        # default): every system runs the same kernels, and returns the same pixels.
        set_memory_format(self.decoder, memory_format=serving_decoder_memory_format("cpu"))
        self.prior = art.prior
        self.name, self.version = art.name, art.version
        self.latent_dim = art.config.latent_dim
        self.mode, self.png_level = mode, png_level
        self.calls = self.rows = 0
        self._stats: mmap.mmap | None = None
        if stats_path:
            # A shared memory map: counting costs two stores per call, no syscall (a file
            # rewritten per call cost ~1 ms of wall time per batch on the busy test machine).
            with open(stats_path, "w+b") as f:
                f.write(bytes(STATS.size))
                f.flush()
                self._stats = mmap.mmap(f.fileno(), STATS.size)

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
        if self._stats is not None:
            STATS.pack_into(self._stats, 0, self.calls, self.rows)
        return out


def read_stats(path: Path) -> tuple[float, float] | None:
    """(calls, rows) a handler counted in ``path``; None before the handler made the file.

    Read until two reads agree, so a read between the two stores of an update is not used."""
    last = None
    for _ in range(10):
        try:
            now = STATS.unpack(path.read_bytes()[: STATS.size])
        except (OSError, struct.error):
            return None
        if now == last:
            return float(now[0]), float(now[1])
        last = now
    return None
