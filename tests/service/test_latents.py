"""service/latents.py: the routes' latent work in numpy, against facegen_core's torch results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facegen_core.attributes import AttributeDirections
from facegen_core.latent import noise_for_seeds
from service import latents
from service.errors import InvalidFieldError
from service.model_info import ModelInfo
from tests.service.live import tiny_prior

DIM = 8
NAMES = ["Smiling", "Male"]


def info(with_attributes: bool = True) -> ModelInfo:
    g = torch.Generator().manual_seed(1)
    attrs = AttributeDirections(NAMES, torch.randn(2, DIM, generator=g), torch.ones(2))
    return ModelInfo(
        name="tiny",
        version=1,
        sha256="0" * 64,
        image_size=32,
        channels=3,
        latent_dim=DIM,
        input_crop="celeba",
        manifest={},
        prior=tiny_prior(DIM),
        attributes=attrs if with_attributes else None,
    )


def test_seed_latents_are_the_priors_map_of_the_seeds_noise() -> None:
    z = latents.seed_latents(info(), 5, 3, 0.5)
    assert z.dtype == np.float32 and z.shape == (3, DIM)
    np.testing.assert_array_equal(z, tiny_prior(DIM).from_noise(noise_for_seeds(5, 3, DIM, 0.5)).numpy())


def test_an_edit_adds_strength_times_direction() -> None:
    m = info()
    z = latents.seed_latents(m, 1, 2, 1.0)
    assert latents.apply_edit(m, z, {}) is z and latents.apply_edit(m, z, None) is z
    moved = latents.apply_edit(m, z, {"Smiling": 2.0, "Male": -1.0})
    assert m.attributes is not None
    d = m.attributes.directions.numpy()
    assert moved.dtype == np.float32 and moved.shape == z.shape
    np.testing.assert_allclose(moved, z + 2.0 * d[0] - d[1], rtol=1e-6, atol=1e-6)


def test_unknown_names_are_a_422_naming_the_valid_ones() -> None:
    with pytest.raises(InvalidFieldError) as e:
        latents.apply_edit(info(), np.zeros((1, DIM), np.float32), {"Bald": 1.0})
    assert e.value.extra == {"field": "attributes.Bald", "valid": NAMES} and "Smiling, Male" in e.value.detail
    with pytest.raises(InvalidFieldError, match="has no attribute directions"):
        latents.check_attributes(info(with_attributes=False), ["Smiling"])


def test_a_sweep_holds_one_row_per_strength() -> None:
    m = info()
    z = latents.seed_latents(m, 3, 1, 1.0)[0]
    rows, strengths = latents.sweep(m, z, "Male", -2.0, 2.0, 5)
    assert strengths == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert rows.dtype == np.float32 and rows.shape == (5, DIM)
    np.testing.assert_array_equal(rows[2], z)  # strength 0: the face itself
    assert m.attributes is not None
    np.testing.assert_allclose(rows[4] - rows[0], 4.0 * m.attributes.directions[1].numpy(), atol=1e-5)


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_a_path_starts_and_ends_at_its_ends(method: str) -> None:
    m = info()
    a, b = latents.seed_latents(m, 1, 2, 1.0)
    p = latents.path(m, a, b, 6, method)
    assert p.dtype == np.float32 and p.shape == (6, DIM)
    np.testing.assert_allclose(p[0], a, atol=1e-5)
    np.testing.assert_allclose(p[-1], b, atol=1e-5)
    assert not np.allclose(p[3], a) and not np.allclose(p[3], b)
