"""datasheet.md of a bulk-generated face set: what made it, from what, under which terms.

After Gebru et al. (2021), *Datasheets for Datasets*: motivation, composition, the process
that made it, licence and uses, in a page a reader of the folder finds beside the images.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def _fig(value: Any, fmt: str = "{:.3g}") -> str:
    try:
        return fmt.format(float(value))
    except (TypeError, ValueError):
        return "not measured"


def figures(manifest: Mapping[str, Any]) -> list[str]:
    """Table rows of the model's measured quality, from its manifest's ``metrics``."""
    m = manifest.get("metrics") or {}
    fid = m.get("fid") or {}
    faces = m.get("faces") or {}
    rows = [
        (
            "FID (lower is better)",
            _fig(fid.get("value") if isinstance(fid, dict) else fid, "{:.1f}"),
            f"{fid.get('samples', '?')} samples vs {fid.get('real', '?')} real faces"
            if isinstance(fid, dict)
            else "",
        ),
        ("Sharpness of samples (1.0 = as sharp as photos)", _fig(m.get("sharpness_samples")), ""),
        (
            "Face found by MTCNN in samples",
            _fig(faces.get("samples_found"), "{:.1%}"),
            f"{faces.get('samples', '?')} samples",
        ),
        ("Reconstruction PSNR (dB)", _fig(m.get("psnr_db"), "{:.2f}"), "validation split"),
        ("Reconstruction SSIM", _fig(m.get("ssim")), "validation split"),
    ]
    return [f"| {a} | {b} | {c} |" for a, b, c in rows]


def datasheet(
    manifest: Mapping[str, Any],
    model: str,
    version: int,
    n: int,
    seed_start: int,
    temperature: float,
    attributes: str,
    fmt: str,
    concurrency: int,
) -> str:
    data = manifest.get("dataset") or {}
    training = manifest.get("training") or {}
    licence = data.get("licence") or "not stated in the model's manifest: ask the model's owner"
    weights = ((manifest.get("files") or {}).get("model.safetensors") or {}).get("sha256", "unknown")
    prior = (manifest.get("latent_prior") or {}).get("kind", "standard")
    ext = "jpg" if fmt == "jpeg" else "png"
    lines = [
        f"# Datasheet: {n:,} synthetic faces from facegen {model}/{version}",
        "",
        "**Every image in this folder is AI-generated** by a VAE-GAN (Larsen et al. 2015); none is a "
        "photograph of a real person. Each PNG says so in its metadata (`AI-Generated: true`, IPTC "
        "`trainedAlgorithmicMedia`); each JPEG in its EXIF ImageDescription.",
        "",
        "## Composition",
        "",
        f"- Files: `{seed_start:08d}.{ext}` … `{seed_start + n - 1:08d}.{ext}`, one face per seed "
        f"(seeds {seed_start} to {seed_start + n - 1}), {fmt.upper()}.",
        "- `labels.csv`: one row per file: `file, seed, temperature, attributes, model, version, "
        "model_sha256, sha256` (the last is the file's own sha256; rerunning the same command "
        "checks every file against it).",
        f"- Sampling: temperature {temperature:g}, latent prior `{prior}`, attributes `{attributes}`.",
        "- The same model version, seed and temperature give the same face, so any file can be "
        "made again from its row.",
        "",
        "## The model that made them",
        "",
        f"- `{model}` version {version}, weights sha256 `{weights}`, created "
        f"{manifest.get('created', 'unknown')}.",
        f"- Trained on: **{data.get('name', 'unknown')}** ({data.get('images', '?')} images), "
        f"{training.get('images_seen', '?')} images seen in {training.get('steps', '?')} steps "
        f"on {training.get('device', '?')}.",
        "- Its model card: `GET /models/{name}/card` on the service that made them.",
        "",
        "| Figure (from the model's manifest) | Value | Measured on |",
        "|---|---|---|",
        *figures(manifest),
        "",
        "## Licence and uses",
        "",
        f"- Training data terms: {licence}. Images made by the model are derived from it; check "
        "these terms before any use.",
        "- Intended: research data augmentation, privacy-preserving stand-ins for faces in "
        "pipelines and demos, testing face-processing code.",
        "- Not intended: identifying, impersonating or making claims about real people; "
        "biometric or forensic decisions; passing the images off as photographs.",
        "- Known limits: 64×64 pixels; some faces have distorted features; the faces reflect the "
        "demographics of the training data (CelebA is mostly young and light-skinned), so the set "
        "is not balanced for age, skin tone or gender.",
        "",
        "## Process",
        "",
        f"Made by `facegen-client generate` on {dt.datetime.now(dt.UTC).date().isoformat()} "
        f"({concurrency} requests in flight) against the facegen service's `POST /generate`.",
        "",
    ]
    return "\n".join(lines)
