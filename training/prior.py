"""The running Gaussian of the encoder means that the GAN's prior samples are drawn from.

Larsen et al. 2015 (Algorithm 1) draw the decoder's prior samples z_p from p(z) = N(0, I).
Served faces do not come from there: with the small KL weight that sharp reconstructions
need, the aggregate posterior sits far from the origin (about 10.7 units on the bundled v2),
and the service samples from a Gaussian fitted to the training set's encoder means
(``facegen_core.latent.LatentPrior``, ex-post density estimation, Ghosh et al. 2020). A GAN
trained on N(0, I) draws then sharpens a region of latent space no user ever sees. This
module tracks that same fitted Gaussian during training, as exponential moving averages of
the first and second moments of the batch's encoder means, so z_p comes from the
distribution serving samples from, and z and z_p are one cluster for the decoder's BatchNorm.
"""

from __future__ import annotations

import torch


class RunningGaussian:
    """N(m, C) with m = E[μ], C = E[μμᵀ] - m mᵀ, both moving averages over training batches.

    ``momentum`` is the weight of each new batch once warmed up; before that the weight is
    1/(updates+1), so the first estimates are plain averages, not a drift from N(0, I).
    """

    def __init__(self, dim: int, device: torch.device, momentum: float = 0.01) -> None:
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}.")
        self.momentum = momentum
        self.mean = torch.zeros(dim, device=device)  # (D,)
        self.second = torch.eye(dim, device=device)  # (D, D): starts as N(0, I)'s E[zzᵀ]
        self.updates = 0

    @torch.no_grad()
    def update(self, mu: torch.Tensor) -> None:
        """Fold in a batch of encoder means mu (B, D)."""
        mu = mu.detach().float()
        with torch.autocast(mu.device.type, enabled=False):  # moments in fp32, not bf16
            self._update(mu)

    def _update(self, mu: torch.Tensor) -> None:
        w = max(self.momentum, 1.0 / (self.updates + 1))
        self.mean.lerp_(mu.mean(dim=0), w)
        self.second.lerp_(mu.T @ mu / mu.shape[0], w)
        self.updates += 1

    @torch.no_grad()
    def scale_tril(self) -> torch.Tensor:
        """Cholesky factor L (D, D) of C, with a small ridge so a rank-deficient estimate
        (fewer batches than dims) still factors."""
        cov = self.second - torch.outer(self.mean, self.mean)
        cov = 0.5 * (cov + cov.T)
        ridge = 1e-4 * cov.diagonal().mean().clamp_min(1e-6)
        eye = torch.eye(cov.shape[0], device=cov.device)
        L, info = torch.linalg.cholesky_ex(cov + ridge * eye)
        # Not positive definite: the diagonal instead. torch.where, not an ``if``, so that no
        # step waits for the GPU to report ``info``.
        diag = torch.diag(torch.maximum(cov.diagonal(), ridge).sqrt())
        return torch.where(info == 0, L, diag)

    @torch.no_grad()
    def sample(self, like: torch.Tensor) -> torch.Tensor:
        """z_p (B, D) ~ N(m, C), shaped, typed and placed like ``like`` (B, D)."""
        eps = torch.randn_like(like, dtype=torch.float32)
        with torch.autocast(like.device.type, enabled=False):
            return (self.mean + eps @ self.scale_tril().T).to(like.dtype)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "second": self.second, "updates": torch.tensor(self.updates)}

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.mean.copy_(sd["mean"])
        self.second.copy_(sd["second"])
        self.updates = int(sd["updates"])
