"""SSIM and PSNR cross-checked against scikit-image's reference implementations (the
hand-computed cases are in test_evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from training.metrics_image import psnr_per_image, ssim_per_image


def _faces_like(seed: int, n: int = 3, c: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth uint8 images and noisy, shifted copies: SSIM well inside (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(n, c, 8, 8, generator=g), size=size, mode="bilinear")
    noisy = base + 0.08 * torch.randn(n, c, size, size, generator=g) + 0.03
    to_u8 = lambda t: (t.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    return to_u8(base), to_u8(noisy)


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """The paper's settings: an 11×11 Gaussian window of sigma 1.5 (truncate=3.5 makes it
    11 wide), population covariances, data range 1, per channel, averaged."""
    return float(
        structural_similarity(
            a,
            b,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
    )


@pytest.mark.parametrize(("seed", "channels"), [(0, 3), (1, 1), (2, 3)])
def test_ssim_matches_scikit_image(seed: int, channels: int) -> None:
    a, b = _faces_like(seed, c=channels)
    ours = ssim_per_image(a, b)  # (N,)
    for i in range(a.shape[0]):
        want = _skimage_ssim(a[i].double().numpy() / 255, b[i].double().numpy() / 255)
        assert 0.1 < want < 0.99
        assert ours[i].item() == pytest.approx(want, abs=1e-9)


def test_psnr_matches_scikit_image() -> None:
    a, b = _faces_like(3)
    ours = psnr_per_image(a, b)
    for i in range(a.shape[0]):
        want = peak_signal_noise_ratio(a[i].numpy(), b[i].numpy(), data_range=255)
        assert ours[i].item() == pytest.approx(want, abs=1e-9)
