"""Grids of uint8 images, used for the artifact's pictures and the service's PNG grids."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def grid_columns(n: int) -> int:
    """ceil(√n): the column count of every grid facegen draws."""
    return max(1, math.ceil(math.sqrt(n)))


def make_grid(images: np.ndarray, ncols: int | None = None, padding: int = 2, fill: int = 0) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (rows·(H+p)+p, cols·(W+p)+p, C), row-major order."""
    n, h, w, c = images.shape
    cols = ncols or grid_columns(n)
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, c), fill, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        out[y : y + h, x : x + w] = images[i]
    return out


def to_pil(arr: np.ndarray) -> Image.Image:
    """uint8 (H, W, 1|3) -> PIL 'L' or 'RGB'."""
    return Image.fromarray(arr[:, :, 0], "L") if arr.shape[2] == 1 else Image.fromarray(arr, "RGB")
