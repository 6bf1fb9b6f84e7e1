"""The bundled models: checksums, and each one's faces for a fixed seed against a committed
reference (``reference_NAME-VERSION_seed1000_n8.png``).

A change that breaks an artifact, the loader, the latent seeding or the decoding path shows
up here as different pixels. Write the reference of a newly bundled model (only then) with
``python -m tests.model_store.test_shipped_model``; existing references are never rewritten.
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
from facegen_core.latent import noise_for_seeds
from facegen_core.preprocess import model_to_uint8

REPO = Path(__file__).resolve().parents[2]
STORE = REPO / "model_store"
SEED, N = 1000, 8
DEFAULT = "faces64"
BUNDLED = [
    (name, version) for name in ModelStore(STORE).models() for version in ModelStore(STORE).versions(name)
]


def reference(name: str, version: int) -> Path:
    return Path(__file__).with_name(f"reference_{name}-{version}_seed{SEED}_n{N}.png")


def _faces(path: Path) -> np.ndarray:
    """The 8 faces of seeds 1000..1007 at temperature 1, as one uint8 (H, W, 3) strip."""
    art = load_artifact(path)
    torch.set_num_threads(1)  # fewest reduction-order differences between machines
    z = art.prior.from_noise(noise_for_seeds(SEED, N, art.config.latent_dim, 1.0))  # (N, D)
    with torch.inference_mode():
        faces = model_to_uint8(art.decoder(z)).permute(0, 2, 3, 1).numpy()
    return make_grid(faces, ncols=N, padding=0)


def test_store_default_is_the_newest_bundled_model() -> None:
    store = ModelStore(STORE)
    assert store.default_name() == DEFAULT
    manifest = json.loads((store.resolve() / "manifest.json").read_text())
    assert manifest["dataset"]["name"].startswith("celeba")
    assert "non-commercial" in manifest["dataset"]["licence"]
    for key in ("steps", "images_seen", "wall_time_s", "device"):
        assert key in manifest["training"], key


@pytest.mark.parametrize(("name", "version"), BUNDLED)
def test_manifest_hashes_match_the_files(name: str, version: int) -> None:
    path = ModelStore(STORE).resolve(name, version)
    manifest = json.loads((path / "manifest.json").read_text())
    for name, meta in manifest["files"].items():
        assert sha256_file(path / name) == meta["sha256"], name
    assert (path / "model.safetensors").stat().st_size <= 25_000_000


@pytest.mark.parametrize(("name", "version"), BUNDLED)
def test_fixed_seed_faces_match_the_reference(name: str, version: int) -> None:
    got = _faces(ModelStore(STORE).resolve(name, version)).astype(np.int16)
    want = np.asarray(Image.open(reference(name, version)).convert("RGB"), dtype=np.int16)
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
    for name, version in BUNDLED:
        ref = reference(name, version)
        if not ref.exists():
            Image.fromarray(_faces(ModelStore(STORE).resolve(name, version))).save(ref)
            print(f"wrote {ref}")
