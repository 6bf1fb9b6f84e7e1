"""Reconstruction quality: PSNR and SSIM between image batches, pure torch.

Both take (N, C, H, W) images, uint8 in [0, 255] or float in [0, 1], compute one value per
image and average over images. SSIM follows Wang et al. (2004), "Image Quality Assessment:
From Error Visibility to Structural Similarity", eq. 13 with the paper's settings: an 11×11
Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, computed per channel over the
'valid' window positions (as the authors' reference ssim_index.m) and averaged over channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float64 [0, 1]; a float tensor is taken to be in [0, 1] already."""
    if x.dtype == torch.uint8:
        return x.double() / 255.0
    if not x.is_floating_point():
        raise ValueError(f"Images must be uint8 or floating point in [0, 1]; got {x.dtype}.")
    return x.double()


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"Both image batches must be (N, C, H, W) of one shape; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    return to_unit(a), to_unit(b)


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB, 10·log10(1 / MSE) for a peak of 1; inf where the images are equal."""
    x, y = _pair(a, b)
    mse = ((x - y) ** 2).flatten(1).mean(1)  # (N,)
    return 10.0 * torch.log10(1.0 / mse)  # 1/0 = inf: identical images


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the per-image PSNR (dB)."""
    return float(psnr_per_image(a, b).mean())


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size,) normalised 1-D Gaussian; the 2-D window is its outer product (separable)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(r**2) / (2 * sigma**2))
    return w / w.sum()


def _local_mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted mean over 'valid' windows: (N, C, H, W) -> (N, C, H-k+1, W-k+1)."""
    c = x.shape[1]
    k = w.numel()
    x = F.conv2d(x, w.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)  # along H
    return F.conv2d(x, w.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)  # along W


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) mean SSIM (Wang et al. 2004, eq. 13), averaged over window positions and channels."""
    x, y = _pair(a, b)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels; got {tuple(x.shape[-2:])}."
        )
    w = gaussian_window().to(x.device)
    c1, c2 = (SSIM_K1 * 1.0) ** 2, (SSIM_K2 * 1.0) ** 2  # dynamic range L = 1
    mu_x, mu_y = _local_mean(x, w), _local_mean(y, w)
    var_x = _local_mean(x * x, w) - mu_x**2
    var_y = _local_mean(y * y, w) - mu_y**2
    cov = _local_mean(x * y, w) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2, 3))  # mean over positions, then channels (equal sizes)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over images of the per-image SSIM."""
    return float(ssim_per_image(a, b).mean())
