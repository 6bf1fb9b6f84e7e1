"""Latent sampling and paths, shared so a seed means the same face in training and serving."""

from __future__ import annotations

import torch


def latent_for_seed(seed: int, latent_dim: int, temperature: float = 1.0) -> torch.Tensor:
    """z ~ N(0, temperature² I) drawn from its own CPU generator: (latent_dim,) float32.

    One generator per seed (not one per batch) is what lets face i of a grid, seeded
    ``seed + i``, be fetched alone with the same pixels; CPU because CUDA's generator
    yields different numbers for the same seed.
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(latent_dim, generator=g) * float(temperature)


def latents_for_seeds(seed: int, n: int, latent_dim: int, temperature: float = 1.0) -> torch.Tensor:
    """(n, latent_dim): row i from seed + i."""
    return torch.stack([latent_for_seed(seed + i, latent_dim, temperature) for i in range(n)])


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight line: a, b (D,), t (T,) -> (T, D)."""
    t = t[:, None]
    return (1.0 - t) * a[None] + t * b[None]


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Great-circle path (Shoemake 1985; White 2016 for GAN latents): a, b (D,), t (T,) -> (T, D).

    Keeps intermediate points at the norm a Gaussian latent actually has, where lerp
    cuts through the low-density centre and gives washed-out middles. Falls back to lerp
    for (anti)parallel vectors, where the arc is undefined.
    """
    a64, b64 = a.double(), b.double()
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if omega.abs() < 1e-6 or (torch.pi - omega).abs() < 1e-6:
        return lerp(a, b, t)
    t64 = t.double()[:, None]
    so = torch.sin(omega)
    out = torch.sin((1.0 - t64) * omega) / so * a64[None] + torch.sin(t64 * omega) / so * b64[None]
    return out.to(a.dtype)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
    """``steps`` points from a to b, both ends included: (steps, D)."""
    if steps < 2:
        raise ValueError("An interpolation needs at least 2 steps (both ends).")
    t = torch.linspace(0.0, 1.0, steps)
    if method == "slerp":
        return slerp(a, b, t)
    if method == "lerp":
        return lerp(a, b, t)
    raise ValueError(f"Unknown interpolation method {method!r}; use 'slerp' or 'lerp'.")
