"""--train-part decoder: the decoder alone, fitted to an artifact's frozen encoder
(training/decoder_step.py). The export must keep the encoder, the latent prior and the
decoder's BatchNorm statistics bit for bit, and the sample anchor must hold what the prior's
latents draw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facegen_core.artifact import load_artifact
from facegen_core.preprocess import uint8_to_model
from training import checkpoint as ckpt
from training.cli import parse_train_args
from training.decoder_step import decoder_losses, freeze_decoder_batchnorm
from training.export import export_run
from training.train import setup, train


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _argv(run: Path, artifact: Path | None, steps: int, *extra: str) -> list[str]:
    init = ["--init-from", str(artifact)] if artifact is not None else []
    return [
        "--dry-run", "--no-progress", "--no-export", "--train-part", "decoder", "--pixel-pool", "1",
        *init, "--run-dir", str(run), "--max-steps", str(steps), "--seed", "5", *extra,
    ]  # fmt: skip


def _bn_buffers(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: t for k, t in net.state_dict().items() if "running_" in k or "num_batches" in k}


def test_only_the_decoder_learns_and_the_export_keeps_encoder_prior_and_statistics(
    tmp_path: Path, trained_artifact: Path
) -> None:
    run = tmp_path / "run"
    train(parse_train_args(_argv(run, trained_artifact, 4)))
    state = ckpt.load_checkpoint(run)
    base = load_artifact(trained_artifact)
    for name, tensor in base.encoder.state_dict().items():  # weights and BatchNorm buffers
        assert torch.equal(state["encoder"][name], tensor), name
    buffers = _bn_buffers(base.decoder)
    assert buffers, "the test model's decoder has no BatchNorm"
    for key in ("decoder", "ema"):
        for name, tensor in buffers.items():
            assert torch.equal(state[key][name], tensor), f"{key}.{name}"
    weights = [k for k in base.decoder.state_dict() if k not in buffers]
    assert [k for k in weights if not torch.equal(state["decoder"][k], base.decoder.state_dict()[k])]
    assert [k for k in weights if not torch.equal(state["ema"][k], base.decoder.state_dict()[k])]

    tuned = load_artifact(export_run(run, tmp_path / "store", "tuned"))
    for name, tensor in base.encoder.state_dict().items():
        assert torch.equal(tuned.encoder.state_dict()[name], tensor), name
    for name, tensor in buffers.items():
        assert torch.equal(tuned.decoder.state_dict()[name], tensor), name
    assert base.prior.mean is not None and tuned.prior.mean is not None
    assert base.prior.scale_tril is not None and tuned.prior.scale_tril is not None
    assert torch.equal(tuned.prior.mean, base.prior.mean)
    assert torch.equal(tuned.prior.scale_tril, base.prior.scale_tril)
    manifest = json.loads((tuned.path / "manifest.json").read_text())["training"]
    assert "--train-part decoder" in manifest["encoder"]
    assert "frozen" in manifest["decoder_bn_statistics"] and "frozen" in manifest["encoder_bn_statistics"]
    prior = json.loads((tuned.path / "manifest.json").read_text())["latent_prior"]
    assert prior["from"] == "base v1 (the frozen encoder's), unchanged"


def test_the_loss_is_the_photo_pixels_plus_the_sample_anchor(tmp_path: Path, trained_artifact: Path) -> None:
    """L = w·MSE over the photo's pixels of Dec(μ(x)) + a·MSE(Dec(z_p), Dec₀(z_p)); at step 0
    the decoder is Dec₀, so the anchor term is exactly 0 and its gradient too."""
    argv = [*_argv(tmp_path / "run", trained_artifact, 1), "--precision", "fp32"]
    run = setup(parse_train_args([*argv, "--sample-anchor-weight", "3"]))
    assert run.anchor is not None and run.anchor.weight == 3.0
    run.nets.decoder.train()
    freeze_decoder_batchnorm(run.nets)  # as training.train.loop sets it
    g = torch.Generator().manual_seed(0)
    faces = torch.randint(1, 256, (4, *run.images.shape[1:]), generator=g, dtype=torch.uint8)
    faces[:, :, :, :10] = 0  # a filled band: columns 0-11 (with the mask's growth) do not count
    terms = decoder_losses(run.nets, faces, run.scfg, run.anchor)
    x = uint8_to_model(faces)
    with torch.no_grad():
        rec = run.nets.decoder(run.nets.encoder(x)[0])
    assert torch.allclose(terms["pixel"], ((rec - x)[..., 12:] ** 2).mean(), rtol=1e-5)
    assert float(terms["sample_anchor"].detach()) == 0.0
    assert torch.allclose(terms["dec"], run.scfg.pixel_weight * terms["pixel"])

    with torch.no_grad():  # a moved decoder: the anchor now pulls it back
        for p in run.nets.decoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    moved = decoder_losses(run.nets, faces, run.scfg, run.anchor)
    assert float(moved["sample_anchor"].detach()) > 0
    assert torch.allclose(moved["dec"], run.scfg.pixel_weight * moved["pixel"] + 3.0 * moved["sample_anchor"])
    off = setup(parse_train_args([*argv, "--sample-anchor-weight", "0"]))
    assert off.anchor is None and "sample_anchor" not in decoder_losses(off.nets, faces, off.scfg, None)


def test_the_anchor_follows_a_resume(tmp_path: Path, trained_artifact: Path) -> None:
    """--resume rebuilds the anchor from the run's --init-from record."""
    run = tmp_path / "run"
    train(parse_train_args(_argv(run, trained_artifact, 2)))
    argv = ["--resume", "--run-dir", str(run), "--max-steps", "3", "--no-progress"]
    resumed = setup(parse_train_args(argv))
    assert resumed.anchor is not None
    base = load_artifact(trained_artifact)
    for name, tensor in base.decoder.state_dict().items():
        assert torch.equal(resumed.anchor.decoder.state_dict()[name], tensor), name


def test_decoder_part_needs_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--init-from"):
        train(parse_train_args(_argv(tmp_path / "run", None, 1)))
