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
from training.grow import grow_encoder
from training.step import Nets, unwrap

# Config fields a warm start may raise: the encoder grows without changing what it computes
# (training.grow).
GROWABLE = ("enc_head_channels", "enc_res_blocks")


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
    same_but_growth = dataclasses.replace(art.config, **{k: getattr(cfg, k) for k in GROWABLE})
    diff = config_mismatch(cfg, same_but_growth)
    grown = {
        k: [getattr(art.config, k), getattr(cfg, k)]
        for k in GROWABLE
        if getattr(cfg, k) != getattr(art.config, k)
    }
    diff += [f"{k}: {new} < {old} (an encoder can only grow)" for k, (old, new) in grown.items() if new < old]
    if diff:
        raise WarmStartError(
            f"--init-from {path}: the run's architecture differs from the artifact's "
            f"({'; '.join(diff)}). Pass the artifact's --config/--crop/--upsample/... flags."
        )
    enc, dec = unwrap(nets.encoder), unwrap(nets.decoder)
    # load_state_dict copies into the existing (possibly channels_last) parameters.
    grow_encoder(cast(Encoder, enc), art.encoder)  # a plain copy when the architectures are the same
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
    if grown:
        record["encoder_grown"] = grown  # field: [artifact's, run's]
    return record
