"""Latent sampling and paths, shared so a seed means the same face in training and serving."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def noise_for_seed(seed: int, latent_dim: int, temperature: float = 1.0) -> torch.Tensor:
    """ε ~ N(0, temperature² I) drawn from its own CPU generator: (latent_dim,) float32. This is
    the seed's noise; its latent z is ``LatentPrior.from_noise(ε)`` (the same for the standard
    prior N(0, I)).

    One generator per seed (not one per batch) is what lets face i of a grid, seeded
    ``seed + i``, be fetched alone with the same pixels; CPU because CUDA's generator
    yields different numbers for the same seed.
    """
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(latent_dim, generator=g) * float(temperature)


def noise_for_seeds(seed: int, n: int, latent_dim: int, temperature: float = 1.0) -> torch.Tensor:
    """ε (n, latent_dim): row i is ``noise_for_seed(seed + i)``; ``LatentPrior.latents_for_seeds``
    maps it to the latents z."""
    return torch.stack([noise_for_seed(seed + i, latent_dim, temperature) for i in range(n)])


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


def _check_gaussian(mean: torch.Tensor, scale_tril: torch.Tensor) -> None:
    """Raise ValueError unless mean (D,) and scale_tril (D, D) describe a valid Gaussian."""
    d = mean.shape
    if mean.dim() != 1 or tuple(scale_tril.shape) != (d[0], d[0]):
        raise ValueError(
            f"Latent prior shapes mean {tuple(mean.shape)} and scale_tril "
            f"{tuple(scale_tril.shape)} do not fit together; want (D,) and (D, D)."
        )
    if not bool(torch.isfinite(scale_tril).all() and torch.isfinite(mean).all()):
        raise ValueError("The latent prior holds non-finite values.")
    if not bool((scale_tril.diagonal() > 0).all()) or not torch.equal(scale_tril, scale_tril.tril()):
        raise ValueError("Latent prior scale_tril must be lower-triangular with a positive diagonal.")


@dataclass(frozen=True)
class LatentPrior:
    """The distribution faces are sampled from: z = mean + scale_tril @ ε, with ε ~ N(0, I).

    The VAE's prior p(z) = N(0, I) is what Larsen et al. 2015 sample from. With the small KL
    weight that sharp reconstructions need, the encoder's aggregate posterior drifts far from
    it (the CPU-trained celeba64 v2's posterior means sit ~9 units off the origin), and the
    decoder fed N(0, I) draws makes smeared non-faces. Exporting fits a Gaussian to the
    encoder means of the training set ("ex-post density estimation", Ghosh et al. 2020,
    "From Variational to Deterministic Autoencoders", section 4; Dai & Wipf 2019 fit a
    second-stage model for the same reason) and samples from it instead. A seed still gives
    ε = noise_for_seed(seed), so temperature scales ε, and paths run in ε-space where
    slerp's "keep the Gaussian norm" argument holds.

    mean: (D,), scale_tril: (D, D) lower-triangular with a positive diagonal. ``None`` for
    both is N(0, I) exactly (no arithmetic, so artifacts without a fitted prior give
    bit-identical faces).
    """

    mean: torch.Tensor | None = None
    scale_tril: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.scale_tril is None):
            raise ValueError("A latent prior needs both mean and scale_tril, or neither.")
        if self.mean is not None and self.scale_tril is not None:
            _check_gaussian(self.mean, self.scale_tril)

    @property
    def is_standard(self) -> bool:
        return self.mean is None

    @classmethod
    def fit(cls, mu: torch.Tensor, jitter: float = 1e-5) -> LatentPrior:
        """Maximum-likelihood Gaussian of encoder means mu (N, D), N > D; ``jitter`` keeps
        the covariance positive definite when a latent dimension is unused."""
        mu = mu.detach().double()
        if mu.dim() != 2 or mu.shape[0] <= mu.shape[1]:
            raise ValueError(f"Fitting a latent prior needs more rows than dims, got {tuple(mu.shape)}.")
        mean = mu.mean(dim=0)
        cov = torch.cov(mu.T, correction=0) + jitter * torch.eye(mu.shape[1], dtype=mu.dtype)
        return cls(mean=mean.float(), scale_tril=torch.linalg.cholesky(cov).float())

    def from_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """ε (N, D) -> z (N, D)."""
        if self.mean is None or self.scale_tril is None:
            return eps
        # In float64, rounded once to float32: the sum's order (which differs with batch size,
        # threads and BLAS) then no longer shows, so a seed maps to the same z everywhere.
        z = self.mean.double() + eps.double() @ self.scale_tril.double().T
        return z.to(eps.dtype)

    def latents_for_seeds(self, seed: int, n: int, latent_dim: int, temperature: float = 1.0) -> torch.Tensor:
        """z (n, latent_dim): row i is the latent of seed + i (``from_noise`` of its noise), the
        one mapping from seeds to faces that the service, the evaluation and the exported
        pictures all use."""
        return self.from_noise(noise_for_seeds(seed, n, latent_dim, temperature))

    def to_noise(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D) -> ε (N, D), the inverse of ``from_noise``."""
        if self.mean is None or self.scale_tril is None:
            return z
        diff = (z.double() - self.mean.double()).T  # (D, N)
        return torch.linalg.solve_triangular(self.scale_tril.double(), diff, upper=False).T.to(z.dtype)

    def path(self, a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
        """``interpolate`` between latents a, b (D,) taken through ε-space: (steps, D)."""
        if self.is_standard:
            return interpolate(a, b, steps, method)
        ends = self.to_noise(torch.stack([a, b]))  # (2, D)
        path = self.from_noise(interpolate(ends[0], ends[1], steps, method))
        # The ends are the given latents bit for bit (the ε round trip is exact only up to
        # rounding), so frame 0 of a seed path is that seed's /generate face.
        path[0], path[-1] = a, b
        return path
