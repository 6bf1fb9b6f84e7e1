"""One step of ``--train-part decoder``: the decoder alone, for reconstruction, from a frozen encoder.

Why: a feed-forward encoder trained against faces64's frozen decoder stopped at ~20.2 dB on
CelebA validation faces however it was changed (longer, wider, deeper, its BatchNorm frozen,
the reconstruction fed back: model_store/faces64/TRAINING.md), while the same decoder draws
those faces at ~23 dB from a latent optimised per face. The other side of that gap is the
decoder: it was trained by the GAN to draw faces from the prior, and by a pixel term pooled
4×4 (``--pixel-pool 4``) that does not ask for a face's fine layout. Fitting the decoder to
the encoder's means, with the encoder and the latent prior held, moves the reconstructions
where the encoder could not.

The objective is the VAE's reconstruction term for p(x|z) alone, with q(z|x) fixed (Larsen et
al. 2015, section "Variational autoencoder": L_llike^pixel), plus an anchor on the samples:

    decoder <- ∇ (w·L_pixel(Dec(μ(x)), x) + a·‖Dec(z_p) − Dec₀(z_p)‖²),   z_p ~ the prior

    x:   (B, C, H, W) a training batch;  μ(x): (B, D) the frozen encoder's mean
    z_p: (B, D) drawn from the --init-from artifact's latent prior (what serving samples from)
    Dec₀: the --init-from artifact's decoder, frozen

The anchor (``--sample-anchor-weight a``) is the distillation term of "Learning without
Forgetting" (Li & Hoiem 2016): the new decoder is asked to keep drawing, from the prior's
latents, what the old one drew there, so random faces (and FID) stay the GAN-trained
decoder's while reconstructions improve. There is no discriminator: the artifact holds none,
and a fresh one at batch 32 pushed the last CPU fine-tune to over-sharp texture.

Both networks run with their BatchNorm in eval mode: the encoder's μ(x) is what serving
computes, and the decoder's statistics stay the artifact's (serving normalises by them; the
export keeps them). L_pixel counts only the photo's pixels (``facegen_core.refine.inside_photo``).
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

import torch
from torch import nn

from facegen_core.device import autocast, set_memory_format
from facegen_core.latent import LatentPrior
from facegen_core.preprocess import uint8_to_model
from facegen_core.refine import inside_photo
from training import losses
from training.distributed import DistInfo
from training.encoder_step import freeze_batchnorm
from training.step import Nets, StepConfig, train_part, unwrap

# --sample-anchor-weight's default: the anchor weighs as much as the pixel term at
# --pixel-weight 10 (model_store/faces64/TRAINING.md, the A/B that chose it).
SAMPLE_ANCHOR_WEIGHT = 10.0


@dataclass
class SampleAnchor:
    """The --init-from artifact's decoder (frozen, eval mode) and the prior serving samples from."""

    decoder: nn.Module
    prior: LatentPrior
    weight: float


def decoder_only(args: argparse.Namespace) -> bool:
    """--train-part decoder."""
    return train_part(args) == "decoder"


def freeze_encoder(nets: Nets) -> None:
    """Eval mode (the running statistics serving uses) and no gradients for the encoder."""
    unwrap(nets.encoder).eval().requires_grad_(False)


def freeze_decoder_batchnorm(nets: Nets) -> None:
    """The decoder's BatchNorm layers in eval mode; call after ``decoder.train()``."""
    freeze_batchnorm(unwrap(nets.decoder))


def sample_anchor(
    decoder: nn.Module, prior: LatentPrior, weight: float, memory_format: str, device: torch.device
) -> SampleAnchor:
    """A frozen copy of ``decoder`` (the artifact's, as loaded) on ``device``, to anchor the
    samples to, and ``prior`` moved there."""
    frozen = copy.deepcopy(decoder).to(device).eval().requires_grad_(False)
    set_memory_format(frozen, memory_format=memory_format)
    if prior.mean is not None and prior.scale_tril is not None:
        prior = LatentPrior(prior.mean.to(device), prior.scale_tril.to(device))
    return SampleAnchor(frozen, prior, weight)


def decoder_losses(
    nets: Nets, batch_u8: torch.Tensor, cfg: StepConfig, anchor: SampleAnchor | None
) -> dict[str, torch.Tensor]:
    """The decoder-only objective on a uint8 (B, C, H, W) batch, still attached to the graph."""
    x = uint8_to_model(batch_u8)  # (B, C, H, W) in [-1, 1]
    x = x.contiguous(memory_format=cfg.torch_memory_format)  # as the networks (train.build_nets)
    keep = inside_photo(batch_u8)  # (B, 1, H, W) bool
    with autocast(x.device, cfg.precision, cpu=True):
        with torch.no_grad():
            mu, _ = nets.encoder(x)  # (B, D), frozen encoder
        x_rec = nets.decoder(mu)  # (B, C, H, W)
    loss_pixel = losses.pixel_likelihood(x_rec, x, cfg.pixel_pool, keep)
    loss_dec = cfg.pixel_weight * loss_pixel
    terms = {"pixel": loss_pixel, "inside": keep.float().mean()}
    if anchor is not None and anchor.weight > 0:
        z_p = anchor.prior.from_noise(torch.randn_like(mu)).to(mu)  # (B, D) what serving samples
        with autocast(x.device, cfg.precision, cpu=True):
            with torch.no_grad():
                before = anchor.decoder(z_p)  # (B, C, H, W)
            now = nets.decoder(z_p)
        loss_anchor = torch.nn.functional.mse_loss(now.float(), before.float())
        loss_dec = loss_dec + anchor.weight * loss_anchor
        terms["sample_anchor"] = loss_anchor
    terms["dec"] = loss_dec
    return terms


def decoder_step(
    nets: Nets,
    batch_u8: torch.Tensor,
    step: int,
    cfg: StepConfig,
    dist_info: DistInfo | None = None,
    anchor: SampleAnchor | None = None,
) -> dict[str, torch.Tensor]:
    """One optimisation step of the decoder (DDP averages its gradients when wrapped), then its
    EMA; the encoder and the discriminator are left exactly as they are."""
    nets.opt_dec.zero_grad(set_to_none=True)
    terms = decoder_losses(nets, batch_u8, cfg, anchor)
    terms["dec"].backward()
    nets.opt_dec.step()
    nets.ema.update(unwrap(nets.decoder), step)
    return {k: v.detach() for k, v in terms.items()}
