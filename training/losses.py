"""The VAE-GAN loss terms (Larsen et al. 2015, "Autoencoding beyond pixels using a learned
similarity metric", section 2 and Algorithm 1) plus the GAN stabilisers we add to them.

Each function returns a scalar averaged over the batch. Which network each term trains is
decided in ``training/step.py`` (Algorithm 1's gradient routing), not here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """L_prior = D_KL(q(z|x) || p(z)) with p(z) = N(0, I) (Larsen et al. 2015, section
    "Variational autoencoder", the prior term of L_VAE; closed form from Kingma & Welling
    2014, appendix B).

    mu, logvar: (B, D). Summed over latent dimensions, averaged over the batch; ``--kl-weight``
    (β) scales it (see ``dis_l_likelihood`` for why β is small by default).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def dis_l_likelihood(
    feat_recon: torch.Tensor, feat_real: torch.Tensor, per_channel: bool = False
) -> torch.Tensor:
    """L_llike^Dis_l = -E_q(z|x)[log p(Dis_l(x)|z)], with the Gaussian observation model
    p(Dis_l(x)|z) = N(Dis_l(x) | Dis_l(x̃), Σ) (Larsen et al. 2015, section "Beyond
    element-wise reconstruction error", where Σ = I).

    Up to an additive constant the negative log-likelihood of a Gaussian is half the squared
    error, scaled by 1/σ², summed over the n = C·H·W features. We use the per-element MEAN
    instead (= the paper's term / (n/2)), so the loss scale does not change with the config's
    widths; β (``--kl-weight``) absorbs the factor n/2.

    ``per_channel``: Σ = diag(σ_c²), σ_c² the variance of channel c of the real images' Dis_l
    over the batch and positions (detached). With Σ = I the term's scale is whatever scale
    D's features happen to have: measured on the bundled v2 run, its gradient was ~30× weaker
    than the pixel and GAN terms', so the objective was in effect pixel MSE, which means blur.
    Normalised per channel, every feature counts in units of its own spread, at any D width
    or training stage. feat_*: (B, C, H, W) = Dis_l features of Dec(Enc(x)) and of x.
    """
    diff2 = (feat_recon.float() - feat_real.float()).pow(2)  # (B, C, H, W)
    if per_channel:
        var = feat_real.detach().float().var(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
        diff2 = diff2 / (var + 1e-4)
    return diff2.mean()


def pixel_likelihood(
    recon: torch.Tensor, real: torch.Tensor, pool: int = 1, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Pixel-space Gaussian reconstruction term, L_llike^pixel of the plain VAE (section
    "Variational autoencoder"), per-element mean like ``dis_l_likelihood``.

    DEVIATION from the VAE-GAN objective, which drops it: while Dis_l is still untrained
    its features say little about the face, and short CPU runs would otherwise end with
    reconstructions that do not resemble the input. Weighted by ``--pixel-weight`` (0
    recovers the paper). ``pool`` > 1 compares pool×pool average-pooled images (B, C, H/p,
    W/p) instead: it pins colour, layout and identity but leaves the high frequencies, which
    a per-pixel Gaussian can only average into blur, to Dis_l and the GAN.

    ``keep`` (B, 1, H, W) bool, when given, restricts the mean to those pixels (after pooling,
    to the cells wholly inside them): ``facegen_core.refine.inside_photo``'s photo pixels.
    """
    recon, real = recon.float(), real.float()
    if pool > 1:
        recon, real = F.avg_pool2d(recon, pool), F.avg_pool2d(real, pool)
    if keep is None:
        return F.mse_loss(recon, real)
    m = keep.float()
    if pool > 1:
        m = (F.avg_pool2d(m, pool) == 1.0).float()  # pooled cells wholly inside
    # Per-element mean over the kept pixels and every channel.
    return ((recon - real) ** 2 * m).sum() / (m.sum() * recon.shape[1]).clamp_min(1.0)


# --- GAN loss, L_GAN = log Dis(x) + log(1 - Dis(Gen(z))) (Larsen et al. 2015, section
# "Generative adversarial network"; in the VAE-GAN, Algorithm 1, both Dec(z_p) with z_p ~ p(z) and
# Dec(Enc(x)) count as fakes). The paper's saturating log form is replaced by one of two
# standard surrogates with the same fixed point: "ns" (Goodfellow et al. 2014's
# non-saturating generator loss) or "hinge" (Lim & Ye 2017; Miyato et al. 2018).

GAN_LOSSES = ("hinge", "ns")


def d_loss(kind: str, real_logit: torch.Tensor, fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator side of L_GAN: real vs. every fake source, fakes averaged so that two
    fake batches (Dec(z_p), Dec(Enc(x))) do not outweigh the one real batch.

    *_logit: (B,) raw logits.
    """
    if kind == "hinge":
        real = F.relu(1.0 - real_logit).mean()
        fake = torch.stack([F.relu(1.0 + f).mean() for f in fake_logits]).mean()
    elif kind == "ns":
        real = F.softplus(-real_logit).mean()  # -log sigmoid(real)
        fake = torch.stack([F.softplus(f).mean() for f in fake_logits]).mean()  # -log(1 - sigmoid)
    else:
        raise ValueError(f"Unknown GAN loss {kind!r}; use one of {GAN_LOSSES}.")
    return real + fake


def g_loss(kind: str, fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """Generator (decoder) side of L_GAN over every fake source."""
    if kind == "hinge":
        return torch.stack([-f.mean() for f in fake_logits]).mean()
    if kind == "ns":
        return torch.stack([F.softplus(-f).mean() for f in fake_logits]).mean()  # -log sigmoid
    raise ValueError(f"Unknown GAN loss {kind!r}; use one of {GAN_LOSSES}.")


def r1_penalty(real_logit: torch.Tensor, real_input: torch.Tensor) -> torch.Tensor:
    """R1 = E ||∇_x Dis(x)||² on real data (Mescheder, Geiger & Nowozin 2018, eq. 9); the
    caller scales it by gamma/2. ``real_input`` must require grad and be what produced
    ``real_logit`` (after DiffAugment, so the penalty sees the images D actually sees).
    """
    (grad,) = torch.autograd.grad(real_logit.sum(), real_input, create_graph=True)
    return grad.float().pow(2).flatten(1).sum(dim=1).mean()
