"""The model card of an artifact: MODEL_CARD.md, generated at export from its manifest.

After Mitchell et al. (2019), *Model Cards for Model Reporting*: what the model is, its data
and licence, intended and out-of-scope uses, known failure modes, and its measured figures.
``write_card`` renders the card from the artifact's own manifest and config, writes it beside
the weights and records its sha256 in the manifest, so ``verify_artifact`` checks it like every
other file; the service serves it at ``GET /models/{name}/card``.

    python -m training.model_card model_store/faces64/1     # (re)write one artifact's card
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from facegen_core.artifact import MANIFEST_FILE, read_manifest, sha256_file

CARD_FILE = "MODEL_CARD.md"
NOT_MEASURED = "not measured"


def _num(value: Any, fmt: str) -> str:
    try:
        return fmt.format(float(value))
    except (TypeError, ValueError):
        return NOT_MEASURED


def figures(metrics: Mapping[str, Any]) -> list[str]:
    """Markdown table rows of the evaluation figures (training.evaluate --write)."""
    raw = metrics.get("fid")
    fid: dict[str, Any] = raw if isinstance(raw, dict) else {"value": raw}
    faces = metrics.get("faces") or {}
    rows = [
        (
            "FID (lower is better)",
            _num(fid.get("value"), "{:.1f}"),
            f"{fid.get('samples', '?')} samples at temperature {fid.get('temperature', '?')} vs "
            f"{fid.get('real', '?')} training-set faces, {fid.get('network', '')}",
        ),
        ("Sharpness, samples / real", _num(metrics.get("sharpness_samples"), "{:.2f}"), "1.0 = photo"),
        ("Sharpness, reconstructions / real", _num(metrics.get("sharpness_recon"), "{:.2f}"), ""),
        (
            "Face found (MTCNN) in samples",
            _num(faces.get("samples_found"), "{:.1%}"),
            f"{faces.get('samples', '?')} samples",
        ),
        ("Face found in reconstructions", _num(faces.get("recon_found"), "{:.1%}"), "validation split"),
        ("Reconstruction PSNR", _num(metrics.get("psnr_db"), "{:.2f} dB"), "validation split"),
        ("Reconstruction SSIM", _num(metrics.get("ssim"), "{:.3f}"), "validation split"),
    ]
    return [f"| {a} | {b} | {c} |" for a, b, c in rows]


def decoder_origin(training: Mapping[str, Any], name: Any) -> list[str]:
    """The line for a version that trained one network alone, the other an earlier artifact's
    (``--train-part encoder`` or ``decoder``)."""
    init = training.get("init_from") or {}
    if "--train-part decoder" in str(training.get("encoder", "")) and init:
        anchor = (training.get("args") or {}).get("sample_anchor_weight")
        return [
            f"- Encoder and latent prior: {init.get('name', '?')} v{init.get('version', '?')}'s, "
            f"unchanged (weights sha256 `{init.get('weights_sha256', '?')}`); this version fitted "
            "that version's decoder to the encoder's means on the data below (`--train-part "
            f"decoder`), its samples held to the old decoder's by a distillation term (weight {anchor})."
        ]
    if "frozen" not in str(training.get("decoder", "")) or not init:
        return []
    return [
        f"- Decoder and latent prior: {init.get('name', '?')} v{init.get('version', '?')}'s, unchanged "
        f"(weights sha256 `{init.get('weights_sha256', '?')}`); this version trained the encoder alone "
        f"(`--train-part encoder`) on the data below, so its samples are {init.get('name', name)} "
        f"v{init.get('version', '?')}'s and its training data is the encoder's (the decoder's is in "
        "that version's card)."
    ]


def other_sources(metrics: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """Reconstruction rows of the sources after the first (whose figures are the top level).
    The first is the manifest's first training source: ``evaluated`` describes only the last
    evaluation, which may have measured another source alone."""
    sources = data.get("sources") or [{}]
    top = sources[0].get("name") or (metrics.get("evaluated") or {}).get("top_level")
    rows = []
    for source, m in (metrics.get("per_source") or {}).items():
        if source == top or not isinstance(m, dict):
            continue
        rows.append(
            f"| Reconstruction PSNR, {source}, pixels from the photo | "
            f"{_num(m.get('psnr_in_photo_db'), '{:.2f} dB')} | validation split |"
        )
        rows.append(
            f"| Face found in reconstructions, {source} | "
            f"{_num((m.get('faces') or {}).get('recon_found'), '{:.1%}')} | validation split |"
        )
    return rows


def render_card(manifest: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """MODEL_CARD.md's text for an artifact's manifest and config.json."""
    name, version = manifest.get("name", "?"), manifest.get("version", "?")
    data = manifest.get("dataset") or {}
    training = manifest.get("training") or {}
    metrics = manifest.get("metrics") or {}
    params = manifest.get("parameters") or {}
    prior = manifest.get("latent_prior") or {}
    files = manifest.get("files") or {}
    weights = (files.get("model.safetensors") or {}).get("sha256", "?")
    side = config.get("image_size", "?")
    licence = data.get("licence") or (
        "not recorded in the manifest: the weights inherit the terms of the training data; "
        "find them before any use"
    )
    evaluated = (metrics.get("evaluated") or {}).get("date")
    wall = training.get("wall_time_s")
    lines = [
        f"# Model card: {name} v{version}",
        "",
        f"A VAE-GAN (Larsen et al. 2015) that generates {side}×{side} RGB faces from a "
        f"{config.get('latent_dim', '?')}-d latent and encodes face photos into that latent. Served "
        "by facegen (`python -m service`); every image it returns is marked AI-generated in its "
        "metadata.",
        "",
        "## Model",
        "",
        f"- Encoder {params.get('encoder', '?'):,} parameters, decoder {params.get('decoder', '?'):,} "
        f"(weights {manifest.get('weights_dtype', 'fp32')}, sha256 `{weights}`), "
        f"upsampling `{config.get('upsample', '?')}`, kernel {config.get('kernel_size', '?')}."
        if isinstance(params.get("encoder"), int)
        else "- Parameters: not recorded.",
        f"- Latent prior: {prior.get('kind', 'standard')}"
        + (f" ({prior['fitted_on']})" if prior.get("fitted_on") else "")
        + "; samples are drawn from it.",
        *decoder_origin(training, name),
        f"- Input framing: `{config.get('input_crop', 'celeba')}` (uploads are cropped/aligned the "
        "same way as the training faces).",
        f"- Created {manifest.get('created', '?')}.",
        "",
        "## Training data",
        "",
        f"- **{data.get('name', 'unknown')}**: {data.get('images', '?')} images"
        + (
            f" (train {data['split'].get('train', '?')}, validation {data['split'].get('val', '?')}, "
            f"split seed {data['split'].get('seed', '?')})"
            if isinstance(data.get("split"), dict)
            else ""
        )
        + ".",
        f"- Licence: {licence}.",
        f"- Trained {training.get('steps', '?')} steps, {training.get('images_seen', '?')} images seen, "
        f"on {training.get('device', '?')} ({training.get('precision', '?')})"
        + (f" in {float(wall) / 60:.1f} min" if isinstance(wall, (int, float)) else "")
        + ".",
        "",
        "## Intended uses",
        "",
        "- Synthetic faces for research: data augmentation, privacy-preserving stand-ins for real "
        "faces in pipelines, demos and tests of face-processing code.",
        "- Exploring a learned face space: interpolation, reconstruction of aligned face photos.",
        "",
        "## Out-of-scope uses",
        "",
        "- Identifying, verifying or making claims about real people; any biometric, forensic, "
        "hiring, credit or policing decision.",
        "- Passing generated images off as photographs, or impersonating anyone.",
        "- Commercial use where the training data's licence forbids it (see above).",
        "",
        "## Known failure modes and limits",
        "",
        f"- Low resolution ({side}×{side}); some samples have distorted or asymmetric features, "
        "more often at temperatures above 1.",
        "- Reconstructions keep pose, colours and broad shape but loosen identity (see PSNR below).",
        "- Photos unlike the training framing (profile views, several faces, heavy occlusion) "
        "reconstruct poorly; alignment refuses photos without a detectable face.",
        "- The faces reflect the training data's demographics"
        + (
            " (CelebA: mostly young, light-skinned celebrities)"
            if "celeba" in str(data.get("name", "")).lower()
            else ""
        )
        + ", so they are not balanced for age, skin tone or gender.",
        "",
        "## Figures",
        "",
        "| Figure | Value | Measured on |",
        "|---|---|---|",
        *figures(metrics),
        *other_sources(metrics, data),
        "",
        (
            f"Evaluated {evaluated} by `python -m training.evaluate`."
            if evaluated
            else "Not evaluated yet: `python -m training.evaluate --artifact PATH --write` measures "
            "these and rewrites this card."
        ),
        "",
    ]
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_card(artifact: str | Path) -> Path:
    """(Re)write ARTIFACT/MODEL_CARD.md from its manifest and config, and record its sha256 in
    the manifest (manifest.json lists every file but itself, so the artifact stays verifiable;
    the weights are not touched)."""
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    config = json.loads((artifact / "config.json").read_text())
    card = artifact / CARD_FILE
    _write_atomic(card, render_card(manifest, config))
    files = dict(manifest.get("files") or {})
    files[CARD_FILE] = {"sha256": sha256_file(card), "bytes": card.stat().st_size}
    manifest["files"] = dict(sorted(files.items()))
    _write_atomic(artifact / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="(Re)write an artifact's MODEL_CARD.md from its manifest.")
    p.add_argument("artifacts", nargs="+", help="artifact folders, e.g. model_store/faces64/1")
    for path in p.parse_args(argv).artifacts:
        print(write_card(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
