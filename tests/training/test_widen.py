"""--enc-head-channels with --init-from: the encoder head grows without changing its output,
the new maps learn, and an artifact cannot be narrowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from facegen_core.artifact import load_artifact
from facegen_core.config import ModelConfig
from facegen_core.networks import Encoder
from training import checkpoint as ckpt
from training.cli import parse_train_args
from training.export import export_run
from training.train import train
from training.widen import widen_encoder_head


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _trained_like(enc: Encoder, seed: int) -> Encoder:
    """Non-trivial BatchNorm statistics and affine terms (an init's are 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return enc.eval()


def test_widened_head_gives_the_same_mu_and_logvar() -> None:
    torch.manual_seed(0)
    narrow = _trained_like(Encoder(ModelConfig.tiny()), 1)
    wide = Encoder(ModelConfig.tiny(enc_head_channels=12)).eval()
    widen_encoder_head(wide, narrow)
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        (mu_n, lv_n), (mu_w, lv_w) = narrow(x), wide(x)
    torch.testing.assert_close(mu_w, mu_n, rtol=0, atol=1e-6)
    torch.testing.assert_close(lv_w, lv_n, rtol=0, atol=1e-6)
    # The new maps are there and alive (their own init), only their outgoing weights are zero.
    assert wide.squeeze[0].weight[4:].abs().sum() > 0
    assert wide.head.weight.view(wide.head.weight.shape[0], 12, -1)[:, 4:].abs().sum() == 0


def test_the_new_maps_get_gradient_through_the_head() -> None:
    torch.manual_seed(0)
    wide = Encoder(ModelConfig.tiny(enc_head_channels=12))
    widen_encoder_head(wide, Encoder(ModelConfig.tiny()))
    mu, _ = wide(torch.rand(4, 3, 32, 32) * 2 - 1)
    mu.pow(2).sum().backward()
    g = wide.head.weight.grad
    assert g is not None and g.view(g.shape[0], 12, -1)[:, 4:].abs().sum() > 0


def test_narrowing_is_refused() -> None:
    wide, narrow = Encoder(ModelConfig.tiny(enc_head_channels=12)), Encoder(ModelConfig.tiny())
    with pytest.raises(ValueError, match="narrow"):
        widen_encoder_head(narrow, wide)


def _argv(tmp_path: Path, artifact: Path, *extra: str) -> list[str]:
    return ["--dry-run", "--no-progress", "--no-export", "--init-from", str(artifact), "--seed", "5",
            "--run-dir", str(tmp_path / "run"), *extra]  # fmt: skip


def test_a_warm_start_widens_and_export_records_it(tmp_path: Path, trained_artifact: Path) -> None:
    base = load_artifact(trained_artifact)
    heads = base.config.enc_head_channels
    argv = _argv(tmp_path, trained_artifact, "--enc-head-channels", str(heads + 4), "--train-part", "encoder")
    train(parse_train_args([*argv, "--max-steps", "0"]))
    state = ckpt.load_checkpoint(tmp_path / "run")
    assert state["init_from"]["encoder_head_widened"] == [heads, heads + 4]
    side2 = base.encoder.head.weight.shape[1] // heads  # positions per map
    assert state["encoder"]["head.weight"].shape[1] == side2 * (heads + 4)
    train(parse_train_args([*argv, "--max-steps", "2", "--resume"]))
    out = export_run(tmp_path / "run", tmp_path / "store", "wide")
    art = load_artifact(out)
    assert art.config.enc_head_channels == heads + 4
    for name, tensor in base.decoder.state_dict().items():  # the frozen decoder, bit for bit
        assert torch.equal(art.decoder.state_dict()[name], tensor), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["init_from"]["encoder_head_widened"] == [heads, heads + 4]


def test_a_narrower_head_is_refused_by_name(tmp_path: Path, trained_artifact: Path) -> None:
    heads = load_artifact(trained_artifact).config.enc_head_channels
    argv = _argv(tmp_path, trained_artifact, "--enc-head-channels", str(heads - 1))
    with pytest.raises(SystemExit, match="only widening"):
        train(parse_train_args(argv))
