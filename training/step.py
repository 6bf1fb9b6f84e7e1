"""One VAE-GAN training step with the gradient routing of Larsen et al. 2015, Algorithm 1:

    encoder       <- ∇ (β·L_prior + L_llike^Dis_l [+ w·L_pixel])
    decoder       <- ∇ (γ·L_llike^Dis_l [+ w·L_pixel] + L_GAN's generator side)
    discriminator <- ∇ (L_GAN's discriminator side [+ R1])

Why ``backward(inputs=...)``: the three losses share one graph (Enc -> Dec -> Dis). The
published re-implementations backpropagate one loss, step that network's optimiser, then
backpropagate the next loss through the same graph, whose saved tensors the optimiser has
just modified in place: current PyTorch rejects that ("a variable needed for gradient
computation has been modified by an inplace operation"). Here every network's gradient is
computed first, each restricted to that network's parameters with ``inputs=``, and only
then do the three optimisers step: exactly Algorithm 1, where all three updates use the
parameters of the same iteration.

One discriminator pass serves all three losses: Dis sees [x, Dec(Enc(x)), Dec(z_p)] once
(not detached); D's own loss is backpropagated with ``inputs=`` D's parameters, so no
gradient is computed for E or G from it, and the E/G losses with ``inputs=`` their own
parameters, so none reaches D. On a CPU this saves a third of D's work compared with a
second pass on detached fakes.

DDP: the encoder and decoder are DistributedDataParallel wrappers, each given exactly one
forward and one backward per step. The discriminator is NOT wrapped: its parameters get
three backward passes' worth of graph per step (its own loss, and the E/G losses pass
through it), which a DDP reducer cannot follow; instead its gradients are averaged across
ranks with one all-reduce (``distributed.average_gradients``) before the optimiser step.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from facegen_core.device import MEMORY_FORMATS, autocast
from facegen_core.preprocess import uint8_to_model
from training import losses
from training.augment import diff_augment
from training.distributed import DistInfo, average_gradients
from training.ema import EMA
from training.prior import RunningGaussian


@dataclass
class StepConfig:
    kl_weight: float
    gamma: float
    pixel_weight: float
    gan_loss: str
    r1_gamma: float
    r1_every: int
    augment: tuple[str, ...]
    precision: str  # "fp32" | "bf16"
    dis_l_per_channel: bool = False  # Dis_l likelihood with per-channel variances (losses.py)
    pixel_pool: int = 1  # pixel term on pool×pool average-pooled images
    dis_warmup_steps: int = 0  # the first N steps train D alone (E and G held): see train_step
    memory_format: str = "channels_last"  # "channels_last" | "contiguous" (--memory-format)

    @property
    def torch_memory_format(self) -> torch.memory_format:
        return MEMORY_FORMATS[self.memory_format]


@dataclass
class Nets:
    """The trainable networks, their optimisers and the decoder EMA."""

    encoder: nn.Module  # possibly DDP-wrapped
    decoder: nn.Module  # possibly DDP-wrapped
    discriminator: nn.Module  # never wrapped (see module docstring)
    opt_enc: torch.optim.Optimizer
    opt_dec: torch.optim.Optimizer
    opt_dis: torch.optim.Optimizer
    ema: EMA
    ema_encoder: EMA | None = None  # exported instead of the live encoder when present
    gan_prior: RunningGaussian | None = None  # z_p's distribution (--gan-prior fitted); None: N(0, I)


def train_part(args: argparse.Namespace) -> str:
    """--train-part: "all", "encoder" or "decoder" (checkpoints written before the flag trained
    everything)."""
    return str(getattr(args, "train_part", "all"))


def unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, nn.parallel.DistributedDataParallel) else m


def _params(m: nn.Module) -> list[torch.Tensor]:
    return [p for p in m.parameters() if p.requires_grad]


def _paired_augment(
    a: torch.Tensor, b: torch.Tensor, policy: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random augmentation for x and Dec(Enc(x)): Dis_l compares them feature by
    feature, so a different shift per side would be counted as reconstruction error."""
    if not policy:
        return a, b
    devices = [a.device] if a.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        a_aug = diff_augment(a, policy)
    # fork_rng restored the state: draw the same numbers again for b, then move on.
    return a_aug, diff_augment(b, policy)


@dataclass
class StepLosses:
    """One step's three routed losses, still attached to the graph, and every term."""

    enc: torch.Tensor  # β·L_prior + L_llike^Dis_l [+ w·L_pixel]
    dec: torch.Tensor  # γ·L_llike^Dis_l [+ w·L_pixel] + L_GAN (generator side)
    dis: torch.Tensor  # L_GAN (discriminator side) [+ R1]
    terms: dict[str, torch.Tensor]  # scalars: prior, dis_l, pixel, gan_g, gan_d [, r1], enc, dec, dis


# Algorithm 1's routing, in backward order: (StepLosses field, Nets field it trains).
ROUTING: tuple[tuple[str, str], ...] = (
    ("dis", "discriminator"),
    ("enc", "encoder"),
    ("dec", "decoder"),
)


def compute_losses(nets: Nets, batch_u8: torch.Tensor, step: int, cfg: StepConfig) -> StepLosses:
    """Forward pass of one step on a uint8 (B, C, H, W) batch: the three losses of
    Algorithm 1 on one shared graph (nothing is backpropagated here)."""
    enc, dec, dis = nets.encoder, nets.decoder, nets.discriminator
    device = batch_u8.device
    x = uint8_to_model(batch_u8)  # (B, C, H, W) in [-1, 1]
    x = x.contiguous(memory_format=cfg.torch_memory_format)  # as the networks (train.build_nets)
    b = x.shape[0]

    with autocast(device, cfg.precision, cpu=True):
        # Enc and Dec forward once each: Dec decodes the posterior sample and the prior
        # sample in one batch, so its DDP wrapper sees a single forward.
        mu, logvar = enc(x)  # (B, D) each
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterisation
        if nets.gan_prior is not None:
            nets.gan_prior.update(mu)
            z_p = nets.gan_prior.sample(mu)  # z_p ~ N(m, C), what serving samples from (prior.py)
        else:
            z_p = torch.randn_like(mu)  # z_p ~ p(z) = N(0, I), Larsen et al.'s Algorithm 1
        out = dec(torch.cat([z, z_p]))  # (2B, C, H, W)
        x_rec, x_p = out[:b], out[b:]

        # Every image D sees is augmented; x and Dec(Enc(x)) with the same parameters.
        r1_now = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
        real_s, rec_s = _paired_augment(x, x_rec, cfg.augment)
        real_s = real_s.detach().requires_grad_(r1_now)  # R1 differentiates w.r.t. it
        p_s = diff_augment(x_p, cfg.augment)
        logits, feats = dis(torch.cat([real_s, rec_s, p_s]))  # (3B,), Dis_l (3B, C', H', W')
        real_logit, rec_logit, p_logit = logits[:b], logits[b : 2 * b], logits[2 * b :]

        # L_GAN, discriminator side, with both fake sources of Algorithm 1.
        loss_d = losses.d_loss(cfg.gan_loss, real_logit, [rec_logit, p_logit])
        loss_r1 = torch.zeros((), device=device)
        if r1_now:
            # Lazy R1 (Karras et al. 2020): every r1_every steps, scaled by r1_every.
            loss_r1 = losses.r1_penalty(real_logit, real_s)
        loss_dis_total = loss_d + 0.5 * cfg.r1_gamma * cfg.r1_every * loss_r1

        feat_real, feat_rec = feats[:b].detach(), feats[b : 2 * b]  # Dis_l: (B, C', H', W')
        loss_prior = losses.kl_prior(mu, logvar)
        loss_dis_l = losses.dis_l_likelihood(feat_rec, feat_real, cfg.dis_l_per_channel)
        loss_pixel = losses.pixel_likelihood(x_rec, x, cfg.pixel_pool)
        loss_g = losses.g_loss(cfg.gan_loss, [rec_logit, p_logit])
        loss_enc = cfg.kl_weight * loss_prior + loss_dis_l + cfg.pixel_weight * loss_pixel
        loss_dec = cfg.gamma * loss_dis_l + cfg.pixel_weight * loss_pixel + loss_g

    terms = {
        "prior": loss_prior,
        "dis_l": loss_dis_l,
        "pixel": loss_pixel,
        "gan_g": loss_g,
        "gan_d": loss_d,
        "enc": loss_enc,
        "dec": loss_dec,
        "dis": loss_dis_total,
    }
    if r1_now:
        terms["r1"] = loss_r1
    return StepLosses(enc=loss_enc, dec=loss_dec, dis=loss_dis_total, terms=terms)


def routed_backward(
    nets: Nets, step_losses: StepLosses, after_each: Callable[[str], None] | None = None
) -> None:
    """Each loss's gradient into its own network only (``ROUTING``), every gradient before
    any optimiser step (see module docstring). ``after_each(loss_name)`` runs after each
    backward; tests use it to look at the gradients in between."""
    for i, (loss_name, net_name) in enumerate(ROUTING):
        last = i == len(ROUTING) - 1
        loss: torch.Tensor = getattr(step_losses, loss_name)
        loss.backward(inputs=_params(getattr(nets, net_name)), retain_graph=not last)
        if after_each is not None:
            after_each(loss_name)


def train_step(
    nets: Nets, batch_u8: torch.Tensor, step: int, cfg: StepConfig, dist_info: DistInfo | None = None
) -> dict[str, torch.Tensor]:
    """One optimisation step on a uint8 (B, C, H, W) batch; returns every loss term as a
    detached scalar tensor (the caller syncs with ``float`` only when it logs).

    While ``step < cfg.dis_warmup_steps`` only the discriminator learns; the encoder, the
    decoder and their EMAs stay exactly as they are. Why: a warm start (``--init-from``)
    brings a trained E and G but a fresh D, whose first gradients are noise that pushes G
    off its faces (the CPU fine-tune in model_store/faces64/TRAINING.md went from FID-2k
    45.0 to 53.2 with D near chance all run). D learns first; E and G join once its signal
    means something. Measured at CPU scale (batch 32, 100 warm-up steps, then ~100 steps), it
    made things worse, not better: FID-2k 51.4 against 45.8 without it (TRAINING.md), so it is
    off by default and the next GPU run does not use it.
    """
    for opt in (nets.opt_enc, nets.opt_dec, nets.opt_dis):
        opt.zero_grad(set_to_none=True)
    step_losses = compute_losses(nets, batch_u8, step, cfg)
    if step < cfg.dis_warmup_steps:
        step_losses.dis.backward(inputs=_params(nets.discriminator))
        average_gradients(nets.discriminator, dist_info)
        nets.opt_dis.step()
        return {k: v.detach() for k, v in step_losses.terms.items()}
    routed_backward(nets, step_losses)
    average_gradients(nets.discriminator, dist_info)
    nets.opt_enc.step()
    nets.opt_dec.step()
    nets.opt_dis.step()
    nets.ema.update(unwrap(nets.decoder), step)
    if nets.ema_encoder is not None:
        nets.ema_encoder.update(unwrap(nets.encoder), step)
    return {k: v.detach() for k, v in step_losses.terms.items()}
