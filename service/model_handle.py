"""A request's handle on the model: its two primitive ops, batched, timed and deadline-bound.

The handle runs nothing itself: the batcher queues the rows and the runner's thread computes.

``Model`` is built per request (``deps.ReadyModel``) around the shared batcher: it knows the
request's deadline and how to notice that its client has gone, and adds the queue and
inference time of each call to the request's Server-Timing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from service.batcher import Batcher
from service.middleware import RequestContext
from service.model_info import DECODE, ENCODE, REFINE, ModelInfo
from service.refining import start_rows, unfinished


@dataclass
class Model:
    info: ModelInfo
    batcher: Batcher
    ctx: RequestContext
    disconnected: Callable[[], Awaitable[bool]] | None = None
    fingerprint: str = ""  # the runner's: what beside the request fixes the output bytes (ETags)

    async def _run(self, op: str, rows: np.ndarray) -> np.ndarray:
        result = await self.batcher.run(op, rows, deadline=self.ctx.deadline, disconnected=self.disconnected)
        self.ctx.queue_s += result.queue_s
        self.ctx.inference_s += result.inference_s
        return result.output

    async def decode(self, latents: np.ndarray) -> np.ndarray:
        """float32 (N, latent_dim) -> uint8 faces (N, S, S, C)."""
        return await self._run(DECODE, np.ascontiguousarray(latents, np.float32))

    async def encode(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, S, S, C) -> mu, logvar, each float32 (N, latent_dim)."""
        stats = await self._run(ENCODE, images)  # (N, 2, latent_dim)
        return stats[:, 0], stats[:, 1]

    async def refine(self, images: np.ndarray, z0: np.ndarray, steps: int) -> np.ndarray:
        """Latents z0 (N, latent_dim) of uint8 faces (N, S, S, C) refined for ``steps`` steps each
        (facegen_core.refine), in slices (service/refining.py): float32 (N, latent_dim)."""
        rows = start_rows(images, np.ascontiguousarray(z0, np.float32), steps)
        while (left := unfinished(rows)).any():
            rows[left] = await self._run(REFINE, rows[left])
        return np.ascontiguousarray(rows["z"])
