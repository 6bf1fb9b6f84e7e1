"""The fitted latent prior: ε <-> z mapping, fit, paths, and its trip through the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from facegen_core import ModelConfig, build_autoencoder, load_artifact, write_artifact
from facegen_core.artifact import WEIGHTS_FILE, ArtifactFormatError, sha256_file
from facegen_core.latent import LatentPrior, interpolate, noise_for_seeds


def _prior(d: int = 6, seed: int = 0) -> LatentPrior:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g)
    return LatentPrior(
        mean=3 * torch.randn(d, generator=g), scale_tril=torch.linalg.cholesky(a @ a.T + torch.eye(d))
    )


def test_fit_recovers_a_known_gaussian() -> None:
    true = _prior()
    assert true.mean is not None and true.scale_tril is not None
    z = true.from_noise(torch.randn(200_000, 6, generator=torch.Generator().manual_seed(1)))
    fitted = LatentPrior.fit(z)
    assert fitted.mean is not None and fitted.scale_tril is not None
    torch.testing.assert_close(fitted.mean, true.mean, atol=0.03, rtol=0)
    cov = fitted.scale_tril @ fitted.scale_tril.T
    torch.testing.assert_close(cov, true.scale_tril @ true.scale_tril.T, atol=0.1, rtol=0.02)


def test_to_noise_inverts_from_noise_and_standard_is_the_identity() -> None:
    p = _prior()
    eps = noise_for_seeds(0, 16, 6)  # (16, 6)
    torch.testing.assert_close(p.to_noise(p.from_noise(eps)), eps, atol=1e-5, rtol=0)
    std = LatentPrior()
    assert std.is_standard and std.from_noise(eps) is eps and std.to_noise(eps) is eps


def test_a_row_maps_alone_as_in_a_batch() -> None:
    """Face i of a grid is also {"n": 1, "seed": seed + i}: the mapping must not depend on N."""
    p = _prior(128)
    eps = noise_for_seeds(7, 64, 128)
    batch = p.from_noise(eps)
    for i in range(64):
        assert torch.equal(p.from_noise(eps[i : i + 1])[0], batch[i])


def test_path_keeps_its_ends_exactly_and_runs_through_noise_space() -> None:
    p = _prior()
    a, b = p.from_noise(noise_for_seeds(1, 2, 6))
    path = p.path(a, b, 5, "slerp")
    assert path.shape == (5, 6) and torch.equal(path[0], a) and torch.equal(path[-1], b)
    mid = p.to_noise(path[2:3])[0]
    ea, eb = p.to_noise(torch.stack([a, b]))
    torch.testing.assert_close(mid, interpolate(ea, eb, 5, "slerp")[2], atol=1e-5, rtol=0)
    # For N(0, I) a path is the plain interpolation.
    assert torch.equal(LatentPrior().path(a, b, 5, "lerp"), interpolate(a, b, 5, "lerp"))


@pytest.mark.parametrize(
    ("mean", "scale_tril", "message"),
    [
        (torch.zeros(3), None, "both"),
        (torch.zeros(3), torch.eye(4), "fit together"),
        (torch.zeros(3), torch.ones(3, 3), "lower-triangular"),
        (torch.zeros(3), -torch.eye(3), "positive diagonal"),
        (torch.full((3,), float("nan")), torch.eye(3), "non-finite"),
    ],
)
def test_invalid_priors_are_refused(
    mean: torch.Tensor, scale_tril: torch.Tensor | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        LatentPrior(mean=mean, scale_tril=scale_tril)


def _artifact(tmp_path: Path, prior: LatentPrior | None) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    enc, dec = build_autoencoder(cfg)
    return write_artifact(tmp_path, "m", cfg, enc, dec, prior=prior)


def test_the_prior_travels_in_the_weights_file(tmp_path: Path) -> None:
    p = _prior(ModelConfig.tiny().latent_dim)
    art = load_artifact(_artifact(tmp_path, p))
    assert art.manifest["format_version"] == 2
    assert art.prior.mean is not None and art.prior.scale_tril is not None
    assert p.mean is not None and p.scale_tril is not None
    assert torch.equal(art.prior.mean, p.mean) and torch.equal(art.prior.scale_tril, p.scale_tril)
    assert load_artifact(_artifact(tmp_path, None)).prior.is_standard


def test_a_prior_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="latent_dim"):
        _artifact(tmp_path, _prior(3))
    # A hand-edited weights file (checksums updated to match) is still checked on load.
    path = _artifact(tmp_path, _prior(ModelConfig.tiny().latent_dim))
    tensors = load_file(str(path / WEIGHTS_FILE))
    tensors["latent_prior.scale_tril"] = -tensors["latent_prior.scale_tril"]
    save_file(tensors, str(path / WEIGHTS_FILE))
    manifest_path = path / "manifest.json"
    text = manifest_path.read_text()
    manifest = json.loads(text)
    manifest["files"][WEIGHTS_FILE]["sha256"] = sha256_file(path / WEIGHTS_FILE)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactFormatError, match="invalid latent prior"):
        load_artifact(path)
