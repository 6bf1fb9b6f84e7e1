"""Which pixels of an aligned face came from the photo.

``facegen_core.align.warp_to_template`` fills what lies outside the photo with black. For
CelebA that is rare (a strongly tilted head near the edge); for the shared FairFace release,
cropped far tighter than CelebA's framing, it is about half of every 64×64 frame
(model_store/faces64/TRAINING.md, "Why not FairFace too"). A reconstruction loss or a PSNR
over those pixels would score the model on black borders no photo has; ``inside_photo``
leaves them out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def inside_photo(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) aligned faces -> bool (B, 1, H, W), True where the pixel is from the photo.

    Filled pixels are black in every channel. A 3×3 erosion drops isolated black pixels inside
    the photo (a JPEG's darkest hair) and takes 1 px off the filled region; a 7×7 dilation then
    grows it by 3, so it ends 2 px beyond the black: the band of near-black that the warp's
    bicubic sample and Lanczos resize smear across the photo's edge.
    """
    black = (images_u8.amax(dim=1, keepdim=True) == 0).float()  # (B, 1, H, W)
    core = -F.max_pool2d(-black, 3, stride=1, padding=1)  # erosion: runs of black >= 3×3 survive
    filled = F.max_pool2d(core, 7, stride=1, padding=3) > 0  # dilation by 3 px
    return ~filled


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) mean squared error over the pixels where ``mask`` (N, 1, H, W) is True, all channels;
    NaN for an image with no such pixel. ``a``, ``b``: (N, C, H, W) float."""
    m = mask.to(a.dtype)
    n = m.flatten(1).sum(1) * a.shape[1]  # (N,) pixels counted × channels
    return ((a - b) ** 2 * m).flatten(1).sum(1) / n
