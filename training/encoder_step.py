"""One step of ``--train-part encoder``: the encoder alone, against a frozen decoder.

Why: the shipped decoder can draw a validation face far better than the encoder's mean
finds it. Optimising z per image against faces64 v1's decoder (Adam, 200 steps, 64 CelebA
validation faces) reaches 23.0 dB PSNR where Dec(μ(x)) gives 19.7 dB: an amortisation gap
(Cremer et al. 2018, "Inference Suboptimality in Variational Autoencoders") of 3.4 dB,
which training the encoder further can close without touching what the decoder samples.

The objective is the VAE's for q(z|x) alone with p(x|z) fixed (Larsen et al. 2015, section
"Variational autoencoder": L_VAE = L_llike^pixel + L_prior):

    encoder <- ∇ (w·L_pixel(Dec(z), x) + β·L_prior),  z = μ + σ·ε  (reparameterised)

with the decoder in eval mode (its BatchNorm statistics, what serving uses) and no gradient
for its weights, and no discriminator: L_llike^Dis_l and L_GAN train the decoder, which
stays as it was, so its samples (and FID) are bit for bit the initial artifact's. L_pixel
counts only pixels from the photo (``facegen_core.refine.inside_photo``): aligned FairFace faces are
half black border. Use ``--pixel-pool 1`` with this mode: PSNR is per pixel, and the
decoder's sharpness is fixed.
"""

from __future__ import annotations

import argparse

import torch

from facegen_core.device import autocast
from facegen_core.preprocess import uint8_to_model
from facegen_core.refine import inside_photo
from training import losses
from training.distributed import DistInfo
from training.step import Nets, StepConfig, train_part, unwrap


def freeze_decoder(nets: Nets) -> None:
    """Eval mode (fixed BatchNorm statistics) and no gradients for the decoder."""
    unwrap(nets.decoder).eval().requires_grad_(False)


def batchnorm_frozen(args: argparse.Namespace) -> bool:
    """``--train-part encoder --encoder-bn frozen`` (runs from before the flag: batch statistics):
    training freezes the encoder's statistics, and export keeps them."""
    return train_part(args) == "encoder" and getattr(args, "encoder_bn", "batch") == "frozen"


def freeze_batchnorm(net: torch.nn.Module) -> None:
    """Put ``net``'s BatchNorm layers in eval mode (``--encoder-bn frozen``): they normalise by
    their running statistics, which stop updating, while their affine weights still train.
    Call after ``net.train()``, which would undo it.

    Why: in train mode a face's μ(x) depends on the other faces of its batch, through the
    batch's mean and variance. What serving computes is μ(x) under the running statistics,
    and the part of μ still to be learnt is small: on faces64 v2, the latent that reconstructs a
    face best lies |z* - μ| ≈ 1.1 from μ (20 refinement steps, 512 training faces), against a
    spread of μ over faces of ~3.7. Batch-statistics noise of that size would hide it; measured,
    freezing moved validation PSNR where nothing else had (model_store/faces64/TRAINING.md).
    """
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def encoder_losses(nets: Nets, batch_u8: torch.Tensor, cfg: StepConfig) -> dict[str, torch.Tensor]:
    """The encoder-only objective on a uint8 (B, C, H, W) batch, still attached to the graph."""
    x = uint8_to_model(batch_u8)  # (B, C, H, W) in [-1, 1]
    x = x.contiguous(memory_format=cfg.torch_memory_format)  # as the networks (train.build_nets)
    keep = inside_photo(batch_u8)  # (B, 1, H, W) bool
    with autocast(x.device, cfg.precision, cpu=True):
        mu, logvar = nets.encoder(x)  # (B, D) each, float32
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        x_rec = nets.decoder(z)  # (B, C, H, W), frozen decoder
    loss_pixel = losses.pixel_likelihood(x_rec, x, cfg.pixel_pool, keep)
    loss_prior = losses.kl_prior(mu, logvar)
    loss_enc = cfg.pixel_weight * loss_pixel + cfg.kl_weight * loss_prior
    return {"prior": loss_prior, "pixel": loss_pixel, "enc": loss_enc, "inside": keep.float().mean()}


def encoder_step(
    nets: Nets, batch_u8: torch.Tensor, step: int, cfg: StepConfig, dist_info: DistInfo | None = None
) -> dict[str, torch.Tensor]:
    """One optimisation step of the encoder (DDP averages its gradients when wrapped); the
    decoder, its EMA and the discriminator are left exactly as they are."""
    nets.opt_enc.zero_grad(set_to_none=True)
    terms = encoder_losses(nets, batch_u8, cfg)
    terms["enc"].backward()
    nets.opt_enc.step()
    if nets.ema_encoder is not None:
        nets.ema_encoder.update(unwrap(nets.encoder), step)
    return {k: v.detach() for k, v in terms.items()}
