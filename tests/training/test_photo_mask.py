"""training.photo_mask: the pixels of an aligned face that came from the photo."""

from __future__ import annotations

import math

import torch

from training.photo_mask import inside_photo, masked_mse


def _faces(n: int = 2, side: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)


def test_a_photo_without_border_counts_everywhere() -> None:
    assert bool(inside_photo(_faces()).all())


def test_the_filled_border_and_a_2px_band_beside_it_do_not_count() -> None:
    x = _faces()
    x[:, :, :5, :] = 0  # rows 0-4 outside the photo
    keep = inside_photo(x)  # (2, 1, 16, 16)
    assert keep.shape == (2, 1, 16, 16)
    assert not keep[:, :, :7].any()  # the border and the band the warp smears
    assert bool(keep[:, :, 7:].all())


def test_an_isolated_black_pixel_in_the_photo_still_counts() -> None:
    x = _faces()
    x[0, :, 8, 8] = 0  # the darkest pixel of someone's hair
    x[1, 0, 4:8, 4:8] = 0  # black in one channel only: a colour, not a fill
    assert bool(inside_photo(x).all())


def test_masked_mse_counts_only_the_masked_pixels() -> None:
    a = torch.zeros(2, 3, 4, 4)
    b = torch.zeros(2, 3, 4, 4)
    b[:, :, :, :2] = 1.0  # error only in the left half
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[0, :, :, 2:] = True  # image 0: right half only -> no error
    mask[1, :, :, :] = True  # image 1: everything -> half the pixels wrong
    mse = masked_mse(a, b, mask)
    assert mse.tolist() == [0.0, 0.5]
    assert math.isnan(float(masked_mse(a, b, torch.zeros_like(mask))[0]))
