"""Fixtures shared by the training tests: small exported artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facegen_core.artifact import write_artifact
from facegen_core.config import ModelConfig
from facegen_core.networks import build_autoencoder
from training.cli import parse_train_args
from training.data import split_indices, synthetic_faces
from training.export import export_run
from training.train import train


@pytest.fixture
def tiny_artifact(tmp_path: Path) -> tuple[Path, Path]:
    """(artifact, data): an untrained tiny-config artifact whose manifest records a 20-face .npz
    source split with split_indices(20, 0.2, 7)."""
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    enc, dec = build_autoencoder(cfg)
    faces = synthetic_faces(20, 32, 3, seed=1).images  # uint8 (20, 3, 32, 32)
    data = tmp_path / "faces.npz"
    np.savez(data, images=faces.permute(0, 2, 3, 1).numpy())
    n_train, n_val = (len(t) for t in split_indices(20, 0.2, 7))
    manifest = {
        "dataset": {
            "source": str(data),
            "split": {"seed": 7, "val_fraction": 0.2, "train": n_train, "val": n_val},
        },
        "metrics": {"train_loss": 1.5},
    }
    path = write_artifact(tmp_path / "store", "tiny", cfg, enc, dec, manifest=manifest)
    return path, data


@pytest.fixture(scope="module")
def trained_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported artifact from a training run (dry-run preset, 3 steps, fitted prior)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("trained")
    run = tmp / "run"
    train(parse_train_args(["--dry-run", "--no-progress", "--run-dir", str(run), "--max-steps", "3"]))
    return export_run(run, tmp / "store", "base")
