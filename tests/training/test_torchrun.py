"""Two-process data-parallel training on CPU: ``torchrun --nproc_per_node=2`` (gloo) runs the
dry run, every rank ends with bit-identical weights, and rank 0 alone exports them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from facegen_core.artifact import load_artifact
from training.distributed import parameter_sha256
from training.train import RANKS_FILE

REPO = Path(__file__).resolve().parents[2]
NETS = ("encoder", "decoder", "discriminator", "decoder_ema", "encoder_ema")


@pytest.mark.slow  # two processes each train and one exports: ~30 s
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
def test_torchrun_two_ranks_agree_and_rank0_exports(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    store, run_dir = tmp_path / "store", tmp_path / "run"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # = torchrun, with this interpreter
        "--standalone",  # a free local port: tests may run side by side
        "--nproc_per_node=2",
        "-m",
        "training",
        "--dry-run",
        "--device",
        "cpu",
        "--store",
        str(store),
        "--name",
        "ddp",
        "--run-dir",
        str(run_dir),
        "--no-progress",
        "--dis-warmup-steps",  # steps 0-1 train D alone (E, G forward without backward under DDP)
        "2",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out

    # Both ranks trained the same 4 steps (2 of D alone, then 2 of all three networks) on
    # disjoint halves of each batch and ended equal.
    assert "all 2 ranks hold identical weights after step 4" in out
    ranks = json.loads((run_dir / RANKS_FILE).read_text())
    assert ranks["world_size"] == 2 and ranks["step"] == 4
    digests = ranks["parameter_sha256"]
    assert set(digests) == set(NETS)
    for name in NETS:
        assert len(digests[name]) == 2 and digests[name][0] == digests[name][1], name

    # Rank 0 alone exported (one version, one "exported" line), and what it exported is
    # exactly those weights: the EMA encoder and the EMA decoder (--ema-encoder, the default).
    assert out.count("exported ") == 1
    assert [p.name for p in (store / "ddp").iterdir()] == ["1"]
    art = load_artifact(store / "ddp" / "1")
    assert parameter_sha256([art.encoder]) == digests["encoder_ema"][0]
    assert parameter_sha256([art.decoder]) == digests["decoder_ema"][0]
    tr = art.manifest["training"]
    assert tr["world_size"] == 2 and tr["steps"] == 4
    assert tr["images_seen"] == 4 * 8  # the global batch of 8, 4 per rank
    assert (store / "ddp" / "1" / "samples.png").is_file()
