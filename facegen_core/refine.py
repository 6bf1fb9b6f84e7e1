"""Per-face refinement of an encoded latent: z fitted to the photo through the frozen decoder.

The encoder's mean μ(x) is an amortised guess: one network pass for every face. The decoder can
draw a face better than μ(x) finds it; the difference is the amortisation gap (Cremer et al.
2018, "Inference Suboptimality in Variational Autoencoders"), measured by
``training.inversion_gap``: on faces64 v2, CelebA validation faces reconstruct at 20.2 dB from
μ(x) and about 23 dB from a latent optimised for each face. Growing or retraining the encoder
alone did not close it (model_store/faces64/TRAINING.md). Refinement closes it per face at
request time, at the cost of ``steps`` decoder forward and backward passes per face, by the
recipe of GAN inversion (Zhu et al. 2016, "Generative Visual Manipulation on the Natural Image
Manifold": start from the encoder's guess, then optimise z):

    z* = argmin_z  Σ_pixels∈photo (Dec(z) - x)² / |photo|,   Adam from z = μ(x)

The loss counts only the pixels that came from the photo (``inside_photo``): an aligned upload
is filled with black where the warp leaves the photo, and fitting those pixels would draw black
borders into the face.

Everything here is row-independent by construction, so a face refines to the same latent alone
or batched with strangers (given fixed-shape passes, service/runner.py): the loss is a *sum* of
per-face losses (one face's gradient does not depend on another's), and Adam's update is
elementwise with per-row state (``RefineState``). Adam is written out rather than taken from
``torch.optim`` for two reasons: each row has its own step count and learning-rate schedule (rows
asking for different numbers of steps share a batch), and the state is carried between calls,
so the service can run a long refinement in slices between other requests' batches and get the
very same floats as in one go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from facegen_core.preprocess import uint8_to_model

LEARNING_RATE = 0.05  # Adam's step in latent units; the latents' scale is ~1 (q(z|x), prior)
BETAS = (0.9, 0.999)
EPS = 1e-8


def inside_photo(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) aligned faces -> bool (B, 1, H, W), True where the pixel is from the photo.

    ``facegen_core.align.warp_to_template`` fills what lies outside the photo with black. For
    CelebA that is rare (a strongly tilted head near the edge); for the shared FairFace release,
    cropped far tighter than CelebA's framing, it is about half of every 64×64 frame.

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


@dataclass
class RefineState:
    """Rows being refined: the latents and Adam's moments, all float32 (N, D); ``done`` and
    ``total`` (N,) int64 count each row's steps taken and asked for."""

    z: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor
    done: torch.Tensor
    total: torch.Tensor

    @classmethod
    def start(cls, z0: torch.Tensor, steps: torch.Tensor) -> RefineState:
        z = z0.detach().float().clone()
        return cls(z, torch.zeros_like(z), torch.zeros_like(z), torch.zeros_like(steps), steps.clone())

    @property
    def active(self) -> torch.Tensor:
        """(N,) bool: rows with steps left."""
        return self.done < self.total


def latent_gradient(
    decoder: torch.nn.Module, z: torch.Tensor, x: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """∂/∂z of Σ_rows masked_mse(Dec(z), x): (b, D) for z (b, D), x (b, C, H, W) in [-1, 1] and
    mask (b, 1, H, W). A row whose mask is empty (padding) gets a zero gradient. The decoder
    must be in eval mode (BatchNorm's running statistics: rows do not see each other). Callable
    under ``torch.inference_mode`` (the service's passes, evaluation): autograd is turned back on
    here, and the inputs cloned, since a tensor made in inference mode cannot be saved for backward."""
    with torch.inference_mode(False), torch.enable_grad():
        zz = z.detach().float().clone().requires_grad_(True)
        x, m = x.clone(), mask.float().clone()
        n = (m.flatten(1).sum(1) * x.shape[1]).clamp_min(1.0)  # (b,)
        per_row = ((decoder(zz).float() - x.float()) ** 2 * m).flatten(1).sum(1) / n  # (b,)
        (grad,) = torch.autograd.grad(per_row.sum(), zz)
    return grad


def adam_step(state: RefineState, grad: torch.Tensor, rows: torch.Tensor, lr: float = LEARNING_RATE) -> None:
    """One Adam step (Kingma & Ba 2015, Algorithm 1) for the rows ``rows`` (k,) of ``state``,
    with their gradients ``grad`` (k, D). The step size decays per row on a half cosine from
    ``lr`` to 0 at its last step (Loshchilov & Hutter 2017, without restarts): early steps move
    far, the last ones settle."""
    b1, b2 = BETAS
    m = b1 * state.m[rows] + (1 - b1) * grad
    v = b2 * state.v[rows] + (1 - b2) * grad * grad
    t = (state.done[rows] + 1).double()  # (k,) Adam's step count, 1-based
    total = state.total[rows].double()
    rate = lr * 0.5 * (1 + torch.cos(math.pi * (t - 1) / total))  # (k,)
    scale = (rate * torch.sqrt(1 - b2**t) / (1 - b1**t)).float()[:, None]  # bias corrections folded in
    state.z[rows] = state.z[rows] - scale * m / (v.sqrt() + EPS * torch.sqrt(1 - b2**t).float()[:, None])
    state.m[rows] = m
    state.v[rows] = v
    state.done[rows] += 1


def refine_latents(
    decoder: torch.nn.Module,
    images_u8: torch.Tensor,
    z0: torch.Tensor,
    steps: int,
    lr: float = LEARNING_RATE,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """z (N, D) refined for ``steps`` steps from z0 (N, D) against uint8 faces (N, C, H, W), as
    one batch (training's evaluation; the service runs the same steps in fixed-shape passes)."""
    x = uint8_to_model(images_u8)  # (N, C, H, W) in [-1, 1]
    mask = inside_photo(images_u8) if mask is None else mask
    state = RefineState.start(z0, torch.full((z0.shape[0],), steps, dtype=torch.long))
    rows = torch.arange(z0.shape[0])
    for _ in range(steps):
        adam_step(state, latent_gradient(decoder, state.z, x, mask), rows, lr)
    return state.z
