"""The refine op's rows: a face and its refinement state, as one numpy record per row.

Refinement (facegen_core.refine) runs many decoder passes per face. The service runs it as a
batched op like encode and decode, but in slices: each model call advances rows by as many
steps as fit in ``FACEGEN_REFINE_SLICE_MS`` (only as many rows as one step of them fits in it)
and returns all the rows with their Adam state, and the request resubmits the rows that have
steps left. Other requests' batches run between
slices (the batcher serves its ops oldest-first), a request past its deadline or whose client
has gone stops at the next slice, and because the state travels exactly (float32 in, float32
out) the refined latent is the same however the steps were sliced.
"""

from __future__ import annotations

import numpy as np


def refine_dtype(image_size: int, channels: int, latent_dim: int) -> np.dtype:
    """One row: the model's uint8 input (S, S, C), the latent z and Adam's moments m, v (D,),
    steps done and asked for."""
    d = (latent_dim,)
    return np.dtype(
        [
            ("image", np.uint8, (image_size, image_size, channels)),
            ("z", np.float32, d),
            ("m", np.float32, d),
            ("v", np.float32, d),
            ("done", np.int32),
            ("total", np.int32),
        ]
    )


def start_rows(images: np.ndarray, z0: np.ndarray, steps: int) -> np.ndarray:
    """Rows (N,) for uint8 images (N, S, S, C) starting from latents z0 (N, D): ``steps`` each."""
    n, size, _, channels = images.shape
    rows = np.zeros(n, refine_dtype(size, channels, z0.shape[1]))
    rows["image"] = images
    rows["z"] = z0
    rows["total"] = steps
    return rows


def unfinished(rows: np.ndarray) -> np.ndarray:
    """(N,) bool: rows with steps left."""
    return np.asarray(rows["done"] < rows["total"])
