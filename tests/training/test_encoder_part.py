"""--train-part encoder: the encoder alone against an artifact's frozen decoder
(training/encoder_step.py). The export must keep the decoder, its BatchNorm statistics and
the latent prior bit for bit, so samples (and FID) are the initial artifact's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facegen_core.artifact import load_artifact
from facegen_core.preprocess import uint8_to_model
from training import checkpoint as ckpt
from training.cli import parse_train_args
from training.encoder_step import encoder_losses
from training.export import export_run
from training.train import setup, train


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def artifact(trained_artifact: Path) -> Path:
    return trained_artifact


def _argv(run: Path, artifact: Path | None, steps: int) -> list[str]:
    init = ["--init-from", str(artifact)] if artifact is not None else []
    return [
        "--dry-run", "--no-progress", "--no-export", "--train-part", "encoder", "--pixel-pool", "1",
        *init, "--run-dir", str(run), "--max-steps", str(steps), "--seed", "5",
    ]  # fmt: skip


def test_only_the_encoder_learns_and_the_export_keeps_decoder_and_prior(
    tmp_path: Path, artifact: Path
) -> None:
    run = tmp_path / "run"
    train(parse_train_args(_argv(run, artifact, 4)))
    state = ckpt.load_checkpoint(run)
    base = load_artifact(artifact)
    changed = [k for k, t in base.encoder.state_dict().items() if not torch.equal(state["encoder"][k], t)]
    assert changed, "the encoder did not train"
    for key in ("decoder", "ema"):  # weights and BatchNorm buffers, untouched
        for name, tensor in base.decoder.state_dict().items():
            assert torch.equal(state[key][name], tensor), f"{key}.{name}"

    out = export_run(run, tmp_path / "store", "tuned")
    tuned = load_artifact(out)
    for name, tensor in base.decoder.state_dict().items():
        assert torch.equal(tuned.decoder.state_dict()[name], tensor), name
    assert base.prior.mean is not None and tuned.prior.mean is not None
    assert base.prior.scale_tril is not None and tuned.prior.scale_tril is not None
    assert torch.equal(tuned.prior.mean, base.prior.mean)
    assert torch.equal(tuned.prior.scale_tril, base.prior.scale_tril)
    assert (out / "samples.png").read_bytes() == (artifact / "samples.png").read_bytes()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "frozen" in manifest["training"]["decoder"]
    assert manifest["latent_prior"]["from"].startswith("base v1")


def test_pixels_outside_the_photo_do_not_count(tmp_path: Path, artifact: Path) -> None:
    """The pixel term of a face with a black border is the MSE over the photo's pixels only."""
    run = setup(parse_train_args([*_argv(tmp_path / "run", artifact, 1), "--precision", "fp32"]))
    g = torch.Generator().manual_seed(0)
    faces = torch.randint(1, 256, (4, *run.images.shape[1:]), generator=g, dtype=torch.uint8)
    faces[:, :, :, :10] = 0  # a filled band, as alignment leaves on tightly cropped photos
    torch.manual_seed(1)
    terms = encoder_losses(run.nets, faces, run.scfg)

    torch.manual_seed(1)  # the same reparameterisation noise, by hand
    x = uint8_to_model(faces)
    mu, logvar = run.nets.encoder(x)
    rec = run.nets.decoder(mu + torch.randn_like(mu) * (0.5 * logvar).exp())
    # The band (columns 0-9) grown by the mask's 2-px dilation: columns 0-11 do not count.
    err = (rec - x)[..., 12:]
    assert torch.allclose(terms["pixel"], (err**2).mean(), rtol=1e-5)
    assert float(terms["inside"]) == pytest.approx((faces.shape[-1] - 12) / faces.shape[-1])
    whole = ((rec - x) ** 2).mean()
    assert not torch.allclose(terms["pixel"], whole, rtol=1e-3)  # the border would have counted


def test_encoder_part_needs_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--init-from"):
        train(parse_train_args(_argv(tmp_path / "run", None, 1)))


def _bn_buffers(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: t for k, t in net.state_dict().items() if "running_" in k or "num_batches" in k}


def test_frozen_encoder_batchnorm_keeps_the_artifacts_statistics(tmp_path: Path, artifact: Path) -> None:
    """--encoder-bn frozen: the encoder trains, its BatchNorm running statistics stay the initial
    artifact's through training and export (not recomputed), and the manifest says so."""
    run = tmp_path / "run"
    train(parse_train_args([*_argv(run, artifact, 4), "--encoder-bn", "frozen"]))
    state = ckpt.load_checkpoint(run)
    base = load_artifact(artifact)
    base_enc = base.encoder.state_dict()
    buffers = _bn_buffers(base.encoder)
    assert buffers, "the test model's encoder has no BatchNorm"
    for key in ("encoder", "ema_encoder"):
        for name, tensor in buffers.items():
            assert torch.equal(state[key][name], tensor), f"{key}.{name}"
    weights = [k for k in base_enc if k not in buffers]
    moved = [k for k in weights if not torch.equal(state["encoder"][k], base_enc[k])]
    assert moved, "the encoder did not train"

    tuned = load_artifact(export_run(run, tmp_path / "store", "tuned"))
    for name, tensor in buffers.items():
        assert torch.equal(tuned.encoder.state_dict()[name], tensor), name
    manifest = json.loads((tuned.path / "manifest.json").read_text())
    assert "frozen" in manifest["training"]["encoder_bn_statistics"]


def test_batch_statistics_are_the_default_and_recomputed_at_export(tmp_path: Path, artifact: Path) -> None:
    """Without the flag the encoder's running statistics move during training (train mode) and the
    export recomputes them, as for faces64 v2."""
    run = tmp_path / "run"
    train(parse_train_args(_argv(run, artifact, 2)))
    state = ckpt.load_checkpoint(run)
    buffers = _bn_buffers(load_artifact(artifact).encoder)
    assert any(not torch.equal(state["encoder"][k], t) for k, t in buffers.items())
    manifest = json.loads((export_run(run, tmp_path / "store", "tuned") / "manifest.json").read_text())
    assert "recomputed" in manifest["training"]["encoder_bn_statistics"]
