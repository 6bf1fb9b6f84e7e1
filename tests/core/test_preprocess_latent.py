"""Crop boxes, mode conversions, latent seeding and interpolation paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from facegen_core.images import grid_columns, make_grid
from facegen_core.latent import interpolate, noise_for_seed, noise_for_seeds, slerp
from facegen_core.preprocess import crop_box, model_to_uint8, to_model_array, uint8_to_model


def test_celeba_box_matches_the_paper_at_full_and_half_size() -> None:
    assert crop_box(178, 218, "celeba") == (15, 40, 163, 188)
    assert crop_box(89, 109, "celeba") == (7, 20, 81, 94)  # ../shared/data/README.md
    # Other aspect ratios fall back to the centred square.
    assert crop_box(100, 50, "celeba") == (25, 0, 75, 50)
    assert crop_box(40, 30, "none") == (0, 0, 40, 30)


def test_to_model_array_converts_modes_and_sizes() -> None:
    rgba = Image.new("RGBA", (50, 50), (255, 0, 0, 0))  # fully transparent -> white
    out = to_model_array(rgba, 16, 3, "center")
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8 and (out == 255).all()
    grey16 = Image.fromarray(np.full((20, 20), 65535, np.uint16))
    assert (to_model_array(grey16, 8, 1, "none") == 255).all()
    pal = Image.new("P", (10, 10), 3)
    assert to_model_array(pal, 8, 3, "none").shape == (8, 8, 3)


def test_uint8_round_trip_is_exact() -> None:
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(model_to_uint8(uint8_to_model(x)), x)


def test_seed_rows_are_independent_of_n() -> None:
    grid = noise_for_seeds(10, 4, 16, 0.7)
    assert torch.equal(grid[2], noise_for_seed(12, 16, 0.7))
    assert not torch.equal(grid[0], grid[1])


def test_slerp_keeps_ends_and_norm() -> None:
    a, b = noise_for_seed(1, 128), noise_for_seed(2, 128)
    path = interpolate(a, b, 9, "slerp")
    assert path.shape == (9, 128)
    assert torch.allclose(path[0], a, atol=1e-5) and torch.allclose(path[-1], b, atol=1e-5)
    # On a great circle between near-equal norms the middle keeps the norm; lerp shrinks it.
    mid_lerp = interpolate(a, b, 9, "lerp")[4]
    assert path[4].norm() > mid_lerp.norm() * 1.2
    same = slerp(a, a, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(same, a.expand(3, -1))
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(a, b, 1)


def test_grid_geometry() -> None:
    imgs = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(5)])
    assert grid_columns(5) == 3 and grid_columns(64) == 8 and grid_columns(1) == 1
    g = make_grid(imgs, padding=1)
    assert g.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert (g[1:5, 6:10] == 1).all() and (g[6:10, 1:5] == 3).all()
