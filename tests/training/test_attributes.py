"""training.attributes: directions recovered from labelled latents, InterFaceGAN's conditioning,
and the command end to end on a tiny artifact and a folder of labelled synthetic faces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facegen_core.artifact import load_artifact, verify_artifact
from facegen_core.attributes import ATTRIBUTES_FILE
from facegen_core.config import ModelConfig
from facegen_core.latent import LatentPrior
from tests.service.live import random_artifact
from training.attributes import compute_directions, main
from training.data import synthetic_faces

N, D = 4000, 6


def labelled_latents() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """mu = m + A ε (A lower-triangular), labels from known normals in ε-space: a on e0, b on a
    direction at cos 0.45 to it (correlated labels, different concepts)."""
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(N, D, generator=g, dtype=torch.float64)
    a = torch.tril(torch.randn(D, D, generator=g, dtype=torch.float64)) * 0.5
    a.diagonal().copy_(torch.rand(D, generator=g, dtype=torch.float64) + 0.5)
    mu = (3.0 + eps @ a.T).float()
    n_a = torch.eye(D, dtype=torch.float64)[0]
    n_b = 0.45 * n_a + (1 - 0.45**2) ** 0.5 * torch.eye(D, dtype=torch.float64)[1]
    noise = 0.3 * torch.randn(N, 2, generator=g, dtype=torch.float64)
    labels = torch.stack([eps @ n_a, eps @ n_b], dim=1) + noise > 0
    return mu, torch.where(labels, 1, -1).to(torch.int8), torch.stack([n_a, n_b])


def whitened(mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """z-space directions v (K, D) back to the whitened space of mu's fitted Gaussian."""
    fit = LatentPrior.fit(mu)
    assert fit.scale_tril is not None
    return torch.linalg.solve_triangular(fit.scale_tril.double(), v.double().T, upper=False).T


def test_unconditioned_directions_recover_the_labelling_normals() -> None:
    mu, labels, truth = labelled_latents()
    attrs, raw = compute_directions(mu, labels, ["A", "B"], top=0)
    assert attrs.info["attributes"]["A"]["conditioned_on"] == []
    cos = (raw.double() * truth).sum(dim=1)
    assert (cos > 0.97).all(), cos
    n = whitened(mu, attrs.directions)
    torch.testing.assert_close(n.norm(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-4, rtol=0)
    # Strength units: the training faces' projections on a direction have standard deviation 1.
    eps = LatentPrior.fit(mu).to_noise(mu).double()
    torch.testing.assert_close((eps @ n.T).std(dim=0), torch.ones(2, dtype=torch.float64), atol=1e-3, rtol=0)
    assert attrs.separation[0] > 1.0  # the two classes are well apart along A


def test_conditioning_makes_an_edit_leave_the_correlated_attribute_alone() -> None:
    mu, labels, _ = labelled_latents()
    attrs, raw = compute_directions(mu, labels, ["A", "B"], top=3, min_corr=0.2)
    assert attrs.info["attributes"]["A"]["conditioned_on"] == ["B"]
    n = whitened(mu, attrs.directions)
    # Moving along the conditioned A changes B's classifier logit by nothing...
    assert abs(float(n[0] @ raw[1].double())) < 1e-4
    # ...where the plain normal of A moves it by cos ~0.45 per unit.
    assert float(raw[0] @ raw[1]) > 0.3


def test_near_synonyms_are_not_conditioned_on() -> None:
    mu, labels, _ = labelled_latents()
    both = torch.cat([labels, labels[:, :1]], dim=1)  # "A2" is A again: cos 1 between normals
    attrs, _ = compute_directions(mu, both, ["A", "B", "A2"], top=3, min_corr=0.2, max_cos=0.5)
    assert attrs.info["attributes"]["A"]["conditioned_on"] == ["B"]


def test_rare_attributes_get_no_direction() -> None:
    mu, labels, _ = labelled_latents()
    rare = torch.full((N, 1), -1, dtype=torch.int8)
    rare[:5] = 1
    attrs, _ = compute_directions(mu, torch.cat([labels, rare], dim=1), ["A", "B", "Rare"])
    assert attrs.names == ["A", "B"]


def _labelled_folder(root: Path, n: int = 120) -> Path:
    """Synthetic faces as PNGs with a CelebA-style list_attr_celeba.txt: Bright (mean pixel above
    the median) and Left (the ellipse's centre in the left half)."""
    ds = synthetic_faces(n, 32, 3, seed=1)
    folder = root / "faces"
    folder.mkdir()
    brightness = ds.images.float().mean(dim=(1, 2, 3))
    left = ds.images.float().mean(dim=1)[:, :, :16].mean(dim=(1, 2)) > ds.images.float().mean(dim=1)[
        :, :, 16:
    ].mean(dim=(1, 2))
    lines = [str(n), "Bright Left"]
    for i in range(n):
        name = f"{i + 1:06d}.png"
        Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(folder / name)
        b = 1 if brightness[i] > brightness.median() else -1
        lines.append(f"{name} {b} {1 if left[i] else -1}")
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_the_command_adds_directions_to_an_artifact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = random_artifact(tmp_path / "store", "tiny", ModelConfig.tiny())
    weights = (path / "model.safetensors").read_bytes()
    folder = _labelled_folder(tmp_path)
    args = ["--artifact", str(path), "--data", str(folder), "--cache-dir", str(tmp_path / "cache")]
    main([*args, "--dry-run"])
    assert not (path / ATTRIBUTES_FILE).exists()
    main(args)
    assert "2 directions from 114 faces" in capsys.readouterr().out  # 95% of 120: the training split
    manifest = verify_artifact(path)
    assert manifest["attributes"]["names"] == ["Bright", "Left"] and ATTRIBUTES_FILE in manifest["files"]
    assert (path / "model.safetensors").read_bytes() == weights
    art = load_artifact(path)
    assert art.attributes is not None and art.attributes.names == ["Bright", "Left"]
    assert np.isfinite(art.attributes.directions.numpy()).all()
    info = json.loads(json.dumps(art.attributes.info))
    assert info["faces"] == 114 and info["split"] == {"seed": 0, "val_fraction": 0.05}


def test_the_command_refuses_data_without_labels(tmp_path: Path) -> None:
    path = random_artifact(tmp_path / "store", "tiny", ModelConfig.tiny())
    folder = _labelled_folder(tmp_path)
    (folder / "list_attr_celeba.txt").unlink()
    with pytest.raises(SystemExit, match="no attribute labels"):
        main(["--artifact", str(path), "--data", str(folder), "--cache-dir", str(tmp_path / "cache")])


def test_fairface_gender_and_age_become_male_and_young(tmp_path: Path) -> None:
    import io
    import zipfile

    ds = synthetic_faces(120, 32, 3, seed=2)
    ages = ["0-2", "10-19", "20-29", "30-39", "50-59", "70+"]
    rows = ["file,age,gender,race"]
    data = tmp_path / "fairface-mini.zip"
    with zipfile.ZipFile(data, "w") as zf:
        for i in range(120):
            buf = io.BytesIO()
            Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(buf, "PNG")
            zf.writestr(f"fairface/train/{i + 1}.png", buf.getvalue())
            rows.append(f"train/{i + 1}.png,{ages[i % 6]},{'Male' if i % 2 else 'Female'},White")
        zf.writestr("fairface/fairface_label_train.csv", "\n".join(rows) + "\n")
    path = random_artifact(tmp_path / "store", "tiny", ModelConfig.tiny())
    main(["--artifact", str(path), "--data", str(data), "--cache-dir", str(tmp_path / "cache")])
    art = load_artifact(path)
    assert art.attributes is not None and art.attributes.names == ["Male", "Young"]
    shares = {k: v["positive_fraction"] for k, v in art.attributes.info["attributes"].items()}
    assert 0.4 < shares["Male"] < 0.6 and 0.4 < shares["Young"] < 0.6  # 3 of 6 age groups are < 30
