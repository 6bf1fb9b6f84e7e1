"""--enc-head-channels / --enc-res-blocks with --init-from: the encoder grows without changing
its output, what is new learns, and an artifact cannot shrink."""

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
from training.grow import grow_encoder
from training.train import train


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _trained_like(enc: Encoder, seed: int) -> Encoder:
    """Non-trivial BatchNorm statistics and affine terms (an init's are 0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in enc.state_dict().items():
            if name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("running_var") or (name.endswith("weight") and t.dim() == 1):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)  # BatchNorm scales and variances
    return enc.eval()


def test_widened_head_gives_the_same_mu_and_logvar() -> None:
    torch.manual_seed(0)
    narrow = _trained_like(Encoder(ModelConfig.tiny()), 1)
    wide = Encoder(ModelConfig.tiny(enc_head_channels=12)).eval()
    grow_encoder(wide, narrow)
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        (mu_n, lv_n), (mu_w, lv_w) = narrow(x), wide(x)
    torch.testing.assert_close(mu_w, mu_n, rtol=0, atol=1e-6)
    torch.testing.assert_close(lv_w, lv_n, rtol=0, atol=1e-6)
    # The new maps are there and alive (their own init), only their outgoing weights are zero.
    assert wide.state_dict()["squeeze.0.weight"][4:].abs().sum() > 0
    assert wide.head.weight.view(wide.head.weight.shape[0], 12, -1)[:, 4:].abs().sum() == 0


def test_the_new_maps_get_gradient_through_the_head() -> None:
    torch.manual_seed(0)
    wide = Encoder(ModelConfig.tiny(enc_head_channels=12))
    grow_encoder(wide, Encoder(ModelConfig.tiny()))
    mu, _ = wide(torch.rand(4, 3, 32, 32) * 2 - 1)
    mu.pow(2).sum().backward()
    g = wide.head.weight.grad
    assert g is not None and g.view(g.shape[0], 12, -1)[:, 4:].abs().sum() > 0


def test_added_residual_blocks_give_the_same_mu_and_logvar_and_learn() -> None:
    torch.manual_seed(0)
    plain = _trained_like(Encoder(ModelConfig.tiny()), 2)
    deep = Encoder(ModelConfig.tiny(enc_res_blocks=2, enc_head_channels=6))
    grow_encoder(deep, plain)
    bns = [m for m in deep.res.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 4
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    deep.eval()
    with torch.no_grad():
        torch.testing.assert_close(deep(x)[0], plain(x)[0], rtol=0, atol=1e-6)
    deep.train()
    deep(x)[0].pow(2).sum().backward()
    gammas = [bn.weight for bn in bns[1::2]]  # each block's last BatchNorm scale (zero-γ)
    assert all(g.abs().sum() == 0 and g.grad is not None and g.grad.abs().sum() > 0 for g in gammas)


@pytest.mark.parametrize("smaller", [{"enc_head_channels": 3}, {"enc_res_blocks": 0}])
def test_shrinking_is_refused(smaller: dict[str, int]) -> None:
    big = Encoder(ModelConfig.tiny(enc_res_blocks=1))
    with pytest.raises(ValueError, match="shrink"):
        grow_encoder(Encoder(ModelConfig.tiny(**{"enc_res_blocks": 1, **smaller})), big)


def _argv(tmp_path: Path, artifact: Path, *extra: str) -> list[str]:
    return ["--dry-run", "--no-progress", "--no-export", "--init-from", str(artifact), "--seed", "5",
            "--run-dir", str(tmp_path / "run"), *extra]  # fmt: skip


def test_a_warm_start_grows_and_export_records_it(tmp_path: Path, trained_artifact: Path) -> None:
    base = load_artifact(trained_artifact)
    heads = base.config.enc_head_channels
    grow = ["--enc-head-channels", str(heads + 4), "--enc-res-blocks", "1", "--train-part", "encoder"]
    argv = _argv(tmp_path, trained_artifact, *grow)
    train(parse_train_args([*argv, "--max-steps", "0"]))
    state = ckpt.load_checkpoint(tmp_path / "run")
    grown = {"enc_head_channels": [heads, heads + 4], "enc_res_blocks": [0, 1]}
    assert state["init_from"]["encoder_grown"] == grown
    side2 = base.encoder.head.weight.shape[1] // heads  # positions per map
    assert state["encoder"]["head.weight"].shape[1] == side2 * (heads + 4)
    train(parse_train_args([*argv, "--max-steps", "2", "--resume"]))
    out = export_run(tmp_path / "run", tmp_path / "store", "wide")
    art = load_artifact(out)
    assert (art.config.enc_head_channels, art.config.enc_res_blocks) == (heads + 4, 1)
    for name, tensor in base.decoder.state_dict().items():  # the frozen decoder, bit for bit
        assert torch.equal(art.decoder.state_dict()[name], tensor), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["init_from"]["encoder_grown"] == grown


def test_a_smaller_encoder_is_refused_by_name(tmp_path: Path, trained_artifact: Path) -> None:
    heads = load_artifact(trained_artifact).config.enc_head_channels
    argv = _argv(tmp_path, trained_artifact, "--enc-head-channels", str(heads - 1))
    with pytest.raises(SystemExit, match=r"enc_head_channels: 3 < 4 \(an encoder can only grow\)"):
        train(parse_train_args(argv))
