"""The CPU rehearsal of scripts/gpu_run.sh: every stage of the one prepared GPU run, with
tiny budgets, so the script cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch

from facegen_core.artifact import load_artifact
from training.cli import parse_train_args
from training.train import model_config
from training.warm_start import config_mismatch

ROOT = Path(__file__).resolve().parents[2]


def _unpack(tar: Path, dest: Path) -> Path:
    with tarfile.open(tar) as tf:
        tf.extractall(dest, filter="data")
    return dest


@pytest.mark.slow  # every stage of the GPU run, on tiny settings: about a minute on 2 cores
def test_the_gpu_run_rehearses_every_stage_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    cmd = [
        "bash",
        str(ROOT / "scripts" / "gpu_run.sh"),
        "--device=cpu",
        "--rehearsal",
        "--train-minutes=0.3",
        "--encoder-minutes=0.15",
        "--arm=pool2=--pixel-pool 2",
        f"--store={tmp_path / 'store'}",
        f"--runs={tmp_path / 'runs'}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    stages = summary["stages"]
    assert set(stages) == {
        "env",
        "tests",
        "train:faces64",
        "train:faces64-pool2",
        "encoder",
        "bench",
        "refine",
    }
    assert stages["refine"]["ok"] and [r["refine"] for r in stages["refine"]["reconstruct"]] == [0, 5]
    assert stages["train:faces64-pool2"]["ok"] and stages["train:faces64-pool2"]["steps"] >= 2
    assert "skipped" in stages["tests"]["result"]  # no CUDA here: the gpu tests skip, none fail
    train = stages["train:faces64"]
    assert train["steps"] >= 2 and train["images_per_s"] > 0
    assert train["crop"] == "align" and train["image_size"] == 32
    (cell,) = stages["bench"]["cells"]
    assert cell["workload"] == "gen1" and cell["errors"] == 0 and cell["images_per_s"] > 0

    # What comes back: at most 8 files, each under 16 MiB, none deeper than $OUT/a/b/file.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files), files
    assert {
        "summary.json",
        "run.log",
        "bench.json",
        "faces64-1.tar",
        "faces64-pool2-1.tar",
        "faces64-2.tar",
    } <= {p.name for p in files}

    # The artifact travels as a tar, with fp16 weights, and loads back as fp32 networks.
    tar = out / summary["artifacts"]["faces64-1"]["tar"]
    with tarfile.open(tar) as tf:
        tf.extractall(tmp_path / "back" / "faces64", filter="data")
    assert (tmp_path / "back" / "faces64" / "train_log.jsonl").is_file()
    art = load_artifact(tmp_path / "back" / "faces64" / "1")
    assert art.manifest["weights_dtype"] == "fp16"
    assert all(p.dtype == torch.float32 for p in art.decoder.parameters())
    assert art.manifest["dataset"]["name"] == "synthetic"
    assert art.config.input_crop == "align"  # the packs' crop, passed through to the served config
    arm_b = load_artifact(_unpack(out / summary["artifacts"]["faces64-pool2-1"]["tar"], tmp_path / "b") / "1")
    assert arm_b.manifest["training"]["args"]["pixel_pool"] == 2

    # The encoder stage: arm A's encoder trained on alone; its decoder and prior are arm A's.
    enc_stage = stages["encoder"]
    assert enc_stage["ok"] and enc_stage["steps"] >= 2 and enc_stage["init_from"].endswith("faces64/1")
    assert "--model-version 2" in (out / "run.log").read_text()  # the bench served that export
    tuned = load_artifact(_unpack(out / summary["artifacts"]["faces64-2"]["tar"], tmp_path / "enc") / "2")
    assert tuned.manifest["training"]["args"]["train_part"] == "encoder"
    assert tuned.manifest["training"]["init_from"]["weights_sha256"] == art.weights_sha256
    for a, b in zip(tuned.decoder.state_dict().values(), art.decoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(tuned.encoder.state_dict().values(), art.encoder.state_dict().values(), strict=True)
    )


def _gpu_run_module() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "scripts" / "gpu_run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_next_runs_preset_fits_one_device_call_and_builds_the_default_model(tmp_path: Path) -> None:
    gpu_run = _gpu_run_module()
    args = gpu_run.parse_args(["--out", str(tmp_path), "--preset", "next"])
    # Every stage's budget spent still ends inside one call, with room for the start and transfers.
    assert gpu_run.worst_case_s(args) <= gpu_run.DEVICE_CALL_LIMIT_S - 30
    assert args.encoder_minutes > 0 and "train" in args.stages.split(",")
    # The train stage's command, as the GPU machine will run it, builds the bundled model's
    # architecture (so that the service, the tests and the next warm start take it as it is).
    cmd = gpu_run.train_cmd(args, [Path("celeba-10k.facepack.zip")], "align", args.name, [])
    assert cmd[1:3] == ["-m", "training"]
    train_args = parse_train_args(cmd[3:])
    bundled = load_artifact(ROOT / "model_store" / "faces64" / "2")
    assert config_mismatch(model_config(train_args), bundled.config) == []
    # Flags after the preset win.
    shorter = gpu_run.parse_args(["--out", str(tmp_path), "--preset", "next", "--train-minutes", "2"])
    assert shorter.train_minutes == 2 and shorter.encoder_minutes == args.encoder_minutes


def test_missing_face_packs_fail_the_stage_with_a_message(tmp_path: Path) -> None:
    gpu_run = _gpu_run_module()
    assert gpu_run.find_packs(str(tmp_path / "absent.facepack.zip")) == []
    assert gpu_run.find_packs(str(tmp_path)) == []  # an empty folder
    out = tmp_path / "out"
    dirs = ["--store", str(tmp_path / "store"), "--runs", str(tmp_path / "runs")]
    absent = str(tmp_path / "absent.zip")
    rc = gpu_run.main(["--out", str(out), "--device", "cpu", "--stages", "train", "--data", absent, *dirs])
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 1 and "no face packs at" in summary["stages"]["train"]["error"]
