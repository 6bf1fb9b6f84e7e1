"""The bundled model: checksums, and its faces for a fixed seed against a committed reference.

A change that breaks the artifact, the loader, the latent seeding or the decoding path shows
up here as different pixels. Regenerate the reference (only when the bundled model changes on
purpose) with ``python -m tests.model_store.test_shipped_model``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegen_core.artifact import ChecksumMismatchError, ModelStore, load_artifact, sha256_file
from facegen_core.images import make_grid
from facegen_core.latent import latents_for_seeds
from facegen_core.preprocess import model_to_uint8

REPO = Path(__file__).resolve().parents[2]
STORE = REPO / "model_store"
REFERENCE = Path(__file__).with_name("reference_seed1000_n8.png")
SEED, N = 1000, 8


def _faces(path: Path) -> np.ndarray:
    """The 8 faces of seeds 1000..1007 at temperature 1, as one uint8 (H, W, 3) strip."""
    art = load_artifact(path)
    torch.set_num_threads(1)  # fewest reduction-order differences between machines
    z = art.prior.from_noise(latents_for_seeds(SEED, N, art.config.latent_dim, 1.0))  # (N, D)
    with torch.inference_mode():
        faces = model_to_uint8(art.decoder(z)).permute(0, 2, 3, 1).numpy()
    return make_grid(faces, ncols=N, padding=0)


def test_store_default_is_the_bundled_model() -> None:
    store = ModelStore(STORE)
    assert store.default_name() == "celeba64"
    manifest = json.loads((store.resolve() / "manifest.json").read_text())
    assert manifest["dataset"]["name"].startswith("celeba")
    assert "non-commercial" in manifest["dataset"]["licence"]
    for key in ("steps", "images_seen", "wall_time_s", "device"):
        assert key in manifest["training"], key


def test_manifest_hashes_match_the_files() -> None:
    path = ModelStore(STORE).resolve()
    manifest = json.loads((path / "manifest.json").read_text())
    for name, meta in manifest["files"].items():
        assert sha256_file(path / name) == meta["sha256"], name
    assert (path / "model.safetensors").stat().st_size <= 25_000_000


def test_fixed_seed_faces_match_the_reference() -> None:
    got = _faces(ModelStore(STORE).resolve()).astype(np.int16)
    want = np.asarray(Image.open(REFERENCE).convert("RGB"), dtype=np.int16)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    # Bit-exact on the machine that made it; float reduction order on other CPUs may move a
    # value across a rounding boundary, so allow a level or two, never a different face.
    assert diff.max() <= 3, f"max pixel difference {diff.max()}"
    assert diff.mean() < 0.05, f"mean pixel difference {diff.mean():.3f}"


def test_a_tampered_copy_is_refused(tmp_path: Path) -> None:
    src = ModelStore(STORE).resolve()
    dst = tmp_path / "celeba64" / "1"
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=r"model\.safetensors"):
        load_artifact(dst)


if __name__ == "__main__":
    Image.fromarray(_faces(ModelStore(STORE).resolve())).save(REFERENCE)
    print(f"wrote {REFERENCE}")
