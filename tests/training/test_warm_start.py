"""--init-from: a run that starts from an exported artifact's encoder, decoder and fitted
prior, with a fresh discriminator; a run of another architecture is refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facegen_core.artifact import load_artifact
from training import checkpoint as ckpt
from training.cli import parse_train_args
from training.export import export_run
from training.train import train


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def artifact(trained_artifact: Path) -> Path:
    return trained_artifact


def _common(tmp_path: Path, artifact: Path) -> list[str]:
    return [
        "--dry-run",
        "--no-progress",
        "--no-export",
        "--init-from",
        str(artifact),
        "--seed",
        "5",  # another seed: the random init would differ from the artifact's weights
    ]


def test_step_zero_holds_the_artifacts_weights_and_prior(tmp_path: Path, artifact: Path) -> None:
    run = tmp_path / "run"
    train(parse_train_args([*_common(tmp_path, artifact), "--run-dir", str(run), "--max-steps", "0"]))
    state = ckpt.load_checkpoint(run)
    art = load_artifact(artifact)
    for key, net in (("encoder", art.encoder), ("decoder", art.decoder)):
        for name, tensor in net.state_dict().items():
            assert torch.equal(state[key][name], tensor), f"{key}.{name}"
    for name, tensor in art.decoder.state_dict().items():
        assert torch.equal(state["ema"][name], tensor), f"ema.{name}"
    assert art.prior.mean is not None and art.prior.scale_tril is not None
    assert torch.allclose(state["gan_prior"]["mean"], art.prior.mean)
    cov = state["gan_prior"]["second"] - torch.outer(state["gan_prior"]["mean"], state["gan_prior"]["mean"])
    assert torch.allclose(cov, art.prior.scale_tril @ art.prior.scale_tril.T, atol=1e-4)
    record = state["init_from"]
    assert record["name"] == "base" and record["version"] == 1
    assert record["weights_sha256"] == art.weights_sha256


def test_training_on_from_the_artifact_and_export_records_it(tmp_path: Path, artifact: Path) -> None:
    run = tmp_path / "run"
    train(parse_train_args([*_common(tmp_path, artifact), "--run-dir", str(run), "--max-steps", "2"]))
    # A resumed warm-started run keeps its provenance.
    train(
        parse_train_args(
            [*_common(tmp_path, artifact), "--run-dir", str(run), "--max-steps", "3", "--resume"]
        )
    )
    assert ckpt.load_checkpoint(run)["step"] == 3
    out = export_run(run, tmp_path / "store", "tuned")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["init_from"]["weights_sha256"] == load_artifact(artifact).weights_sha256


def test_another_architecture_is_refused_naming_the_difference(tmp_path: Path, artifact: Path) -> None:
    argv = [*_common(tmp_path, artifact), "--run-dir", str(tmp_path / "run"), "--latent-dim", "7"]
    with pytest.raises(SystemExit, match="latent_dim: 7 vs"):
        train(parse_train_args(argv))


def _moved(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    """Names of the weights (not BatchNorm statistics, which follow every forward) that differ."""
    return {k for k in a if "running_" not in k and "num_batches" not in k and not torch.equal(a[k], b[k])}


def test_discriminator_warmup_holds_encoder_decoder_and_emas_then_releases_them(
    tmp_path: Path, artifact: Path
) -> None:
    run = tmp_path / "run"
    warm = [*_common(tmp_path, artifact), "--run-dir", str(run), "--dis-warmup-steps", "2"]
    train(parse_train_args([*warm, "--max-steps", "0"]))
    start = ckpt.load_checkpoint(run)
    train(parse_train_args([*warm, "--max-steps", "2", "--resume"]))
    warmed = ckpt.load_checkpoint(run)
    assert _moved(start["discriminator"], warmed["discriminator"]), "D did not learn in the warm-up"
    for key in ("encoder", "decoder", "ema", "ema_encoder"):
        assert not _moved(start[key], warmed[key]), f"{key} moved during the warm-up"
    train(parse_train_args([*warm, "--max-steps", "3", "--resume"]))
    released = ckpt.load_checkpoint(run)
    for key in ("encoder", "decoder"):
        assert _moved(warmed[key], released[key]), f"{key} still held after the warm-up"
