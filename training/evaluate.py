"""Evaluate an exported artifact: FID of its samples, and reconstruction quality and KL on
the validation split it was trained with.

    python -m training.evaluate --artifact models/faces/1 [--write]

Deterministic: samples come from ``latents_for_seeds(seed, N)`` (one CPU generator per
seed) and the real set's Inception statistics are cached, so re-running the same command
on the same artifact and data reproduces the FID (to float rounding of the network).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from facegen_core.artifact import (
    MANIFEST_FILE,
    Artifact,
    ArtifactError,
    load_artifact,
    read_manifest,
)
from facegen_core.device import resolve_device
from facegen_core.preprocess import model_to_uint8, uint8_to_model
from training import fid as fidlib
from training.data import DatasetError, FaceDataset, load_faces, split_indices
from training.metrics_image import psnr_per_image, ssim_per_image


@torch.inference_mode()
def generate_samples(
    art: Artifact, n: int, seed: int, temperature: float, batch_size: int, device: torch.device
) -> torch.Tensor:
    """uint8 (n, C, H, W): the decoder on z_i = prior(latent_for_seed(seed + i)), the artifact's
    prior (fitted Gaussian or N(0, I)) applied to the seed's noise, as the service does."""
    z = art.prior.latents_for_seeds(seed, n, art.config.latent_dim, temperature)  # (n, latent_dim)
    out = [
        model_to_uint8(art.decoder(z[i : i + batch_size].to(device))).cpu() for i in range(0, n, batch_size)
    ]
    c, s = art.config.channels, art.config.image_size
    return torch.cat(out) if out else torch.empty(0, c, s, s, dtype=torch.uint8)


@torch.inference_mode()
def reconstruction_metrics(
    art: Artifact, images: torch.Tensor, batch_size: int, device: torch.device
) -> dict[str, float]:
    """PSNR, SSIM of x vs Dec(mu(x)) (the posterior mean, no sampling) and the mean KL.

    KL(q(z|x) || N(0, I)) = -½ Σ_j (1 + log σ_j² - μ_j² - σ_j²) (Kingma & Welling 2014,
    appendix B), summed over latent dims, then averaged over images.
    """
    psnrs, ssims, kls = [], [], []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]  # uint8 (B, C, H, W)
        mu, logvar = art.encoder(uint8_to_model(x.to(device)))  # (B, latent_dim) each
        recon = model_to_uint8(art.decoder(mu)).cpu()  # uint8, as a user would see it
        psnrs.append(psnr_per_image(x, recon))
        ssims.append(ssim_per_image(x, recon))
        kls.append((-0.5 * (1 + logvar - mu**2 - logvar.exp())).sum(1).double().cpu())
    return {
        "psnr_db": float(torch.cat(psnrs).mean()),
        "ssim": float(torch.cat(ssims).mean()),
        "kl": float(torch.cat(kls).mean()),
    }


def validation_images(manifest: dict[str, Any], ds: FaceDataset) -> tuple[torch.Tensor, str]:
    """The held-out images of the artifact's training split, and a note on how they were found.

    manifest['dataset']['split'] = {seed, val_fraction, train, val} reproduces the split with
    ``split_indices(train + val, val_fraction, seed)``. Training on ``--limit n`` used the
    data set's first n images, so a larger set is cut to n first.
    """
    split = (manifest.get("dataset") or {}).get("split")
    if not split:
        print(
            "warning: the manifest records no dataset.split; measuring reconstruction on every image.",
            file=sys.stderr,
        )
        return ds.images, "all images (manifest has no dataset.split)"
    n = int(split["train"]) + int(split["val"])
    if len(ds) < n:
        raise DatasetError(
            f"The artifact was trained on {n} images but the data set has only {len(ds)}; pass the "
            f"same --data it was trained on."
        )
    _, val_idx = split_indices(n, float(split["val_fraction"]), int(split["seed"]))
    if len(val_idx) != int(split["val"]):
        raise DatasetError(
            f"Recomputing the split gives {len(val_idx)} validation images, the manifest says "
            f"{split['val']}; the data set differs from the one the artifact was trained on."
        )
    return ds.images[:n][val_idx], f"validation split (seed {split['seed']}, {len(val_idx)} of {n} images)"


def resolve_data(manifest: dict[str, Any], data: str | Path | None) -> Path:
    if data is not None:
        return Path(data)
    source = (manifest.get("dataset") or {}).get("source")
    if not source:
        raise DatasetError("The manifest records no dataset.source; pass the data set with --data PATH.")
    path = Path(str(source))
    if not path.exists():
        raise DatasetError(
            f"The manifest's data set {path} does not exist here; pass the data set with --data PATH."
        )
    return path


def evaluate_artifact(
    path: str | Path,
    data: str | Path | None = None,
    *,
    dataset: FaceDataset | None = None,
    fid_samples: int = 10_000,
    fid_real: int = 10_000,
    batch_size: int = 50,
    seed: int = 0,
    temperature: float = 1.0,
    compute_fid: bool = True,
    write: bool = False,
    device: str = "auto",
    cache_dir: str | Path | None = "data_cache",
    progress: bool = True,
) -> dict[str, Any]:
    """Measure an artifact and return its metrics dict (the manifest's "metrics" layout).

    ``dataset`` skips loading when the caller (the training CLI) already holds the images,
    decoded with the artifact's image_size, channels and crop. With ``write`` the result is
    merged into manifest.json's "metrics" (other keys kept) and written atomically.
    """
    dev = resolve_device(device)
    art = load_artifact(path, dev)  # verifies every sha256 first
    cfg = art.config
    if dataset is None:
        dataset = load_faces(
            resolve_data(art.manifest, data),
            cfg.image_size,
            cfg.channels,
            cfg.input_crop,
            cache_dir=cache_dir,
        )
    if tuple(dataset.images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
        raise DatasetError(
            f"The data set's images are {tuple(dataset.images.shape[1:])} but the model takes "
            f"{(cfg.channels, cfg.image_size, cfg.image_size)}; load it with the artifact's config."
        )
    val, val_note = validation_images(art.manifest, dataset)
    metrics: dict[str, Any] = {}
    if compute_fid:
        real = dataset.images[:fid_real]
        real_stats = fidlib.cached_statistics(
            real, cache_dir, batch_size=batch_size, device=dev, progress=progress
        )
        fake = generate_samples(art, fid_samples, seed, temperature, batch_size, dev)
        fake_stats = fidlib.statistics(
            fidlib.inception_features(fake, batch_size, dev, progress, desc="FID samples")
        )
        metrics["fid"] = {
            "value": round(fidlib.fid_from_stats(real_stats, fake_stats), 4),
            "samples": fid_samples,
            "real": int(real.shape[0]),
            "temperature": temperature,
            "network": fidlib.FID_NETWORK,
            "resize": fidlib.FID_RESIZE,
        }
    metrics |= reconstruction_metrics(art, val, batch_size, dev)
    metrics["evaluated"] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "device": str(dev),
        "data": dataset.source,
        "reconstruction_on": val_note,
    }
    if write:
        write_metrics(path, metrics)
    return metrics


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into manifest.json's "metrics" and replace the file atomically.

    manifest.json is not in its own sha256 list, so rewriting it keeps the artifact verifiable.
    """
    path = Path(path)
    manifest = read_manifest(path)
    manifest["metrics"] = {**(manifest.get("metrics") or {}), **metrics}
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, path / MANIFEST_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def format_table(metrics: dict[str, Any]) -> str:
    rows = []
    if "fid" in metrics:
        f = metrics["fid"]
        rows.append(("FID", f"{f['value']:.2f}", f"{f['samples']} samples vs {f['real']} real"))
    psnr = metrics["psnr_db"]
    rows += [
        (
            "PSNR",
            "inf" if math.isinf(psnr) else f"{psnr:.2f} dB",
            metrics["evaluated"]["reconstruction_on"],
        ),
        ("SSIM", f"{metrics['ssim']:.4f}", "11×11 Gaussian, σ=1.5"),
        ("KL", f"{metrics['kl']:.2f} nats", "per image, summed over latent dims"),
    ]
    w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True, help="artifact directory STORE/NAME/VERSION")
    p.add_argument(
        "--data",
        default=None,
        help="data set (folder, .zip, .npz, .csv); default: the manifest's dataset.source",
    )
    p.add_argument("--fid-samples", type=int, default=10_000, help="generated images for FID")
    p.add_argument(
        "--fid-real",
        type=int,
        default=10_000,
        help="at most this many real images (the data set's first ones) for FID",
    )
    p.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    p.add_argument("--seed", type=int, default=0, help="sample i uses latent seed SEED + i")
    p.add_argument("--temperature", type=float, default=1.0, help="latent standard deviation for samples")
    p.add_argument("--no-fid", action="store_true", help="skip FID (reconstruction and KL only)")
    p.add_argument("--write", action="store_true", help="store the results in manifest.json under 'metrics'")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    p.add_argument(
        "--cache-dir",
        default="data_cache",
        help="where decoded data sets and real-set FID statistics are cached",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = all cores")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fidlib.keep_freed_memory()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.fid_samples < 2 or args.fid_real < 2:
        print("error: --fid-samples and --fid-real must be at least 2.", file=sys.stderr)
        return 2
    try:
        metrics = evaluate_artifact(
            args.artifact,
            args.data,
            fid_samples=args.fid_samples,
            fid_real=args.fid_real,
            batch_size=args.batch_size,
            seed=args.seed,
            temperature=args.temperature,
            compute_fid=not args.no_fid,
            write=args.write,
            device=args.device,
            cache_dir=args.cache_dir,
            progress=not args.quiet,
        )
    except (ArtifactError, DatasetError, fidlib.FidUnavailableError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    print(json.dumps(metrics, indent=2))
    if args.write:
        print(f"wrote metrics to {Path(args.artifact) / MANIFEST_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
