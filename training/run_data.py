"""The data of one training run: ``--data``'s sources loaded, split per source, credited in
the manifest, and the seeded batch order the loop draws from.

Shared by ``training.train`` (which trains on the split's training rows) and
``training.export`` (which fits the latent prior on the same rows), so neither imports the
other.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch

from facegen_core.config import ModelConfig
from training import distributed as ddp
from training.data import FaceDataset, load_faces, split_indices, synthetic_faces

CELEBA_LICENCE = (
    "CelebA: non-commercial research only (MMLAB, CUHK); weights trained on it inherit these terms"
)
FAIRFACE_LICENCE = (
    "FairFace: CC BY 4.0; credit Kärkkäinen & Joo, 'FairFace: Face Attribute Dataset for Balanced "
    "Race, Gender, and Age', WACV 2021"
)
SYNTHETIC_LICENCE = "synthetic images drawn by training.data.synthetic_faces: no third-party terms"
UNKNOWN_LICENCE = "unknown: the terms of the data source apply to these weights; check them before sharing"


def data_sources(args: argparse.Namespace) -> list[str]:
    """--data split on commas: each source is loaded, split and credited on its own."""
    return [part.strip() for part in str(args.data).split(",") if part.strip()]


def load_datasets(args: argparse.Namespace, cfg: ModelConfig) -> list[FaceDataset]:
    if args.data is None:
        if not args.dry_run:
            raise SystemExit("No training data: pass --data PATH (or --dry-run for synthetic images).")
        return [synthetic_faces(args.dry_run_images, cfg.image_size, cfg.channels, seed=args.seed)]
    return [
        load_faces(
            source,
            cfg.image_size,
            cfg.channels,
            cfg.input_crop,
            cache_dir=args.cache_dir or None,
            limit=args.limit,
        )
        for source in data_sources(args)
    ]


def split_datasets(
    datasets: list[FaceDataset], args: argparse.Namespace
) -> tuple[torch.Tensor, list[torch.Tensor], list[tuple[int, int]]]:
    """(train uint8 (N_train, C, H, W) of every source, each source's validation images,
    each source's (n_train, n_val)). Every source is split on its own with the same seeded
    rule, so a single-source run's split is the one earlier versions recorded."""
    train, vals, sizes = [], [], []
    for ds in datasets:
        train_idx, val_idx = split_indices(len(ds), args.val_fraction, args.seed)
        train.append(ds.images[train_idx])
        vals.append(ds.images[val_idx])
        sizes.append((len(train_idx), len(val_idx)))
    return torch.cat(train), vals, sizes


def is_celeba(ds: FaceDataset) -> bool:
    return "celeba" in ds.source.lower() or ds.attribute_names[:1] == ["5_o_Clock_Shadow"]


def licence(ds: FaceDataset, synthetic: bool) -> str:
    if is_celeba(ds):
        return CELEBA_LICENCE
    if "fairface" in ds.source.lower():
        return FAIRFACE_LICENCE
    return SYNTHETIC_LICENCE if synthetic else UNKNOWN_LICENCE


def dataset_info(
    datasets: list[FaceDataset], args: argparse.Namespace, sizes: list[tuple[int, int]]
) -> dict[str, Any]:
    """The manifest's ``dataset``: one record per source with its split, plus the totals.
    A single source keeps the flat layout of earlier versions (evaluate reads both)."""
    synthetic = args.data is None
    paths = data_sources(args) if not synthetic else ["synthetic (--dry-run)"]
    sources: list[dict[str, Any]] = [
        {
            "name": ds.source,
            "source": path,
            "images": len(ds),
            "skipped": ds.skipped,
            "split": {"seed": args.seed, "val_fraction": args.val_fraction, "train": n_t, "val": n_v},
            "licence": licence(ds, synthetic),
        }
        for ds, path, (n_t, n_v) in zip(datasets, paths, sizes, strict=True)
    ]
    if len(sources) == 1:
        return sources[0]
    return {
        "name": "+".join(str(s["name"]) for s in sources),
        "source": ",".join(paths),
        "images": sum(int(s["images"]) for s in sources),
        "skipped": sum(int(s["skipped"]) for s in sources),
        "split": {
            "seed": args.seed,
            "val_fraction": args.val_fraction,
            "train": sum(n for n, _ in sizes),
            "val": sum(v for _, v in sizes),
            "per_source": True,
        },
        "licence": "; ".join(dict.fromkeys(str(s["licence"]) for s in sources)),
        "sources": sources,
    }


def load_training_images(
    args: argparse.Namespace, cfg: ModelConfig, info: ddp.DistInfo
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(uint8 (N_train, C, H, W) on the training device, the manifest's ``dataset`` record).
    All in memory: on a GPU the batches are then gathered there without a copy per step."""
    t_load = time.monotonic()
    datasets = load_datasets(args, cfg)
    train_cpu, _, sizes = split_datasets(datasets, args)
    data_info = dataset_info(datasets, args, sizes)
    del datasets  # the training rows were copied out: do not hold the whole set twice (2.5 GB for CelebA)
    images = train_cpu.to(info.device)
    del train_cpu
    if info.is_main:
        print(
            f"data: {data_info['images']} images from {data_info['source']} ({data_info['skipped']} "
            f"skipped), {images.shape[0]} train / {data_info['split']['val']} val, loaded in "
            f"{time.monotonic() - t_load:.1f}s; device {info.device}"
        )
    return images, data_info


def batch_indices(step: int, n: int, global_batch: int, seed: int, info: ddp.DistInfo) -> torch.Tensor:
    """This rank's rows of the global batch ``step``: a pure function of the step, so a
    resumed run draws exactly the batches the uninterrupted run would have."""
    per_epoch = max(1, n // global_batch)
    epoch, i = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    if n < global_batch:  # tiny data sets: sample with repetition
        perm = perm.repeat(math.ceil(global_batch / n))
    rows = perm[i * global_batch : (i + 1) * global_batch]
    return rows[info.rank :: info.world_size]
