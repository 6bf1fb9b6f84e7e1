"""`facegen-client generate` (bulk) and `encode`/`reconstruct` over a folder, run as the real
command against a real service: files, labels.csv, datasheet.md, resuming after edits and
after a kill, and refusing to mix runs."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file

from facegen_client import Client
from facegen_client.bulk import COLUMNS, LABELS
from tests.service.live import ROOT, LiveService, png_text

ENV = {**os.environ, "PYTHONPATH": str(ROOT / "client"), "PYTHONUNBUFFERED": "1"}


def cli(service: LiveService, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "facegen_client", "--url", service.url, "--quiet", *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def labels(out: Path) -> list[dict[str, str]]:
    with open(out / LABELS, newline="") as f:
        return list(csv.DictReader(f))


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}


def test_generate_writes_faces_labels_and_a_datasheet(
    service: LiveService, fg: Client, tmp_path: Path
) -> None:
    out = tmp_path / "faces"
    r = cli(
        service,
        "generate",
        "--n",
        "37",
        "--out",
        str(out),
        "--seed-start",
        "1000",
        "--batch",
        "8",
        "--concurrency",
        "3",
        "--temperature",
        "0.9",
    )
    assert r.returncode == 0, r.stderr
    assert "37 faces written" in r.stderr and "faces/s" in r.stderr
    files = snapshot(out)
    assert sorted(files) == [f"{s:08d}.png" for s in range(1000, 1037)]
    rows = labels(out)
    assert list(rows[0]) == COLUMNS and [int(row["seed"]) for row in rows] == list(range(1000, 1037))
    weights = fg.models()["loaded"]["manifest"]["files"]["model.safetensors"]["sha256"]
    for row in rows:
        data = files[row["file"]]
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        assert (row["temperature"], row["attributes"], row["model"], row["version"]) == (
            "0.9",
            "{}",
            "tiny",
            "1",
        )
        assert row["model_sha256"] == weights
        text = png_text(data)
        assert text["facegen:seed"] == row["seed"] and text["AI-Generated"] == "true"
    # Each file is the service's face for its seed.
    direct = fg.generate(n=2, seed=1035, temperature=0.9)
    assert [files["00001035.png"], files["00001036.png"]] == direct.png
    sheet = (out / "datasheet.md").read_text()
    assert "AI-generated" in sheet and "tiny" in sheet and "37 synthetic faces" in sheet
    assert "not stated in the model's manifest" in sheet  # the tiny artifact records no licence


def test_rerun_skips_verified_files_and_remakes_the_rest(service: LiveService, tmp_path: Path) -> None:
    out = tmp_path / "faces"
    assert cli(service, "generate", "--n", "20", "--out", str(out), "--batch", "4").returncode == 0
    before = snapshot(out)
    (out / "00000003.png").unlink()  # gone
    (out / "00000007.png").write_bytes(b"changed")  # fails its sha256
    text = (out / LABELS).read_text().splitlines()
    (out / LABELS).write_text("\n".join(text[:-1]) + "\n" + text[-1][:30])  # last row cut by a kill
    r = cli(service, "generate", "--n", "24", "--out", str(out), "--batch", "4")
    assert r.returncode == 0, r.stderr
    assert "7 faces written" in r.stderr and "17 already there and verified" in r.stderr, r.stderr
    after = snapshot(out)
    assert len(after) == 24 and all(after[k] == v for k, v in before.items())
    assert [int(row["seed"]) for row in labels(out)] == list(range(24))
    again = cli(service, "generate", "--n", "24", "--out", str(out))
    assert "0 faces written" in again.stderr and "24 already there" in again.stderr


def test_a_different_run_into_the_same_folder_is_refused(service: LiveService, tmp_path: Path) -> None:
    out = tmp_path / "faces"
    assert cli(service, "generate", "--n", "3", "--out", str(out)).returncode == 0
    r = cli(service, "generate", "--n", "3", "--out", str(out), "--temperature", "0.5")
    assert r.returncode == 2 and "temperature='1'" in r.stderr and "another --out" in r.stderr
    r = cli(service, "generate", "--n", "3", "--out", str(out), "--format", "jpeg")
    assert r.returncode == 2 and "format" in r.stderr


def test_resumes_after_a_kill(service: LiveService, tmp_path: Path) -> None:
    out = tmp_path / "faces"
    cmd = [
        sys.executable,
        "-m",
        "facegen_client",
        "--url",
        service.url,
        "--quiet",
        "generate",
        "--n",
        "600",
        "--out",
        str(out),
        "--batch",
        "1",
        "--concurrency",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / LABELS).is_file() and len((out / LABELS).read_text().splitlines()) > 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = len(labels(out))
    assert 0 < done_before < 600
    r = cli(service, "generate", "--n", "600", "--out", str(out), "--batch", "32")
    assert r.returncode == 0, r.stderr
    rows = labels(out)
    assert [int(row["seed"]) for row in rows] == list(range(600)) and len(snapshot(out)) == 600
    assert not list(out.glob("*.part"))
    for row in rows:
        assert hashlib.sha256((out / row["file"]).read_bytes()).hexdigest() == row["sha256"]
    fresh = tmp_path / "fresh"  # the same seeds in one go give the same files
    assert cli(service, "generate", "--n", "600", "--out", str(fresh), "--batch", "64").returncode == 0
    assert snapshot(fresh) == snapshot(out)


def test_jpeg_keeps_the_ai_generated_label(service: LiveService, tmp_path: Path) -> None:
    out = tmp_path / "jpeg"
    assert cli(service, "generate", "--n", "3", "--out", str(out), "--format", "jpeg").returncode == 0
    with Image.open(out / "00000002.jpg") as img:
        assert img.format == "JPEG" and img.size == (32, 32)
        description = img.getexif()[0x010E]
    assert "AI-generated" in description and "seed 2" in description
    assert labels(out)[2]["file"] == "00000002.jpg"


@pytest.mark.parametrize("fmt", ["npy", "safetensors"])
def test_encode_and_reconstruct_a_folder(service: LiveService, fg: Client, tmp_path: Path, fmt: str) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    faces = fg.generate(n=5, seed=20)
    names = ["a.png", "b.png", "sub/c.png", "d.png", "e.png"]
    for name, data in zip(names, faces.png, strict=True):
        (photos / name).write_bytes(data)
    (photos / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "latents"
    r = cli(
        service,
        "reconstruct",
        str(photos),
        "--out",
        str(out),
        "--format",
        fmt,
        "--batch",
        "4",
        "--align",
        "false",
    )
    assert r.returncode == 1 and "5 photos encoded, 1 refused" in r.stderr, r.stderr
    with open(out / "index.csv", newline="") as f:
        index = {row["file"]: row for row in csv.DictReader(f)}
    assert index["broken.png"]["row"] == "-1" and "unsupported-image" in index["broken.png"]["status"]
    if fmt == "npy":
        mu = np.load(out / "latents.npy")
        assert np.load(out / "logvar.npy").shape == mu.shape
    else:
        tensors = load_file(str(out / "latents.safetensors"))
        mu = tensors["mu"]
        assert tensors["logvar"].shape == mu.shape
    assert mu.shape == (5, 8) and mu.dtype == np.float32
    expected = fg.encode(faces.png, align=False).mu
    for name, want in zip(names, expected, strict=True):
        row = index[name]
        assert (
            row["status"] == "ok"
            and row["sha256"] == hashlib.sha256((photos / name).read_bytes()).hexdigest()
        )
        np.testing.assert_allclose(mu[int(row["row"])], want, atol=1e-5)
    recon = out / "reconstructions" / "sub__c.png"
    with Image.open(io.BytesIO(recon.read_bytes())) as img:
        assert img.size == (32, 32)


def test_encode_a_folder_with_refinement_saves_the_refined_latents(
    service: LiveService, fg: Client, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    faces = fg.generate(n=2, seed=40)
    for i, data in enumerate(faces.png):
        (photos / f"{i}.png").write_bytes(data)
    out = tmp_path / "latents"
    r = cli(service, "reconstruct", str(photos), "--out", str(out), "--align", "false", "--refine", "5")
    assert r.returncode == 0, r.stderr
    latents = np.load(out / "latents.npy")
    refined = fg.encode(faces.png, align=False, refine=5)
    np.testing.assert_allclose(latents, refined.latent, atol=1e-6)
    assert not np.allclose(latents, refined.mu)
    with Image.open(out / "reconstructions" / "0.png") as img:
        np.testing.assert_array_equal(np.asarray(img.convert("RGB")), fg.decode(refined.latent).arrays()[0])


def test_arguments_the_service_refuses_stop_the_run(service: LiveService, tmp_path: Path) -> None:
    # The tiny service has no attribute editing: /generate refuses the key (422), every request
    # alike, so the run stops at the first refusal instead of sending them all.
    out = tmp_path / "attrs"
    r = cli(
        service,
        "generate",
        "--n",
        "64",
        "--out",
        str(out),
        "--batch",
        "1",
        "--concurrency",
        "1",
        "--attributes",
        "Smiling=1",
    )
    assert r.returncode == 1 and "1 requests failed" in r.stderr and "invalid-field" in r.stderr, r.stderr
    assert labels(out) == []
