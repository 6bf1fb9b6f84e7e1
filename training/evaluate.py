"""Evaluate an exported artifact: FID, sharpness and face-found rate of its samples, and
reconstruction quality, sharpness, face-found rate and KL on the validation split it was
trained with, for each data source it was trained on.

    python -m training.evaluate --artifact models/faces/1 [--write] [--quick]

Deterministic: samples come from ``noise_for_seeds(seed, N)`` (one CPU generator per
seed) and the real set's Inception statistics are cached, so re-running the same command
on the same artifact and data reproduces every figure (FID to float rounding of the network).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
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
from facegen_core.refine import LEARNING_RATE, inside_photo, masked_mse, refine_latents
from training import fid as fidlib
from training.data import DatasetError, FaceDataset, load_faces, split_indices
from training.metrics_faces import DETECTOR, DetectorUnavailableError, face_found_rate
from training.metrics_image import psnr_per_image, sharpness, ssim_per_image
from training.model_card import CARD_FILE, write_card

# Sample counts: "standard" is the protocol of the figures in the README and manifests;
# "quick" (--quick) is a cheaper proxy for A/B comparisons between training recipes.
PRESETS: dict[str, dict[str, int]] = {
    "standard": {"fid_samples": 10_000, "fid_real": 10_000, "face_samples": 1000},
    "quick": {"fid_samples": 2000, "fid_real": 2000, "face_samples": 300},
}


@dataclass(frozen=True)
class EvalSettings:
    """What to measure and on how many images (the CLI flags, resolved against a preset)."""

    fid_samples: int = 10_000
    fid_real: int = 10_000
    face_samples: int = 1000
    batch_size: int = 50
    seed: int = 0
    temperature: float = 1.0
    compute_fid: bool = True
    compute_faces: bool = True
    preset: str = "standard"
    refine_steps: int = 0  # > 0: also measure reconstructions from refined latents (facegen_core.refine)
    refine_faces: int = 500  # ...of the first this many validation faces
    refine_lr: float = LEARNING_RATE  # Adam's step size (the service's)


@torch.inference_mode()
def generate_samples(
    art: Artifact, n: int, seed: int, temperature: float, batch_size: int, device: torch.device
) -> torch.Tensor:
    """uint8 (n, C, H, W): the decoder on z_i = prior(noise_for_seed(seed + i)), the artifact's
    prior (fitted Gaussian or N(0, I)) applied to the seed's noise, as the service does."""
    z = art.prior.latents_for_seeds(seed, n, art.config.latent_dim, temperature)  # (n, latent_dim)
    out = [
        model_to_uint8(art.decoder(z[i : i + batch_size].to(device))).cpu() for i in range(0, n, batch_size)
    ]
    c, s = art.config.channels, art.config.image_size
    return torch.cat(out) if out else torch.empty(0, c, s, s, dtype=torch.uint8)


@torch.inference_mode()
def reconstruct(
    art: Artifact, images: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 Dec(mu(x)) (N, C, H, W), float64 KL per image (N,)) for uint8 images x.

    The posterior mean, no sampling, rounded to uint8 as a user would see it.
    KL(q(z|x) || N(0, I)) = -½ Σ_j (1 + log σ_j² - μ_j² - σ_j²) (Kingma & Welling 2014,
    appendix B), summed over latent dims.
    """
    recons, kls = [], []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]  # uint8 (B, C, H, W)
        mu, logvar = art.encoder(uint8_to_model(x.to(device)))  # (B, latent_dim) each
        recons.append(model_to_uint8(art.decoder(mu)).cpu())
        kls.append((-0.5 * (1 + logvar - mu**2 - logvar.exp())).sum(1).double().cpu())
    return torch.cat(recons), torch.cat(kls)


def refined_reconstruct(
    art: Artifact,
    images: torch.Tensor,
    steps: int,
    batch_size: int,
    device: torch.device,
    lr: float = LEARNING_RATE,
) -> torch.Tensor:
    """uint8 Dec(z*) (N, C, H, W): z* is μ(x) refined for ``steps`` steps against x, what the
    service's ``refine=steps`` returns (facegen_core.refine)."""
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(device)  # uint8 (B, C, H, W)
        with torch.no_grad():
            mu, _ = art.encoder(uint8_to_model(x))  # (B, latent_dim)
        z = refine_latents(art.decoder, x, mu, steps, lr)
        with torch.no_grad():
            out.append(model_to_uint8(art.decoder(z)).cpu())
    return torch.cat(out)


def reconstruction_metrics(
    art: Artifact, images: torch.Tensor, batch_size: int, device: torch.device
) -> dict[str, float]:
    """PSNR, SSIM of x vs Dec(mu(x)) and the mean KL (see ``reconstruct``), averaged over images."""
    recon, kl = reconstruct(art, images, batch_size, device)
    return {
        "psnr_db": float(psnr_per_image(images, recon).mean()),
        "ssim": float(ssim_per_image(images, recon).mean()),
        "kl": float(kl.mean()),
    }


# --------------------------------------------------------------------------- data sources


def is_multi_source(manifest: dict[str, Any]) -> bool:
    return bool((manifest.get("dataset") or {}).get("sources"))


def source_records(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One record {name, source, images, split, ...} per training source: the entries of
    ``dataset.sources`` (several sources, v3), or the flat ``dataset`` itself (one source, v2)."""
    dataset = manifest.get("dataset") or {}
    return [dict(r) for r in dataset["sources"]] if is_multi_source(manifest) else [dict(dataset)]


def record_for(manifest: dict[str, Any], ds: FaceDataset) -> dict[str, Any]:
    """The training source ``ds`` is: found by its name (FaceDataset.source) among a
    multi-source manifest's sources; a single-source manifest's one record, whatever the name."""
    records = source_records(manifest)
    if not is_multi_source(manifest):
        return records[0]
    for record in records:
        if record.get("name") == ds.source:
            return record
    names = ", ".join(repr(r.get("name")) for r in records)
    raise DatasetError(
        f"The data set {ds.source!r} is not one of the artifact's training sources ({names}); pass "
        f"one of those with --data, or leave --data out to evaluate every source."
    )


def own_split_record(manifest: dict[str, Any], ds: FaceDataset) -> dict[str, Any]:
    """A source record for ``ds`` split by the artifact's own rule (its first source's seed and
    validation fraction, ``training.run_data.split_datasets``) over the whole data set."""
    split = source_records(manifest)[0].get("split") or {}
    seed, fraction = int(split.get("seed", 0)), float(split.get("val_fraction", 0.05))
    _, val_idx = split_indices(len(ds), fraction, seed)
    n_val = len(val_idx)
    return {
        "name": ds.source,
        "split": {"seed": seed, "val_fraction": fraction, "train": len(ds) - n_val, "val": n_val},
    }


def validation_images(record: dict[str, Any], ds: FaceDataset) -> tuple[torch.Tensor, str]:
    """The held-out images of one source's training split, and a note on how they were found.

    record['split'] = {seed, val_fraction, train, val} reproduces the split with
    ``split_indices(train + val, val_fraction, seed)`` (training/run_data.py splits every source
    on its own with that rule). Training on ``--limit n`` used the data set's first n images,
    so a larger set is cut to n first.
    """
    split = record.get("split")
    if not split:
        print(
            f"warning: the manifest records no split for {ds.source}; measuring reconstruction on "
            "every image.",
            file=sys.stderr,
        )
        return ds.images, "all images (manifest has no dataset split)"
    n = int(split["train"]) + int(split["val"])
    if len(ds) < n:
        raise DatasetError(
            f"The artifact was trained on {n} images of {ds.source} but the data set has only "
            f"{len(ds)}; pass the same --data it was trained on."
        )
    _, val_idx = split_indices(n, float(split["val_fraction"]), int(split["seed"]))
    if len(val_idx) != int(split["val"]):
        raise DatasetError(
            f"Recomputing the split of {ds.source} gives {len(val_idx)} validation images, the "
            f"manifest says {split['val']}; the data set differs from the one the artifact was "
            "trained on."
        )
    return ds.images[:n][val_idx], f"validation split (seed {split['seed']}, {len(val_idx)} of {n} images)"


def resolve_data(record: dict[str, Any], data: str | Path | None = None) -> Path:
    """``data`` when given, else the source's recorded path, which must exist here."""
    if data is not None:
        return Path(data)
    source = record.get("source")
    if not source:
        raise DatasetError("The manifest records no dataset source; pass the data set with --data PATH.")
    path = Path(str(source))
    if not path.exists():
        raise DatasetError(
            f"The manifest's data set {path} does not exist here; pass the data set with --data PATH."
        )
    return path


# --------------------------------------------------------------------------- measuring


def _rate(x: float) -> float:
    return round(x, 4)


def source_metrics(
    art: Artifact,
    ds: FaceDataset,
    record: dict[str, Any],
    samples: torch.Tensor,
    shared: dict[str, Any],
    s: EvalSettings,
    dev: torch.device,
    cache_dir: str | Path | None,
    progress: bool,
) -> dict[str, Any]:
    """Every figure for one data source. ``samples`` (uint8, at least max(fid_samples,
    face_samples)) and ``shared`` (their FID statistics, sharpness and face-found rate, filled
    on first use) are the same for every source: only the real and validation images differ."""
    cfg = art.config
    if tuple(ds.images.shape[1:]) != (cfg.channels, cfg.image_size, cfg.image_size):
        raise DatasetError(
            f"The data set's images are {tuple(ds.images.shape[1:])} but the model takes "
            f"{(cfg.channels, cfg.image_size, cfg.image_size)}; load it with the artifact's config."
        )
    val, val_note = validation_images(record, ds)
    real = ds.images[: s.fid_real]
    m: dict[str, Any] = {}
    if s.compute_fid:
        real_stats = fidlib.cached_statistics(
            real, cache_dir, batch_size=s.batch_size, device=dev, progress=progress
        )
        if "fid_stats" not in shared:
            feats = fidlib.inception_features(
                samples[: s.fid_samples], s.batch_size, dev, progress, desc="FID samples"
            )
            shared["fid_stats"] = fidlib.statistics(feats)
        m["fid"] = {
            "value": round(fidlib.fid_from_stats(real_stats, shared["fid_stats"]), 4),
            "samples": s.fid_samples,
            "real": int(real.shape[0]),
            "temperature": s.temperature,
            "network": fidlib.FID_NETWORK,
            "resize": fidlib.FID_RESIZE,
        }
    recon, kl = reconstruct(art, val, s.batch_size, dev)
    m["psnr_db"] = float(psnr_per_image(val, recon).mean())
    # Aligned photos cropped tighter than the template (FairFace) are part black border, which
    # no reconstruction should be scored on: the same PSNR over the pixels from the photo.
    keep = inside_photo(val)  # (N, 1, H, W) bool
    m["psnr_in_photo_db"] = psnr_in_photo_db(val, recon, keep)
    m["in_photo_share"] = _rate(float(keep.float().mean()))
    m["ssim"] = float(ssim_per_image(val, recon).mean())
    m["kl"] = float(kl.mean())
    if "sharpness" not in shared:
        shared["sharpness"] = sharpness(samples[: s.fid_samples])
    energy = {
        "real": sharpness(real),
        "samples": shared["sharpness"],
        "inputs": sharpness(val),
        "recon": sharpness(recon),
    }
    m["sharpness_samples"] = _rate(energy["samples"] / energy["real"])
    m["sharpness_recon"] = _rate(energy["recon"] / energy["inputs"])
    m["sharpness"] = {
        **{k: round(v, 6) for k, v in energy.items()},
        "samples_n": s.fid_samples,
        "real_n": int(real.shape[0]),
        "measure": "mean variance of the 8-neighbour 3×3 Laplacian of the grey image in [0, 1]",
    }
    if s.compute_faces:
        if "face_rate" not in shared:
            shared["face_rate"] = face_found_rate(samples[: s.face_samples], progress, "faces: samples")
        val_n = val[: s.face_samples]
        inputs_found = face_found_rate(val_n, progress, f"faces: {ds.source} inputs")
        recon_found = face_found_rate(recon[: s.face_samples], progress, f"faces: {ds.source} recon")
        m["faces"] = {
            "samples_found": _rate(shared["face_rate"]),
            "inputs_found": _rate(inputs_found),
            "recon_found": _rate(recon_found),
            "recon_vs_inputs": _rate(recon_found / inputs_found) if inputs_found > 0 else None,
            "samples": s.face_samples,
            "val": int(val_n.shape[0]),
            "detector": DETECTOR,
        }
    if s.refine_steps > 0:
        n = s.refine_faces
        m["refined"] = refined_metrics(art, val[:n], recon[:n], s, dev, progress, ds.source)
    m["reconstruction_on"] = val_note
    return m


def psnr_in_photo_db(images: torch.Tensor, recon: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean PSNR (dB) of uint8 recon vs images (N, C, H, W) over the pixels ``keep`` (N, 1, H, W)
    marks as the photo's; an image without such pixels is left out."""
    mse_in = masked_mse(images.float() / 255.0, recon.float() / 255.0, keep)  # (N,)
    return float((10.0 * torch.log10(1.0 / mse_in[mse_in.isfinite()])).mean())


def refined_metrics(
    art: Artifact,
    val: torch.Tensor,
    plain: torch.Tensor,
    s: EvalSettings,
    dev: torch.device,
    progress: bool,
    source: str,
) -> dict[str, Any]:
    """The reconstruction figures of ``source_metrics`` for latents refined ``s.refine_steps``
    steps (the service's ``refine``), on ``val`` (uint8 (N, C, H, W)), with the encoder's own
    figures on the same faces beside them (``plain``: their Dec(μ), already computed)."""
    t0 = time.perf_counter()
    recon = refined_reconstruct(art, val, s.refine_steps, s.batch_size, dev, s.refine_lr)
    seconds = time.perf_counter() - t0
    keep = inside_photo(val)

    def figures(r: torch.Tensor) -> dict[str, float]:
        return {
            "psnr_db": float(psnr_per_image(val, r).mean()),
            "psnr_in_photo_db": psnr_in_photo_db(val, r, keep),
            "ssim": float(ssim_per_image(val, r).mean()),
            "sharpness_recon": _rate(sharpness(r) / sharpness(val)),
        }

    out: dict[str, Any] = {
        "steps": s.refine_steps,
        "lr": s.refine_lr,
        "faces": int(val.shape[0]),
        "refined": figures(recon),
        "encoder": figures(plain),
        "seconds_per_face": round(seconds / max(1, int(val.shape[0])), 4),
        "device": str(dev),
        "threads": torch.get_num_threads(),
    }
    if s.compute_faces:
        out["refined"]["faces_found"] = _rate(face_found_rate(recon, progress, f"faces: {source} refined"))
        out["inputs_faces_found"] = _rate(face_found_rate(val, progress, f"faces: {source} inputs"))
    return out


def evaluate_artifact(
    path: str | Path,
    data: str | Path | None = None,
    *,
    dataset: FaceDataset | None = None,
    fid_samples: int = 10_000,
    fid_real: int = 10_000,
    face_samples: int = 1000,
    batch_size: int = 50,
    seed: int = 0,
    temperature: float = 1.0,
    compute_fid: bool = True,
    compute_faces: bool = True,
    refine_steps: int = 0,
    refine_faces: int = 500,
    refine_lr: float = LEARNING_RATE,
    preset: str = "standard",
    write: bool = False,
    device: str = "auto",
    cache_dir: str | Path | None = "data_cache",
    progress: bool = True,
    split: str = "recorded",
    split_of: str | Path | None = None,
) -> dict[str, Any]:
    """Measure an artifact and return its metrics dict (the manifest's "metrics" layout).

    ``split`` "own" (with ``data`` or ``dataset``) reconstructs the validation split that the
    artifact's seeded rule would hold out of that data set had it been a training source
    (``own_split_record``): a data set the model never saw, measured on the same faces as a
    model trained on it holds out. Such figures are not the artifact's own, so not written.
    ``split_of`` (another artifact's folder) measures on the validation faces *that* artifact's
    manifest records for the data set: two versions compared on the same faces (a candidate
    trained on a prefix of a data set, against the store's default). Not written either.

    ``data`` (a path) or ``dataset`` (already decoded with the artifact's image_size,
    channels and crop) evaluates that one source; without either, every source the manifest
    lists is loaded from its recorded path and evaluated in turn. One source (v2) gives the
    flat layout; a multi-source artifact gives ``per_source`` {name: figures} plus, at the top
    level, the figures of its first source when that one was evaluated. With ``write`` the
    result is merged into manifest.json's "metrics" (under "quick" for the quick preset).
    """
    if split not in ("recorded", "own"):
        raise ValueError(f"split must be 'recorded' or 'own', got {split!r}.")
    if split == "own" and (write or (data is None and dataset is None)):
        raise ValueError(
            "--split own measures one data set given with --data and is not written to the manifest."
        )
    if split_of is not None and (write or split == "own" or (data is None and dataset is None)):
        raise ValueError(
            "--split-of measures one data set given with --data on another artifact's validation "
            "faces; it does not combine with --split own and is not written to the manifest."
        )
    s = EvalSettings(
        fid_samples,
        fid_real,
        face_samples,
        batch_size,
        seed,
        temperature,
        compute_fid,
        compute_faces,
        preset,
        refine_steps,
        refine_faces,
        refine_lr,
    )
    dev = resolve_device(device)
    art = load_artifact(path, dev)  # verifies every sha256 first
    cfg = art.config

    def load(p: Path) -> FaceDataset:
        return load_faces(p, cfg.image_size, cfg.channels, cfg.input_crop, cache_dir=cache_dir)

    todo: list[tuple[dict[str, Any], FaceDataset | Path]]
    if dataset is None and data is not None:
        dataset = load(resolve_data({}, data))
    if dataset is not None:
        if split_of is not None:
            record = record_for(read_manifest(split_of), dataset)
        elif split == "own":
            record = own_split_record(art.manifest, dataset)
        else:
            record = record_for(art.manifest, dataset)
        todo = [(record, dataset)]
    else:  # every source; paths checked before any work
        todo = [(r, resolve_data(r)) for r in source_records(art.manifest)]

    n_samples = max(s.fid_samples, s.face_samples if s.compute_faces else 0)
    samples = generate_samples(art, n_samples, s.seed, s.temperature, s.batch_size, dev)
    shared: dict[str, Any] = {}
    per_source: dict[str, dict[str, Any]] = {}
    for record, src in todo:
        ds = src if isinstance(src, FaceDataset) else load(src)
        per_source[ds.source] = source_metrics(art, ds, record, samples, shared, s, dev, cache_dir, progress)

    evaluated: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seed": s.seed,
        "device": str(dev),
        "preset": s.preset,
        "data": "+".join(per_source),
    }
    if is_multi_source(art.manifest):
        metrics: dict[str, Any] = {"per_source": per_source}
        first = str(source_records(art.manifest)[0].get("name"))
        if first in per_source:  # existing readers (README, tests) read the first source's figures
            top = dict(per_source[first])
            evaluated["reconstruction_on"] = top.pop("reconstruction_on")
            evaluated["top_level"] = first
            metrics |= top
    else:
        metrics = next(iter(per_source.values()))
        evaluated["reconstruction_on"] = metrics.pop("reconstruction_on")
    metrics["evaluated"] = evaluated
    if write:
        write_metrics(path, metrics, under="quick" if s.preset == "quick" else None)
    return metrics


def merge_metrics(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` over ``old``; ``per_source`` is merged one level down, so evaluating one source
    (``--data``) keeps the other sources' figures."""
    merged = {**old, **new}
    if isinstance(old.get("per_source"), dict) and "per_source" in new:
        merged["per_source"] = {**old["per_source"], **new["per_source"]}
    return merged


def write_metrics(path: str | Path, metrics: dict[str, Any], under: str | None = None) -> None:
    """Merge ``metrics`` into manifest.json's "metrics" (or its ``under`` sub-dict) and replace
    the file atomically.

    manifest.json is not in its own sha256 list, so rewriting it keeps the artifact verifiable.
    """
    path = Path(path)
    manifest = read_manifest(path)
    current = manifest.get("metrics") or {}
    if under is None:
        manifest["metrics"] = merge_metrics(current, metrics)
    else:
        manifest["metrics"] = {**current, under: merge_metrics(current.get(under) or {}, metrics)}
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=path)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, path / MANIFEST_FILE)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if (path / CARD_FILE).is_file():  # the card quotes the figures: keep it in step
        write_card(path)


# --------------------------------------------------------------------------- output


def _rows(m: dict[str, Any], note: str) -> list[tuple[str, str, str]]:
    rows = []
    if "fid" in m:
        f = m["fid"]
        rows.append(("FID", f"{f['value']:.2f}", f"{f['samples']} samples vs {f['real']} real"))
    psnr = m["psnr_db"]
    rows.append(("PSNR", "inf" if math.isinf(psnr) else f"{psnr:.2f} dB", note))
    if "psnr_in_photo_db" in m:
        rows.append(
            (
                "PSNR in photo",
                f"{m['psnr_in_photo_db']:.2f} dB",
                f"pixels from the photo ({m['in_photo_share']:.1%}), not the alignment's black border",
            )
        )
    rows += [
        ("SSIM", f"{m['ssim']:.4f}", "11×11 Gaussian, σ=1.5"),
        ("KL", f"{m['kl']:.2f} nats", "per image, summed over latent dims"),
    ]
    if "sharpness_samples" in m:
        sh = m["sharpness"]
        rows += [
            (
                "Sharpness samples",
                f"{m['sharpness_samples']:.3f}",
                f"Laplacian variance vs {sh['real_n']} real; 1 = as sharp",
            ),
            ("Sharpness recon", f"{m['sharpness_recon']:.3f}", "Laplacian variance vs their inputs"),
        ]
    if "faces" in m:
        fc = m["faces"]
        ratio = fc["recon_vs_inputs"]
        rows += [
            (
                "Faces in samples",
                f"{fc['samples_found']:.3f}",
                f"fraction of {fc['samples']} with a face (MTCNN)",
            ),
            ("Faces in inputs", f"{fc['inputs_found']:.3f}", f"fraction of {fc['val']} validation images"),
            ("Faces in recon", f"{fc['recon_found']:.3f}", "fraction of their reconstructions"),
            ("Faces recon/inputs", "n/a" if ratio is None else f"{ratio:.3f}", "1 = as many as the inputs"),
        ]
    if "refined" in m:
        r = m["refined"]
        on = f"first {r['faces']} validation faces, refined {r['steps']} steps vs the encoder's μ"
        rows += [
            (
                "Refined PSNR in photo",
                f"{r['refined']['psnr_in_photo_db']:.2f} dB",
                f"{on}: {r['encoder']['psnr_in_photo_db']:.2f} dB",
            ),
            ("Refined SSIM", f"{r['refined']['ssim']:.4f}", f"μ: {r['encoder']['ssim']:.4f}"),
            (
                "Refined sharpness",
                f"{r['refined']['sharpness_recon']:.3f}",
                f"μ: {r['encoder']['sharpness_recon']:.3f}",
            ),
            (
                "Refine time",
                f"{r['seconds_per_face']:.2f} s",
                f"per face, {r['device']}, {r['threads']} threads",
            ),
        ]
        if "faces_found" in r["refined"]:
            rows.append(
                (
                    "Faces in refined",
                    f"{r['refined']['faces_found']:.3f}",
                    f"inputs: {r['inputs_faces_found']:.3f}",
                )
            )
    return rows


def format_table(metrics: dict[str, Any]) -> str:
    """Every figure as an aligned text table; one block per source for a multi-source artifact."""
    blocks: list[tuple[str | None, list[tuple[str, str, str]]]]
    if "per_source" in metrics:
        blocks = [(name, _rows(m, m["reconstruction_on"])) for name, m in metrics["per_source"].items()]
    else:
        blocks = [(None, _rows(metrics, metrics["evaluated"]["reconstruction_on"]))]
    every = [r for _, rows in blocks for r in rows]
    w0, w1 = max(len(r[0]) for r in every), max(len(r[1]) for r in every)
    lines = []
    for name, rows in blocks:
        if name is not None:
            lines.append(f"== {name}")
        lines += [f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True, help="artifact directory STORE/NAME/VERSION")
    p.add_argument(
        "--data",
        default=None,
        help="evaluate this one data set (folder, .zip, .npz, .csv; for a multi-source artifact one of "
        "its sources); default: every source the manifest records, from its recorded path",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="A/B proxy preset: 2000 samples vs 2000 real for FID, 300 for the face rate; "
        "--write stores it under metrics.quick",
    )
    p.add_argument("--fid-samples", type=int, default=None, help="generated images for FID (default 10000)")
    p.add_argument(
        "--fid-real",
        type=int,
        default=None,
        help="at most this many real images (the data set's first ones) for FID and sharpness (def. 10000)",
    )
    p.add_argument(
        "--face-samples",
        type=int,
        default=None,
        help="samples, and at most this many validation images, for the face-found rate (default 1000)",
    )
    p.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    p.add_argument("--seed", type=int, default=0, help="sample i uses latent seed SEED + i")
    p.add_argument("--temperature", type=float, default=1.0, help="latent standard deviation for samples")
    p.add_argument(
        "--split",
        choices=("recorded", "own"),
        default="recorded",
        help="validation faces of --data: the split the manifest records (recorded), or the split the "
        "artifact's seeded rule would hold out of the whole data set (own: for a data set it was not "
        "trained on; not written)",
    )
    p.add_argument(
        "--split-of",
        default=None,
        metavar="ARTIFACT",
        help="validation faces of --data as another artifact's manifest records them: two versions "
        "compared on the same faces (not written)",
    )
    p.add_argument("--no-fid", action="store_true", help="skip FID")
    p.add_argument("--no-faces", action="store_true", help="skip the face-found rate (MTCNN, ~35 ms/image)")
    p.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        help="also reconstruct from latents refined this many steps (the service's refine=N; "
        "facegen_core.refine) and report them under 'refined' (default 0: not measured)",
    )
    p.add_argument(
        "--refine-faces",
        type=int,
        default=500,
        help="refine the first this many validation faces (default 500)",
    )
    p.add_argument(
        "--refine-lr", type=float, default=LEARNING_RATE, help=f"Adam's step size (default {LEARNING_RATE})"
    )
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


def resolve_counts(args: argparse.Namespace) -> tuple[str, dict[str, int]]:
    """(preset name, sample counts): the preset's, overridden by any count flag given;
    a standard run with changed counts is labelled "custom"."""
    name = "quick" if args.quick else "standard"
    counts = dict(PRESETS[name])
    for key in counts:
        if getattr(args, key) is not None:
            counts[key] = int(getattr(args, key))
    if name == "standard" and counts != PRESETS["standard"]:
        name = "custom"
    return name, counts


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fidlib.keep_freed_memory()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    preset, counts = resolve_counts(args)
    if counts["fid_samples"] < 2 or counts["fid_real"] < 2 or counts["face_samples"] < 1:
        print(
            "error: --fid-samples and --fid-real must be at least 2, --face-samples at least 1.",
            file=sys.stderr,
        )
        return 2
    try:
        metrics = evaluate_artifact(
            args.artifact,
            args.data,
            fid_samples=counts["fid_samples"],
            fid_real=counts["fid_real"],
            face_samples=counts["face_samples"],
            batch_size=args.batch_size,
            seed=args.seed,
            temperature=args.temperature,
            compute_fid=not args.no_fid,
            compute_faces=not args.no_faces,
            refine_steps=args.refine_steps,
            refine_faces=args.refine_faces,
            refine_lr=args.refine_lr,
            preset=preset,
            write=args.write,
            device=args.device,
            cache_dir=args.cache_dir,
            progress=not args.quiet,
            split=args.split,
            split_of=args.split_of,
        )
    except (
        ArtifactError,
        DatasetError,
        fidlib.FidUnavailableError,
        DetectorUnavailableError,
        OSError,
        ValueError,
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(metrics))
    print(json.dumps(metrics, indent=2))
    if args.write:
        where = "metrics.quick" if preset == "quick" else "metrics"
        print(f"wrote {where} to {Path(args.artifact) / MANIFEST_FILE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
