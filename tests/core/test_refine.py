"""facegen_core.refine: the photo's pixels of an aligned face, and per-face latent refinement."""

from __future__ import annotations

import math

import torch

from facegen_core.config import ModelConfig
from facegen_core.networks import Decoder
from facegen_core.preprocess import model_to_uint8, uint8_to_model
from facegen_core.refine import (
    BETAS,
    EPS,
    RefineState,
    adam_step,
    inside_photo,
    latent_gradient,
    masked_mse,
    refine_latents,
)
from tests.nets import randomise_batchnorm


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


# ---------------------------------------------------------------- per-face latent refinement


def _decoder(seed: int = 0) -> tuple[torch.nn.Module, int, int]:
    """A tiny seeded decoder in eval mode (random BatchNorm statistics), its latent_dim and side."""
    cfg = ModelConfig.tiny()
    torch.manual_seed(seed)
    dec = Decoder(cfg)
    randomise_batchnorm(dec)
    return dec.eval(), cfg.latent_dim, cfg.image_size


def _targets(n: int, side: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)


def _loss(dec: torch.nn.Module, z: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return masked_mse(dec(z), uint8_to_model(faces), inside_photo(faces))


def test_refinement_lowers_each_faces_error_and_zero_steps_keep_the_start() -> None:
    """Faces the decoder can draw (from known latents), refined from latents beside them."""
    dec, dim, _ = _decoder()
    g = torch.Generator().manual_seed(2)
    z_true = torch.randn(4, dim, generator=g)
    with torch.no_grad():
        faces = model_to_uint8(dec(z_true))  # (4, C, H, W)
    z0 = z_true + 3 * torch.randn(4, dim, generator=g)
    assert torch.equal(refine_latents(dec, faces, z0, 0), z0)
    z = refine_latents(dec, faces, z0, 40, lr=0.1)
    before, after = _loss(dec, z0, faces), _loss(dec, z, faces)
    assert bool((after < 0.5 * before).all()), (before, after)


def test_adam_step_is_torch_adam_with_a_half_cosine_schedule() -> None:
    """The hand-written Adam (per-row state and schedule) computes what torch.optim.Adam does."""
    dec, dim, side = _decoder()
    faces = _targets(3, side)
    x, mask = uint8_to_model(faces), inside_photo(faces)
    z0 = torch.randn(3, dim, generator=torch.Generator().manual_seed(3))
    steps, lr = 12, 0.05
    ours = refine_latents(dec, faces, z0, steps, lr)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr, betas=BETAS, eps=EPS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    for _ in range(steps):
        opt.zero_grad()
        masked_mse(dec(z), x, mask).sum().backward()
        opt.step()
        sched.step()
    torch.testing.assert_close(ours, z.detach(), rtol=1e-5, atol=1e-5)


def test_a_row_refines_the_same_alone_or_with_others_and_whatever_its_steps() -> None:
    """Rows of one batch asking for different step counts each get what they get alone."""
    dec, dim, side = _decoder()
    faces = _targets(3, side)
    x, mask = uint8_to_model(faces), inside_photo(faces)
    z0 = torch.randn(3, dim, generator=torch.Generator().manual_seed(4))
    steps = torch.tensor([0, 5, 9])
    state = RefineState.start(z0, steps)
    while bool(state.active.any()):
        rows = state.active.nonzero().flatten()
        adam_step(state, latent_gradient(dec, state.z[rows], x[rows], mask[rows]), rows)
    assert state.done.tolist() == steps.tolist()
    for i, k in enumerate(steps.tolist()):
        alone = refine_latents(dec, faces[i : i + 1], z0[i : i + 1], k)
        torch.testing.assert_close(state.z[i : i + 1], alone, rtol=1e-5, atol=1e-6)


def test_pixels_outside_the_photo_do_not_pull_the_latent() -> None:
    dec, dim, side = _decoder()
    faces = _targets(2, side)
    faces[:, :, :, : side // 2] = 0  # the left half filled by the warp
    z0 = torch.randn(2, dim, generator=torch.Generator().manual_seed(5))
    mask = inside_photo(faces)
    assert not bool(mask[..., : side // 2].any())
    a = refine_latents(dec, faces, z0, 5, mask=mask)
    b = refine_latents(dec, torch.where(mask, faces, torch.full_like(faces, 200)), z0, 5, mask=mask)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # other pixels there move nothing


def test_a_row_without_photo_pixels_gets_no_gradient() -> None:
    """Padding rows of a fixed-shape pass (all-zero mask) must not move, nor be NaN."""
    dec, dim, side = _decoder()
    z = torch.randn(2, dim)
    x = torch.rand(2, 3, side, side) * 2 - 1
    mask = torch.zeros(2, 1, side, side, dtype=torch.bool)
    mask[0] = True
    g = latent_gradient(dec, z, x, mask)
    assert bool(torch.isfinite(g).all()) and bool(g[0].abs().sum() > 0) and bool((g[1] == 0).all())
