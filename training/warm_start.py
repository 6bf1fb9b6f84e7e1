"""Warm start: begin a run from an exported artifact's encoder and decoder (``--init-from``).

Why: a GPU comes to one session in ten, for minutes; CPU sessions come every day. A run
that starts from the GPU-trained artifact spends the CPU's hours refining a good model
instead of re-learning faces from random weights. The artifact holds the EMA encoder and
decoder and the fitted latent prior, not the discriminator or the optimiser moments, so the
discriminator starts fresh and Adam's moments start at zero: this is a new run that begins
from those weights, not a resume (``--resume`` continues a run from its own checkpoint).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import torch

from facegen_core.artifact import load_artifact
from facegen_core.config import ModelConfig
from facegen_core.networks import Encoder
from training.step import Nets, unwrap
from training.widen import widen_encoder_head

# Config fields a warm start may change: a wider encoder head is grown from the narrower one
# without changing what it computes (training.widen).
WIDENABLE = ("enc_head_channels",)


class WarmStartError(Exception):
    """The artifact cannot start this run (architecture differs)."""


def config_mismatch(run: ModelConfig, artifact: ModelConfig) -> list[str]:
    """The config fields on which the run and the artifact disagree, as 'field: run vs artifact'."""
    a, b = run.to_dict(), artifact.to_dict()
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


@torch.no_grad()
def warm_start(nets: Nets, cfg: ModelConfig, path: str | Path) -> dict[str, Any]:
    """Load the artifact at ``path`` (checksums verified) into ``nets``: encoder, decoder, their
    EMA shadows, and the GAN prior's moments from the artifact's fitted prior. Returns the
    provenance record the manifest keeps under ``training.init_from``."""
    art = load_artifact(path)
    same_but_head = dataclasses.replace(art.config, **{k: getattr(cfg, k) for k in WIDENABLE})
    diff = config_mismatch(cfg, same_but_head)
    heads, art_heads = cfg.enc_head_channels, art.config.enc_head_channels
    widened = heads != art_heads
    if heads < art_heads:
        diff.append(f"enc_head_channels: {heads} < {art_heads} (only widening)")
    if diff:
        raise WarmStartError(
            f"--init-from {path}: the run's architecture differs from the artifact's "
            f"({'; '.join(diff)}). Pass the artifact's --config/--crop/--upsample/... flags."
        )
    enc, dec = unwrap(nets.encoder), unwrap(nets.decoder)
    # load_state_dict copies into the existing (possibly channels_last) parameters.
    widen_encoder_head(cast(Encoder, enc), art.encoder)  # a plain copy when the head is as wide
    dec.load_state_dict(art.decoder.state_dict())
    nets.ema.shadow.load_state_dict(art.decoder.state_dict())
    if nets.ema_encoder is not None:
        nets.ema_encoder.shadow.load_state_dict(enc.state_dict())
    prior_loaded = False
    if nets.gan_prior is not None and art.prior.mean is not None and art.prior.scale_tril is not None:
        # RunningGaussian keeps E[μ] and E[μμᵀ]; the artifact's prior is N(m, L Lᵀ).
        m = art.prior.mean.to(nets.gan_prior.mean)  # (D,)
        L = art.prior.scale_tril.to(nets.gan_prior.mean)  # (D, D)
        nets.gan_prior.mean.copy_(m)
        nets.gan_prior.second.copy_(L @ L.T + torch.outer(m, m))
        # Past its warm-up: the fitted moments are worth many batches, not one.
        nets.gan_prior.updates = int(1.0 / nets.gan_prior.momentum)
        prior_loaded = True
    record: dict[str, Any] = {
        "path": str(path),
        "name": art.name,
        "version": art.version,
        "weights_sha256": art.weights_sha256,
        "gan_prior_from_artifact": prior_loaded,
        "discriminator": "fresh (artifacts hold no discriminator)",
    }
    if widened:
        record["encoder_head_widened"] = [art.config.enc_head_channels, cfg.enc_head_channels]
    return record
