"""Checkpoint -> model-store artifact: encoder + EMA decoder, config, manifest, pictures.

The pictures are drawn on CPU in fp32 from the exported weights, so anyone can redraw
``samples.png`` bit for bit from the manifest's ``samples`` record (seed, temperature, n).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facegen_core.artifact import ArtifactError, load_artifact, write_artifact
from facegen_core.config import ModelConfig
from facegen_core.images import make_grid, to_pil
from facegen_core.latent import LatentPrior
from facegen_core.networks import Decoder, Encoder, build_autoencoder
from facegen_core.preprocess import model_to_uint8, uint8_to_model
from training import checkpoint as ckpt
from training.data import DatasetError
from training.encoder_step import batchnorm_frozen
from training.model_card import write_card
from training.run_data import load_datasets, split_datasets
from training.step import train_part

N_SAMPLES = 64
INTERP_STEPS = 10
INTERP_ROWS = 8


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    to_pil(arr).save(buf, format="PNG")
    return buf.getvalue()


def _to_hwc(x: torch.Tensor) -> np.ndarray:
    return model_to_uint8(x).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)


@torch.no_grad()
def sample_grid(
    decoder: Decoder,
    cfg: ModelConfig,
    seed: int,
    temperature: float,
    n: int = N_SAMPLES,
    prior: LatentPrior | None = None,
) -> np.ndarray:
    """(8·(H+2)+2, 8·(W+2)+2, C) uint8: faces from prior.from_noise(noise_for_seeds(seed, n, D, t))."""
    decoder = decoder.to("cpu").eval()
    z = (prior or LatentPrior()).latents_for_seeds(seed, n, cfg.latent_dim, temperature)  # (n, D)
    return make_grid(_to_hwc(decoder(z)), ncols=8, padding=2)


@torch.no_grad()
def interpolation_grid(
    encoder: Encoder, decoder: Decoder, val_u8: torch.Tensor, prior: LatentPrior | None = None
) -> np.ndarray | None:
    """Rows: real a, 10 slerp steps (in the prior's ε-space) between the encoder means of a and b, real b."""
    rows = min(INTERP_ROWS, val_u8.shape[0] // 2)
    if rows == 0:
        return None
    encoder, decoder = encoder.to("cpu").eval(), decoder.to("cpu").eval()
    reals = val_u8[: 2 * rows].cpu()  # (2R, C, H, W) uint8
    mu, _ = encoder(uint8_to_model(reals))  # (2R, D)
    tiles = []
    for r in range(rows):
        path = (prior or LatentPrior()).path(mu[2 * r], mu[2 * r + 1], INTERP_STEPS, "slerp")  # (10, D)
        tiles += [reals[2 * r : 2 * r + 1], model_to_uint8(decoder(path)), reals[2 * r + 1 : 2 * r + 2]]
    strip = torch.cat(tiles).permute(0, 2, 3, 1).numpy()  # (R·12, H, W, C)
    return make_grid(strip, ncols=INTERP_STEPS + 2, padding=2)


def loss_curves_png(records: list[dict[str, Any]]) -> bytes | None:
    """Every logged loss term against the step, one small panel each."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    skip = {"step", "images_seen", "wall_time_s", "sec_per_step"}
    keys = [k for k in records[-1] if k not in skip and not k.startswith("lr_")]
    keys += sorted(
        {k for r in records for k in r} - set(keys) - skip - {k for k in records[-1] if k.startswith("lr_")}
    )
    cols = 3
    rows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _bn_layers(net: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@contextlib.contextmanager
def _cumulative_bn(net: torch.nn.Module) -> Iterator[bool]:
    """Reset ``net``'s BatchNorm statistics and accumulate them as a plain average over every
    forward pass in the block (train mode); yields whether ``net`` has any BatchNorm."""
    bns = _bn_layers(net)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every batch
    net.train()
    try:
        yield bool(bns)
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        net.eval()


@torch.no_grad()
def recalibrate_encoder_bn(
    encoder: Encoder, train_u8: torch.Tensor, batch: int, n: int = 4096, device: str = "cpu"
) -> int:
    """Recompute the (EMA) encoder's BatchNorm statistics on training faces, for the reason
    ``recalibrate_bn`` gives for the decoder; returns the number of faces used."""
    encoder = encoder.to(device)
    used = min(n, train_u8.shape[0])
    if used < 2:
        return 0
    with _cumulative_bn(encoder) as has_bn:
        if not has_bn:
            return 0
        for i in range(0, used, batch):
            encoder(uint8_to_model(train_u8[i : min(i + batch, used)].to(device)))
    encoder.to("cpu")
    return used


@torch.no_grad()
def recalibrate_bn(
    encoder: Encoder,
    decoder: Decoder,
    train_u8: torch.Tensor,
    batch: int,
    n: int = 4096,
    seed: int = 0,
    gan_prior: LatentPrior | None = None,
    device: str = "cpu",
) -> int:
    """Recompute the decoder's BatchNorm statistics for its exported (EMA) weights; returns the
    number of training faces used.

    The EMA shadow copies the live decoder's running statistics, which belong to the live
    weights, not the averaged ones; as for any weight average, the statistics are recomputed
    with the averaged weights (Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima",
    section 3.2). The inputs are what training fed the decoder: each batch is [z ~ q(z|x) for
    ``batch`` training faces; as many z_p] (training/step.py), z_p drawn from ``gan_prior``
    (the fitted Gaussian, for runs whose GAN sampled it) or N(0, I), so BN normalises the same
    mixture it was trained on. Measured on the bundled v2's run at step 2000: validation PSNR
    19.25 dB with the copied statistics, 20.41 dB recomputed.
    """
    encoder = encoder.to(device).eval()
    decoder = decoder.to(device)
    used = min(n, train_u8.shape[0])
    if used < 2:
        return 0
    g = torch.Generator().manual_seed(seed)
    prior = gan_prior or LatentPrior()
    with _cumulative_bn(decoder) as has_bn:
        if not has_bn:
            return 0
        for i in range(0, used, batch):
            mu, logvar = encoder(uint8_to_model(train_u8[i : min(i + batch, used)].to(device)))  # (b, D)
            mu, logvar = mu.cpu(), logvar.cpu()  # noise from the seeded CPU generator
            z = mu + torch.randn(mu.shape, generator=g) * (0.5 * logvar).exp()
            z_p = prior.from_noise(torch.randn(mu.shape, generator=g))
            decoder(torch.cat([z, z_p]).to(device))  # (2b, C, H, W), as in a training step
    encoder.to("cpu")
    decoder.to("cpu")
    return used


@torch.no_grad()
def encoder_means(
    encoder: Encoder, images: torch.Tensor, batch_size: int = 256, device: str = "cpu"
) -> torch.Tensor:
    """uint8 faces (N, C, H, W) -> the encoder's means μ (N, D), float32 on CPU, in batches on
    ``device`` (the encoder must already be there, in eval mode)."""
    return torch.cat(
        [
            encoder(uint8_to_model(images[i : i + batch_size].to(device)))[0].float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    )


@torch.no_grad()
def fit_prior(encoder: Encoder, train_u8: torch.Tensor, batch: int = 256, device: str = "cpu") -> LatentPrior:
    """The Gaussian of the encoder means of the training faces (see LatentPrior for why);
    N(0, I) when there are too few faces to fit a full covariance."""
    encoder = encoder.to(device).eval()
    if train_u8.shape[0] <= encoder.latent_dim:
        print(f"warning: {train_u8.shape[0]} training faces cannot fit a latent prior; sampling N(0, I).")
        return LatentPrior()
    mu = encoder_means(encoder, train_u8, batch, device)  # (N, D)
    encoder.to("cpu")
    return LatentPrior.fit(mu)


def calibration_faces(train_u8: torch.Tensor, n: int = 4096, seed: int = 0) -> torch.Tensor:
    """A seeded random ``n`` of the training faces (N, C, H, W) for the BatchNorm passes. Not the
    first ``n``: a multi-source training set is the sources one after another, and the first
    4,096 faces of CelebA + FairFace are all CelebA, statistics of a mix the network was not
    trained on (measured: an encoder fine-tuned on both lost 2.2 dB of CelebA PSNR that way)."""
    if train_u8.shape[0] <= n:
        return train_u8
    pick = torch.randperm(train_u8.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return train_u8[pick.sort().values]


def init_artifact_prior(state: dict[str, Any], frozen: str) -> tuple[LatentPrior, dict[str, Any]]:
    """The latent prior of the artifact a ``--train-part encoder`` or ``decoder`` run started
    from, and its manifest record; that artifact must still be where the run found it, with the
    same weights. ``frozen``: the network the run held ("encoder" or "decoder"), for the record."""
    init = state.get("init_from")
    if not init:
        raise SystemExit("This run trained one network alone, without --init-from: its prior is unknown.")
    try:
        art = load_artifact(init["path"])
    except ArtifactError as e:
        raise SystemExit(
            f"The run's --init-from artifact {init['path']} cannot be loaded ({e}); export needs its prior."
        ) from e
    if art.weights_sha256 != init["weights_sha256"]:
        raise SystemExit(
            f"{init['path']} holds other weights than the run started from; export needs its prior."
        )
    record = dict(art.manifest.get("latent_prior") or {"kind": "standard"})
    record["from"] = f"{art.name} v{art.version} (the frozen {frozen}'s), unchanged"
    return art.prior, record


def _split_images(
    args: argparse.Namespace, cfg: ModelConfig, data: str | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The run's (train, validation) faces of every source, re-read through the data cache
    (cheap after training)."""
    a = argparse.Namespace(**vars(args))
    if data is not None:
        a.data = data
    try:
        train, vals, _ = split_datasets(load_datasets(a, cfg), a)
    except (DatasetError, SystemExit, OSError) as e:
        print(f"warning: no training data for interpolation.png and the latent prior ({e}); skipping them.")
        return None
    # Interpolation rows alternate sources, so the picture shows each data set's faces.
    val = torch.stack([v[i] for i in range(max(len(v) for v in vals)) for v in vals if i < len(v)])
    return train, val


def export_run(
    run_dir: str | Path,
    store: str | Path,
    name: str,
    data: str | None = None,
    weights_dtype: str = "fp32",
    device: str = "cpu",
) -> Path:
    """Export the checkpoint in ``run_dir`` to STORE/NAME/<version>/ and return that path.

    ``device`` runs the passes over the training faces (BatchNorm statistics, the latent
    prior's fit: ~50k encoder passes) there; the pictures are always drawn on CPU in fp32."""
    run_dir = Path(run_dir)
    state = ckpt.load_checkpoint(run_dir)
    cfg = ModelConfig.from_dict(state["model_config"])
    args = argparse.Namespace(**state["args"])
    encoder, decoder = build_autoencoder(cfg)
    ema_encoder = "ema_encoder" in state
    encoder.load_state_dict(state["ema_encoder"] if ema_encoder else state["encoder"])
    decoder.load_state_dict(state["ema"])  # the EMA decoder is what gets served
    seed, temperature = int(args.sample_seed), float(args.sample_temperature)
    split = _split_images(args, cfg, data)
    prior, prior_info = LatentPrior(), {"kind": "standard", "note": "N(0, I), the VAE's prior"}
    bn_batch = min(int(args.batch_size), 256)
    calib = calibration_faces(split[0]) if split is not None else None
    part = train_part(args)
    encoder_only, decoder_only = part == "encoder", part == "decoder"
    one_part = part != "all"  # one network trained, the other the --init-from artifact's
    # --encoder-bn frozen trained against the --init-from artifact's statistics: keep them.
    enc_bn_frozen = batchnorm_frozen(args)
    enc_bn_faces = (
        recalibrate_encoder_bn(encoder, calib, bn_batch, device=device)
        if calib is not None and ema_encoder and not enc_bn_frozen and not decoder_only
        else 0
    )
    if one_part:
        # Encoder part: the decoder (weights and BatchNorm statistics) is the initial artifact's,
        # untouched, and so must be the prior its GAN was trained to sample from
        # (training/encoder_step.py). Decoder part: the encoder is, so its means are, and the
        # prior fitted to them (training/decoder_step.py).
        prior, prior_info = init_artifact_prior(state, "decoder" if encoder_only else "encoder")
    elif split is not None and getattr(args, "latent_prior", "fitted") == "fitted":
        prior = fit_prior(encoder, split[0], device=device)
    gan_fitted = getattr(args, "gan_prior", "standard") == "fitted"
    bn_faces = (
        recalibrate_bn(
            encoder, decoder, calib, bn_batch, gan_prior=prior if gan_fitted else None, device=device
        )
        if calib is not None and not one_part  # decoder part: statistics frozen
        else 0
    )
    if split is not None and not prior.is_standard and not one_part:
        prior_info = {
            "kind": "fitted-gaussian",
            "fitted_on": f"encoder means of the {len(split[0])} training faces",
            "method": "ex-post density estimation (Ghosh et al. 2020, section 4)",
        }
    files: dict[str, bytes] = {"samples.png": _png(sample_grid(decoder, cfg, seed, temperature, prior=prior))}
    interp = interpolation_grid(encoder, decoder, split[1], prior) if split is not None else None
    if interp is not None:
        files["interpolation.png"] = _png(interp)
    curves = loss_curves_png(ckpt.read_log(run_dir))
    if curves is not None:
        files["loss_curves.png"] = curves
    manifest = {
        "dataset": state["dataset"],
        "training": {
            "steps": int(state["step"]),
            "images_seen": int(state["images_seen"]),
            "wall_time_s": round(float(state["wall_time_s"]), 1),
            "device": state["device"],
            "precision": state["precision"],
            "trained_on": state["trained_on"],
            "world_size": int(state.get("world_size", 1)),
            "decoder": (
                "the --init-from artifact's, frozen (--train-part encoder)"
                if encoder_only
                else "EMA of the weights (--ema-decay)"
            ),
            "encoder": (
                "the --init-from artifact's, frozen (--train-part decoder)"
                if decoder_only
                else "EMA of the weights (--ema-decay)"
                if ema_encoder
                else "the last step's weights"
            ),
            "decoder_bn_statistics": (
                f"recomputed at export on {bn_faces} training faces"
                if bn_faces
                else "the --init-from artifact's"
                if encoder_only
                else "the --init-from artifact's, frozen (--train-part decoder)"
                if decoder_only
                else "copied from training"
            ),
            "encoder_bn_statistics": (
                f"recomputed at export on {enc_bn_faces} training faces"
                if enc_bn_faces
                else "the --init-from artifact's, frozen (--encoder-bn frozen)"
                if enc_bn_frozen
                else "the --init-from artifact's, frozen (--train-part decoder)"
                if decoder_only
                else "copied from training"
            ),
            **({"init_from": state["init_from"]} if "init_from" in state else {}),
            "args": state["args"],
        },
        "samples": {"seed": seed, "temperature": temperature, "n": N_SAMPLES},
        "latent_prior": prior_info,
        "metrics": {},
    }
    path = write_artifact(
        store,
        name,
        cfg,
        encoder,
        decoder,
        manifest=manifest,
        files=files,
        prior=prior,
        weights_dtype=weights_dtype,
    )
    write_card(path)  # from the final manifest (name, version, sha256s); evaluate --write renews it
    return path
