"""Shapes and sizes of the networks for every supported config."""

from __future__ import annotations

import pytest
import torch

from facegen_core import Discriminator, ModelConfig, build_autoencoder, count_parameters


@pytest.mark.parametrize("image_size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(image_size: int, channels: int) -> None:
    cfg = ModelConfig.tiny(image_size=image_size, channels=channels)
    enc, dec = build_autoencoder(cfg)
    dis = Discriminator(cfg, norm="spectral")
    x = torch.rand(2, channels, image_size, image_size) * 2 - 1
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (2, cfg.latent_dim)
    y = dec(mu)
    assert y.shape == x.shape and y.abs().max() <= 1.0
    logit, feat = dis(y)
    side = image_size >> (len(cfg.dis_widths) - 1)
    assert logit.shape == (2,) and feat.shape == (2, cfg.dis_widths[-1], side, side)


def test_default_serving_pair_fits_25_mb() -> None:
    enc, dec = build_autoencoder(ModelConfig())
    n = count_parameters(enc) + count_parameters(dec)
    assert n * 4 <= 25e6, n  # fp32 bytes in model.safetensors (tensor data)
    # The paper's FC 16384 -> 2048 encoder layer alone would be 33.6M weights.
    assert count_parameters(enc) < 16384 * 2048 / 10


def test_config_round_trip_and_validation(tmp_path) -> None:
    cfg = ModelConfig.small(latent_dim=64)
    cfg.save(tmp_path / "c.json")
    assert ModelConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig(image_size=48)
    with pytest.raises(ValueError, match="channels"):
        ModelConfig(channels=2)
    with pytest.raises(ValueError, match="Unknown model config keys"):
        ModelConfig.from_dict({"image_size": 64, "bogus": 1})
