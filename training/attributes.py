"""Attribute directions for an exported artifact, from its training split's encoder means and labels.

    python -m training.attributes --artifact model_store/faces64/1 \
        --data ../shared/data/celeba-10k.zip --cache-dir data_cache

Method (InterFaceGAN, Shen et al. 2020, "Interpreting the Latent Space of GANs for Semantic
Face Editing", sections 2.1-2.2):

1. Encode the training split (the one recorded in the manifest) to its encoder means μ (N, D)
   and whiten them by a Gaussian fitted to them: ε = L⁻¹(μ - m), so ε ~ N(0, I), the isotropic
   latent InterFaceGAN's argument (a linear boundary's normal is the editing direction) assumes.
2. Fit one L2-regularised logistic regression per attribute on ε (InterFaceGAN uses a linear
   SVM; both give a separating hyperplane) and take its unit normal n_k.
3. Conditional manipulation (their eq. 4): project n_k off the normals of the attributes whose
   *labels* are most correlated with k (``--condition`` of them, |φ| >= ``--min-correlation``),
   so that moving along it leaves those attributes' classifiers' scores unchanged:
   n_k ← (I - N(NᵀN)⁻¹Nᵀ) n_k, renormalised, N (D, c) the conditions' normals.
4. Store v_k = L n_k (z-space) with names and metadata in ``attributes.safetensors``, added to
   the artifact and its manifest (``facegen_core.artifact.add_file``). The weights are not touched.

A strength s along attribute k is then s standard deviations of the training faces' encoder
means along n_k (see ``facegen_core.attributes``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from facegen_core.artifact import add_file, load_artifact
from facegen_core.attributes import ATTRIBUTES_FILE, AttributeDirections
from facegen_core.latent import LatentPrior
from training.data import FaceDataset, load_faces, split_indices
from training.export import encoder_means

MIN_PER_CLASS = 20  # an attribute with fewer labelled faces on either side gets no direction


def fit_normals(eps: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, iters: int = 200) -> torch.Tensor:
    """Logistic regressions of y (N, K) in {0, 1} on eps (N, D), all K at once (float64, L-BFGS):
    their unit normals (K, D)."""
    x, t = eps.double(), y.double()
    w = torch.zeros(x.shape[1], t.shape[1], dtype=torch.float64, requires_grad=True)  # (D, K)
    b = torch.zeros(t.shape[1], dtype=torch.float64, requires_grad=True)  # (K,)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ w + b  # (N, K)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, t) + l2 * (w * w).sum() / 2
        loss.backward()
        return loss

    opt.step(closure)
    w = w.detach()
    return (w / w.norm(dim=0).clamp_min(1e-12)).T.contiguous()  # (K, D)


def label_correlation(y: torch.Tensor) -> torch.Tensor:
    """φ coefficients (K, K) of binary labels y (N, K)."""
    c = torch.corrcoef(y.double().T)
    return torch.nan_to_num(c, nan=0.0)


def conditions_for(
    k: int, corr: torch.Tensor, normals: torch.Tensor, top: int, min_corr: float, max_cos: float
) -> list[int]:
    """The ``top`` attributes (indices) whose labels correlate most with k's (|φ| >= min_corr),
    leaving out near-synonyms: those whose normal is within |cos| > max_cos of k's. To a linear
    model those are one concept (Smiling and High_Cheekbones, Male and Wearing_Lipstick), and
    projecting one off the other cancels the edit instead of isolating it."""
    c = corr[k].abs().clone()
    c[k] = -1.0
    cos = (normals.double() @ normals[k].double()).abs()  # (K,)
    order = [j for j in torch.argsort(c, descending=True).tolist() if c[j] >= min_corr and cos[j] <= max_cos]
    return order[:top]


def condition(n: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """n (D,) projected off span(others (c, D)) and renormalised (InterFaceGAN eq. 4)."""
    if len(others) == 0:
        return n
    a = others.double().T  # (D, c)
    # The pseudo-inverse, not a solve of AᵀA: two conditions may share a normal (synonyms).
    proj = a @ (torch.linalg.pinv(a) @ n.double())  # (D,)
    out = n.double() - proj
    return (out / out.norm().clamp_min(1e-12)).to(n.dtype)


def compute_directions(
    mu: torch.Tensor,
    labels: torch.Tensor,
    names: list[str],
    top: int = 3,
    min_corr: float = 0.2,
    max_cos: float = 0.5,
) -> tuple[AttributeDirections, torch.Tensor]:
    """Directions from encoder means mu (N, D) and ±1 (or 0/1) labels (N, K).

    Returns the z-space directions (attributes with fewer than MIN_PER_CLASS faces on a side
    are left out) and the unconditioned whitened normals (K', D) of those kept, for comparison.
    """
    y = (labels > 0).to(torch.int64)  # (N, K)
    keep = [
        k for k in range(y.shape[1]) if min(int(y[:, k].sum()), int((1 - y[:, k]).sum())) >= MIN_PER_CLASS
    ]
    y, names = y[:, keep], [names[k] for k in keep]
    prior = LatentPrior.fit(mu)
    assert prior.scale_tril is not None
    eps = prior.to_noise(mu.float()).double()  # (N, D), ~N(0, I)
    raw = fit_normals(eps, y)  # (K, D)
    corr = label_correlation(y)
    normals, per_attr = [], {}
    for k, name in enumerate(names):
        cond = conditions_for(k, corr, raw, top, min_corr, max_cos)
        n = condition(raw[k], raw[cond])
        proj = eps @ n  # (N,)
        pos, neg = proj[y[:, k] == 1], proj[y[:, k] == 0]
        acc = ((proj > (pos.mean() + neg.mean()) / 2) == (y[:, k] == 1)).double().mean()
        normals.append(n)
        per_attr[name] = {
            "positive_fraction": round(float(y[:, k].double().mean()), 4),
            "conditioned_on": [names[j] for j in cond],
            "separation": round(float(pos.mean() - neg.mean()), 4),
            "train_accuracy": round(float(acc), 4),  # thresholded at the class means' midpoint
            "cos_to_unconditioned": round(float(n @ raw[k]), 4),
        }
    n_all = torch.stack(normals)  # (K, D) whitened
    v = n_all @ prior.scale_tril.double().T  # (K, D): v_k = L n_k
    sep = torch.tensor([per_attr[n]["separation"] for n in names], dtype=torch.float32)
    info: dict[str, Any] = {
        "method": "InterFaceGAN conditional manipulation (Shen et al. 2020) on whitened encoder means",
        "classifier": "L2 logistic regression per attribute",
        "units": "standard deviations of the training faces' encoder means along the direction",
        "faces": int(mu.shape[0]),
        "condition_top": top,
        "condition_min_correlation": min_corr,
        "condition_max_cos": max_cos,
        "attributes": per_attr,
    }
    return AttributeDirections(names, v.float(), sep, info), raw.float()


def fairface_labels(data: Path, ds: FaceDataset) -> tuple[list[str], torch.Tensor] | None:
    """FairFace's gender and age labels (fairface_label_train.csv inside the zip) as ±1
    attributes "Male" and "Young" (age group below 30), aligned with ds.file_names."""
    import csv
    import io
    import zipfile

    if data.suffix.lower() != ".zip":
        return None
    with zipfile.ZipFile(data) as zf:
        csvs = [n for n in zf.namelist() if n.endswith("fairface_label_train.csv")]
        if not csvs:
            return None
        rows = list(csv.DictReader(io.StringIO(zf.read(csvs[0]).decode())))
    young = {"0-2", "3-9", "10-19", "20-29"}
    by_name = {Path(r["file"]).name: r for r in rows}
    if not all(n in by_name for n in ds.file_names):
        return None
    labels = [
        [1 if by_name[n]["gender"] == "Male" else -1, 1 if by_name[n]["age"] in young else -1]
        for n in ds.file_names
    ]
    return ["Male", "Young"], torch.tensor(labels, dtype=torch.int8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True, help="An exported artifact folder (STORE/NAME/VERSION).")
    p.add_argument(
        "--data", required=True, help="Labelled faces: CelebA (list_attr_celeba.txt) or FairFace zip."
    )
    p.add_argument("--cache-dir", default="data_cache", help="Decoded-face cache (training.data).")
    p.add_argument("--val-fraction", type=float, default=None, help="Default: the manifest's split.")
    p.add_argument("--seed", type=int, default=None, help="Split seed. Default: the manifest's.")
    p.add_argument("--condition", type=int, default=3, help="Correlated attributes each is conditioned on.")
    p.add_argument("--min-correlation", type=float, default=0.2, help="Least label |φ| to condition on.")
    p.add_argument("--max-cos", type=float, default=0.5, help="Skip conditions this close to the normal.")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    p.add_argument("--dry-run", action="store_true", help="Compute and print; do not write the artifact.")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    art = load_artifact(args.artifact)
    cfg = art.config
    split = art.manifest.get("dataset", {}).get("split", {})
    seed = args.seed if args.seed is not None else int(split.get("seed", 0))
    val_fraction = (
        args.val_fraction if args.val_fraction is not None else float(split.get("val_fraction", 0.05))
    )
    ds = load_faces(args.data, cfg.image_size, cfg.channels, cfg.input_crop, args.cache_dir or None)
    names, labels = ds.attribute_names, ds.attributes
    if labels is None or "fairface" in ds.source.lower():
        found = fairface_labels(Path(args.data), ds)
        if found is None and labels is None:
            sys.exit(f"{args.data} has no attribute labels (list_attr_celeba.txt or FairFace's CSV).")
        if found is not None:
            names, labels = found
    assert labels is not None
    train_idx, _ = split_indices(len(ds), val_fraction, seed)
    mu = encoder_means(art.encoder, ds.images[train_idx])
    attrs, _ = compute_directions(
        mu, labels[train_idx], names, args.condition, args.min_correlation, args.max_cos
    )
    attrs.info.update({"data": ds.source, "split": {"seed": seed, "val_fraction": val_fraction}})
    for name in attrs.names:
        a = attrs.info["attributes"][name]
        print(
            f"{name:22s} pos {a['positive_fraction']:.3f}  sep {a['separation']:5.2f} sd  "
            f"acc {a['train_accuracy']:.3f}  cond {','.join(a['conditioned_on']) or '-'}"
        )
    print(f"{len(attrs.names)} directions from {len(train_idx)} faces in {time.perf_counter() - t0:.0f} s")
    if args.dry_run:
        return
    summary = {
        "file": ATTRIBUTES_FILE,
        "names": attrs.names,
        "data": ds.source,
        "faces": len(train_idx),
        "method": attrs.info["method"],
        "units": attrs.info["units"],
    }
    add_file(args.artifact, ATTRIBUTES_FILE, attrs.to_bytes(), {"attributes": summary})
    print(f"wrote {Path(args.artifact) / ATTRIBUTES_FILE} and listed it in the manifest")


if __name__ == "__main__":
    main()
