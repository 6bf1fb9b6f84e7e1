"""training.inversion_gap: optimising z can only beat the encoder's mean on the pixel MSE."""

from __future__ import annotations

import torch

from facegen_core.artifact import load_artifact
from facegen_core.preprocess import model_to_uint8
from training import inversion_gap


def test_optimised_latents_reconstruct_better_than_the_encoder(tiny_artifact, capsys) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    path, data = tiny_artifact
    art = load_artifact(path)
    # Faces the decoder can draw exactly (Dec(z) of random z): an untrained encoder's mean
    # misses them, and optimising z must close much of that gap.
    with torch.no_grad():
        drawable = model_to_uint8(art.decoder.eval()(torch.randn(4, art.config.latent_dim)))
    r = inversion_gap.gap(art, drawable, steps=100)
    assert r["optimised_psnr_db"] > r["encoder_psnr_db"] + 3.0
    assert r["gap_db"] == r["optimised_psnr_db"] - r["encoder_psnr_db"]
    assert (
        inversion_gap.main(["--artifact", str(path), "--data", str(data), "--steps", "2", "--cache-dir", ""])
        == 0
    )
    assert "4 faces of the validation split" in capsys.readouterr().out
