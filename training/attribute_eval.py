"""How well an artifact's attribute directions edit faces, judged by an independent classifier.

    python -m training.attribute_eval --artifact model_store/faces64/1 \
        --classifier runs/attr-classifier.safetensors \
        --data ../shared/data/celeba-10k.zip --cache-dir data_cache --grid docs/images/attribute_edits.png

For each of the ``--top`` most common attributes of the training split and each validation face
(the manifest's split; 500 for faces64): encode the face (μ), decode it (the reconstruction),
and ask the classifier (``training.attribute_classifier``, trained on real faces, never on the
VAE) for its decision. Then edit μ towards the *other* decision (strength -s if the classifier
says the face has the attribute, +s if not), decode, and ask again. Reported per attribute:

- flip: how often the decision changed (the edit did what it says);
- others: mean |Δp| of the classifier's probabilities for the other 39 attributes (how much the
  edit moved what it should not), and the one attribute that moved most;
- the same for the unconditioned direction (the plain classifier normal, before InterFaceGAN's
  conditioning) and for a random direction of the same length (the chance level of flipping).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from facegen_core.artifact import Artifact, load_artifact
from facegen_core.attributes import AttributeDirections
from facegen_core.latent import LatentPrior
from facegen_core.preprocess import model_to_uint8
from facegen_core.refine import refine_latents
from training.attribute_classifier import AttributeClassifier, load_classifier, predict
from training.attributes import compute_directions
from training.data import load_faces, split_indices
from training.export import encoder_means

GRID_ATTRIBUTES = (
    "Smiling",
    "Male",
    "Young",
    "Eyeglasses",
    "Blond_Hair",
    "Bangs",
    "Wearing_Lipstick",
    "Bald",
)


@torch.inference_mode()
def decode(art: Artifact, z: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """z (N, D) -> uint8 faces (N, C, H, W)."""
    return torch.cat(
        [model_to_uint8(art.decoder(z[i : i + batch_size])) for i in range(0, len(z), batch_size)]
    )


def edit_scores(
    art: Artifact,
    net: AttributeClassifier,
    mu: torch.Tensor,
    p0: torch.Tensor,
    k: int,
    v: torch.Tensor,
    strength: float,
) -> dict[str, Any]:
    """Edit mu (N, D) along v (D,) towards the other decision on classifier column k."""
    had = p0[:, k] > 0.5  # (N,)
    sign = torch.where(had, -1.0, 1.0)[:, None]  # (N, 1)
    p1 = predict(net, decode(art, mu + sign * strength * v[None]))  # (N, K)
    flipped = (p1[:, k] > 0.5) != had
    moved = (p1 - p0).abs().mean(dim=0)  # (K,)
    moved[k] = float("nan")
    others = moved[~torch.isnan(moved)]
    worst = int(torch.nan_to_num(moved, nan=-1.0).argmax())
    return {
        "flip": float(flipped.double().mean()),
        "flip_add": float(flipped[~had].double().mean()) if (~had).any() else None,
        "flip_remove": float(flipped[had].double().mean()) if had.any() else None,
        "others_mean_abs_dp": float(others.mean()),
        "worst_other": worst,
        "worst_other_abs_dp": float(moved[worst]),
        "target_mean_abs_dp": float((p1[:, k] - p0[:, k]).abs().mean()),
    }


def grid(art: Artifact, attrs: AttributeDirections, strengths: list[float], seed: int, path: Path) -> None:
    """One row per attribute (a different seed face each), columns at ``strengths``; 2× nearest."""
    names = [n for n in GRID_ATTRIBUTES if n in attrs.names]
    z = art.prior.latents_for_seeds(seed, len(names), art.config.latent_dim, 0.8)  # (R, D)
    rows = [
        decode(art, attrs.sweep(z[r], n, strengths[0], strengths[-1], len(strengths)))
        for r, n in enumerate(names)
    ]
    s, pad, label_w, head = art.config.image_size * 2, 4, 150, 22
    w = label_w + len(strengths) * (s + pad)
    h = head + len(names) * (s + pad)
    canvas = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(canvas)
    for c, st in enumerate(strengths):
        draw.text((label_w + c * (s + pad) + s // 2 - 10, 5), f"{st:+g}", fill="black")
    for r, (name, faces) in enumerate(zip(names, rows, strict=True)):
        y = head + r * (s + pad)
        draw.text((6, y + s // 2 - 6), name, fill="black")
        for c, face in enumerate(faces.permute(0, 2, 3, 1).numpy()):
            tile = Image.fromarray(np.ascontiguousarray(face)).resize((s, s), Image.Resampling.NEAREST)
            canvas.paste(tile, (label_w + c * (s + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True, help="An artifact with attributes.safetensors.")
    p.add_argument("--classifier", required=True, help="training.attribute_classifier's output.")
    p.add_argument("--data", required=True, help="The CelebA data the artifact was trained on.")
    p.add_argument("--cache-dir", default="data_cache", help="Decoded-face cache (training.data).")
    p.add_argument("--top", type=int, default=10, help="How many of the most common attributes.")
    p.add_argument("--strengths", default="2,3", help="Comma-separated edit strengths (sd).")
    p.add_argument("--val-faces", type=int, default=500, help="Validation faces to edit (at most).")
    p.add_argument("--grid", default="", help="Also write a picture grid of edits here (PNG).")
    p.add_argument("--json", default="", help="Also write the figures here (JSON).")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    p.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        help="Edit the validation faces' latents refined this many steps (the service's refine=N, "
        "facegen_core.refine) instead of the encoder means (default 0).",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    art = load_artifact(args.artifact)
    attrs = art.attributes
    if attrs is None:
        raise SystemExit(f"{args.artifact} has no attribute directions; run training.attributes first.")
    net, cnames = load_classifier(Path(args.classifier))
    strengths = [float(s) for s in args.strengths.split(",")]
    if args.grid:
        grid(art, attrs, [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0], 0, Path(args.grid))
        print(f"wrote {args.grid}")
    cfg = art.config
    ds = load_faces(args.data, cfg.image_size, cfg.channels, cfg.input_crop, args.cache_dir)
    assert ds.attributes is not None
    split = art.manifest.get("dataset", {}).get("split", {})
    train_idx, val_idx = split_indices(
        len(ds), float(split.get("val_fraction", 0.05)), int(split.get("seed", 0))
    )
    val_idx = val_idx[: args.val_faces]
    y_train = ds.attributes[train_idx]
    mu_train = encoder_means(art.encoder, ds.images[train_idx])
    raw_attrs, raw = compute_directions(mu_train, y_train, ds.attribute_names, top=0)  # unconditioned
    fit = LatentPrior.fit(mu_train)
    assert fit.scale_tril is not None
    mu = encoder_means(art.encoder, ds.images[val_idx])  # (V, D)
    if args.refine_steps > 0:  # what an upload with refine=N is edited from
        faces = ds.images[val_idx]
        mu = torch.cat(
            [
                refine_latents(art.decoder.eval(), faces[i : i + 50], mu[i : i + 50], args.refine_steps)
                for i in range(0, len(mu), 50)
            ]
        )
    p_real = predict(net, ds.images[val_idx])
    p0 = predict(net, decode(art, mu))  # the classifier on the reconstructions
    y_val = ds.attributes[val_idx] > 0
    acc_real = ((p_real > 0.5) == y_val).double().mean(dim=0)
    acc_recon = ((p0 > 0.5) == y_val).double().mean(dim=0)
    freq = (y_train > 0).double().mean(dim=0)
    top = [int(i) for i in torch.argsort(freq, descending=True)[: args.top]]
    g = torch.Generator().manual_seed(0)
    results: dict[str, Any] = {}
    for k in top:
        name = cnames[k]
        v = attrs.directions[attrs.names.index(name)]
        v_raw = (fit.scale_tril.double() @ raw[raw_attrs.names.index(name)].double()).float()
        n_rand = torch.randn(cfg.latent_dim, generator=g, dtype=torch.float64)
        v_rand = (fit.scale_tril.double() @ (n_rand / n_rand.norm())).float()
        r: dict[str, Any] = {
            "positive_fraction": float(freq[k]),
            "classifier_accuracy_real": float(acc_real[k]),
            "classifier_accuracy_recon": float(acc_recon[k]),
        }
        for s in strengths:
            r[f"conditioned@{s:g}"] = edit_scores(art, net, mu, p0, k, v, s)
            r[f"unconditioned@{s:g}"] = edit_scores(art, net, mu, p0, k, v_raw, s)
        r[f"random@{strengths[-1]:g}"] = edit_scores(art, net, mu, p0, k, v_rand, strengths[-1])
        for key in list(r):
            if isinstance(r[key], dict):
                r[key]["worst_other"] = cnames[r[key]["worst_other"]]
        results[name] = r
        c = r[f"conditioned@{strengths[-1]:g}"]
        print(f"{name}: flip {c['flip']:.3f}, others {c['others_mean_abs_dp']:.3f}", flush=True)
    s_hi = f"{strengths[-1]:g}"
    print(
        f"\n| attribute | share | flip @{strengths[0]:g} sd | flip @{s_hi} sd | others' mean abs Δp @{s_hi} "
        f"| most-moved other @{s_hi} | unconditioned: flip, others @{s_hi} | random dir.: flip @{s_hi} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        lo, hi = r[f"conditioned@{strengths[0]:g}"], r[f"conditioned@{s_hi}"]
        un, rnd = r[f"unconditioned@{s_hi}"], r[f"random@{s_hi}"]
        print(
            f"| {name} | {r['positive_fraction']:.2f} | {lo['flip']:.0%} | {hi['flip']:.0%} "
            f"| {hi['others_mean_abs_dp']:.3f} | {hi['worst_other']} ({hi['worst_other_abs_dp']:.2f}) "
            f"| {un['flip']:.0%}, {un['others_mean_abs_dp']:.3f} | {rnd['flip']:.0%} |"
        )
    mean = {
        key: float(np.mean([r[key]["flip"] for r in results.values()]))
        for key in (f"conditioned@{strengths[0]:g}", f"conditioned@{s_hi}")
    }
    print(f"\nmean flip rate: {mean}; {len(val_idx)} validation faces; {time.perf_counter() - t0:.0f} s")
    print(
        f"classifier accuracy on the real validation faces {acc_real.mean():.3f}, "
        f"on their reconstructions {acc_recon.mean():.3f} (all 40 attributes)"
    )
    if args.json:
        out = {
            "faces": len(val_idx),
            "refine_steps": args.refine_steps,
            "strengths": strengths,
            "mean_flip": mean,
            "attributes": results,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
