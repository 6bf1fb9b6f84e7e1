"""training.inversion_gap: optimising z can only beat the encoder's mean on the pixel MSE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facegen_core import ModelConfig, build_autoencoder
from facegen_core.artifact import load_artifact, write_artifact
from facegen_core.preprocess import model_to_uint8
from training import inversion_gap
from training.data import split_indices, synthetic_faces


def test_optimised_latents_reconstruct_better_than_the_encoder(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    cfg = ModelConfig.tiny()
    enc, dec = build_autoencoder(cfg)
    faces = synthetic_faces(20, cfg.image_size, 3, seed=1).images
    data = tmp_path / "faces.npz"
    np.savez(data, images=faces.permute(0, 2, 3, 1).numpy())
    n_train, n_val = (len(t) for t in split_indices(20, 0.2, 7))
    manifest = {
        "dataset": {
            "source": str(data),
            "split": {"seed": 7, "val_fraction": 0.2, "train": n_train, "val": n_val},
        }
    }
    path = write_artifact(tmp_path / "store", "tiny", cfg, enc, dec, manifest=manifest)
    art = load_artifact(path)
    # Faces the decoder can draw exactly (Dec(z) of random z): an untrained encoder's mean
    # misses them, and optimising z must close much of that gap.
    with torch.no_grad():
        drawable = model_to_uint8(art.decoder.eval()(torch.randn(4, cfg.latent_dim)))
    r = inversion_gap.gap(art, drawable, steps=100)
    assert r["optimised_psnr_db"] > r["encoder_psnr_db"] + 3.0
    assert r["gap_db"] == r["optimised_psnr_db"] - r["encoder_psnr_db"]
    assert (
        inversion_gap.main(["--artifact", str(path), "--data", str(data), "--steps", "2", "--cache-dir", ""])
        == 0
    )
    assert "4 faces of the validation split" in capsys.readouterr().out
