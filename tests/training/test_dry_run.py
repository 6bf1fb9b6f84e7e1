"""``python -m training --dry-run`` end to end in a real subprocess: it trains a few steps of
the tiny config on synthetic faces and exports a complete, verifiable artifact whose
``samples.png`` anyone can redraw bit for bit from the manifest."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from facegen_core.artifact import (
    WEIGHTS_FILE,
    ChecksumMismatchError,
    load_artifact,
    sha256_file,
)
from facegen_core.device import cpu_has_bf16
from facegen_core.images import grid_columns, make_grid
from facegen_core.latent import noise_for_seeds
from facegen_core.networks import count_parameters
from facegen_core.preprocess import model_to_uint8

# The documented `python -m training --dry-run` in a subprocess: ~30 s of training and export.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NAME = "dry-test"
ARTIFACT_FILES = {
    "model.safetensors",
    "MODEL_CARD.md",  # training/model_card.py
    "config.json",
    "manifest.json",
    "samples.png",
    "interpolation.png",
    "loss_curves.png",
}


def child_env() -> dict[str, str]:
    """The repo on the path, one thread (the CPU is shared, and one thread is what the
    pixel-exact comparison below runs with too)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the documented command once in an empty directory (so the default runs/NAME
    lands there too); every test below reads its result."""
    cwd = tmp_path_factory.mktemp("dry_run")
    store = cwd / "store"
    cmd = [sys.executable, "-m", "training", "--dry-run", "--store", str(store), "--name", NAME]
    t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300)
    wall, r1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    assert proc.returncode == 0, f"dry run failed:\n{proc.stdout}\n{proc.stderr}"
    path = store / NAME / "1"
    return {"cwd": cwd, "store": store, "path": path, "wall": wall, "cpu": cpu, "stdout": proc.stdout}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_dry_run_is_quick_and_prints_the_artifact_path(dry_run: dict[str, Any]) -> None:
    # CPU seconds, not wall time: on an idle CPU the two are close (about 10 s), and CPU time
    # does not flake when other work shares the machine.
    assert dry_run["cpu"] < 60, (
        f"the dry run used {dry_run['cpu']:.1f} CPU s ({dry_run['wall']:.1f} s wall); "
        f"it must stay under a minute"
    )
    assert f"exported {dry_run['path']}" in dry_run["stdout"]
    # With no --run-dir the run directory defaults to runs/NAME under the working directory.
    assert (dry_run["cwd"] / "runs" / NAME / "checkpoint.pt").is_file()
    assert (dry_run["cwd"] / "runs" / NAME / "train_log.jsonl").is_file()


def test_artifact_is_complete(dry_run: dict[str, Any]) -> None:
    path: Path = dry_run["path"]
    assert {p.name for p in path.iterdir()} == ARTIFACT_FILES
    manifest = json.loads((path / "manifest.json").read_text())
    # Every file but the manifest itself is listed with its real sha256 and size.
    assert set(manifest["files"]) == ARTIFACT_FILES - {"manifest.json"}
    for fname, meta in manifest["files"].items():
        assert meta["sha256"] == sha256_file(path / fname)
        assert meta["bytes"] == (path / fname).stat().st_size
    for png in ("samples.png", "interpolation.png", "loss_curves.png"):
        with Image.open(path / png) as img:
            img.verify()


def test_manifest_records_data_training_and_provenance(dry_run: dict[str, Any]) -> None:
    m = json.loads((dry_run["path"] / "manifest.json").read_text())
    assert (m["name"], m["version"]) == (NAME, 1)
    assert m["created"].endswith("+00:00")

    art = load_artifact(dry_run["path"])
    assert m["parameters"] == {
        "encoder": count_parameters(art.encoder),
        "decoder": count_parameters(art.decoder),
    }
    assert m["parameters"]["encoder"] > 0 and m["parameters"]["decoder"] > 0

    ds = m["dataset"]
    assert ds["name"] == "synthetic"
    assert ds["images"] == 64  # --dry-run-images default
    assert ds["split"]["train"] + ds["split"]["val"] == ds["images"]
    assert ds["split"]["val"] >= 1 and ds["split"]["seed"] == 0
    assert "synthetic" in ds["licence"]

    tr = m["training"]
    assert tr["steps"] == 4  # the dry-run preset
    assert tr["images_seen"] == 4 * 8  # steps × batch size
    assert 0 < tr["wall_time_s"] < 60
    # bf16 autocast where the CPU computes bf16 natively (--precision auto), fp32 elsewhere.
    assert tr["device"] == "cpu" and tr["trained_on"] == "cpu"
    assert tr["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    assert tr["world_size"] == 1
    assert tr["args"]["config"] == "tiny" and tr["args"]["dry_run"] is True

    # The architecture came from the tiny preset and travels in config.json.
    assert art.config.image_size == 32 and art.config.latent_dim == 8


def test_samples_png_is_reproducible_from_the_manifest_seed(dry_run: dict[str, Any]) -> None:
    art = load_artifact(dry_run["path"])
    rec = art.manifest["samples"]
    noise = noise_for_seeds(rec["seed"], rec["n"], art.config.latent_dim, rec["temperature"])  # (n, D)
    z = art.prior.from_noise(noise)  # the fitted prior export wrote into the weights
    with torch.no_grad():
        faces = model_to_uint8(art.decoder(z)).permute(0, 2, 3, 1).numpy()  # (n, H, W, C)
    expected = make_grid(faces, ncols=grid_columns(rec["n"]), padding=2)
    with Image.open(dry_run["path"] / "samples.png") as img:
        saved = np.asarray(img)
    assert saved.shape == expected.shape == (8 * 34 + 2, 8 * 34 + 2, 3)
    assert np.array_equal(saved, expected)
    # Not a blank picture: the faces differ from one another. (Most, not all: the 4-step
    # model's encoder barely separates its inputs, so the prior fitted to its means is narrow
    # and a few uint8 faces coincide.)
    assert len({faces[i].tobytes() for i in range(len(faces))}) > rec["n"] // 2
    assert art.manifest["latent_prior"]["kind"] == "fitted-gaussian" and not art.prior.is_standard


def test_one_flipped_byte_in_the_weights_fails_the_load(dry_run: dict[str, Any], tmp_path: Path) -> None:
    copy = tmp_path / "artifact"
    shutil.copytree(dry_run["path"], copy)
    weights = copy / WEIGHTS_FILE
    expected = json.loads((copy / "manifest.json").read_text())["files"][WEIGHTS_FILE]["sha256"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    actual = sha256_file(weights)
    assert actual != expected

    with pytest.raises(ChecksumMismatchError) as err:
        load_artifact(copy)
    msg = str(err.value)
    assert str(weights) in msg and expected in msg and actual in msg
    assert (err.value.expected, err.value.actual) == (expected, actual)


def test_export_writes_the_model_card(dry_run: dict[str, Any]) -> None:
    card = (dry_run["path"] / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# Model card: {NAME} v1") and "## Out-of-scope uses" in card
    assert "Not evaluated yet" in card  # export measures nothing; evaluate --write renews the card
