"""DiffAugment's ops: each one's effect checked by value on tiny images, gradients flowing
through all of them, and the policy parser."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.augment import POLICIES, diff_augment, parse_policy


def _ramp(b: int = 6, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    """(b, c, h, w) of distinct values, so a shifted copy cannot match by accident."""
    return torch.arange(b * c * h * w, dtype=torch.float32).view(b, c, h, w) / (b * c * h * w) + 0.1


def test_parse_policy() -> None:
    assert parse_policy("none") == () and parse_policy("  ") == ()
    assert parse_policy("color, cutout") == ("color", "cutout")
    assert parse_policy(",".join(POLICIES)) == POLICIES
    with pytest.raises(ValueError, match="'blur'"):
        parse_policy("color,blur")


def test_an_empty_policy_returns_the_input() -> None:
    x = _ramp()
    assert diff_augment(x, ()) is x


def test_color_on_a_grey_constant_image_is_one_brightness_shift_per_image() -> None:
    # Saturation and contrast scale differences from a mean; a constant grey image has none,
    # so all that is left is brightness: one shift in [-0.5, 0.5) for all of an image's pixels.
    torch.manual_seed(0)
    x = torch.full((16, 3, 8, 8), 0.2)
    shift = diff_augment(x, ("color",)) - x  # (16, 3, 8, 8)
    per_image = shift.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-6)
    assert per_image.abs().max() <= 0.5 and per_image[:, 0].std() > 0.05  # drawn per image


def test_translation_shifts_each_image_by_at_most_an_eighth_with_a_zero_border() -> None:
    torch.manual_seed(1)
    x = _ramp(b=12)
    out = diff_augment(x, ("translation",))
    padded = F.pad(x, [1, 1, 1, 1])  # (B, C, 10, 10): a shift of ±1 (8·0.125) brings in zeros
    shifts = []
    for i in range(x.shape[0]):
        matches = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(out[i], padded[i, :, 1 + dy : 9 + dy, 1 + dx : 9 + dx])
        ]
        assert len(matches) == 1, f"image {i} is no ±1-pixel shift of its input"
        shifts.append(matches[0])
    assert len(set(shifts)) > 1  # drawn per image


def test_cutout_zeroes_one_square_of_up_to_half_the_side_and_keeps_the_rest() -> None:
    torch.manual_seed(2)
    x = _ramp(b=32)
    out = diff_augment(x, ("cutout",))
    for i in range(x.shape[0]):
        cut = out[i, 0] == 0  # (8, 8); the ramp has no zeros of its own
        assert torch.equal(cut, (out[i] == 0).all(0))  # the same square in every channel
        rows, cols = cut.any(1).nonzero().flatten(), cut.any(0).nonzero().flatten()
        h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert 2 <= h <= 4 and 2 <= w <= 4 and int(cut.sum()) == h * w  # a rectangle, clipped at edges
        assert torch.equal(out[i][:, ~cut], x[i][:, ~cut])


def test_gradients_flow_through_every_op() -> None:
    torch.manual_seed(3)
    x = _ramp().requires_grad_()
    diff_augment(x, POLICIES).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_same_seed_gives_the_same_augmentation() -> None:
    x = _ramp()
    torch.manual_seed(4)
    a = diff_augment(x, POLICIES)
    torch.manual_seed(4)
    assert torch.equal(a, diff_augment(x, POLICIES))
