"""Shapes and sizes of the networks for every supported config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from facegen_core import Discriminator, ModelConfig, build_autoencoder, count_parameters


@pytest.mark.parametrize("image_size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("res_blocks", [0, 2])
def test_shapes(image_size: int, channels: int, res_blocks: int) -> None:
    cfg = ModelConfig.tiny(image_size=image_size, channels=channels, enc_res_blocks=res_blocks)
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
    with pytest.raises(ValueError, match="enc_res_blocks"):
        ModelConfig(enc_res_blocks=-1)


def test_config_without_newer_fields_builds_the_old_encoder() -> None:
    """A config.json written before enc_res_blocks existed rebuilds the same state-dict keys."""
    old = ModelConfig.tiny().to_dict()
    del old["enc_res_blocks"]
    enc, _ = build_autoencoder(ModelConfig.from_dict(old))
    assert not any(k.startswith("res.") for k in enc.state_dict())
    deeper, _ = build_autoencoder(ModelConfig.tiny(enc_res_blocks=1))
    assert {k for k in deeper.state_dict() if k.startswith("res.")} and set(enc.state_dict()) < set(
        deeper.state_dict()
    )


def test_nearest_up2_is_nn_upsample_bit_for_bit() -> None:
    """The decoder's ×2 upsampling (a broadcast view on NCHW, interpolate on channels-last)
    gives nn.Upsample's values exactly, and its gradients, in both memory formats."""
    from facegen_core.networks import NearestUp2

    g = torch.Generator().manual_seed(0)
    ref = nn.Upsample(scale_factor=2, mode="nearest")
    for shape in ((1, 256, 8, 8), (3, 5, 7, 9)):
        x = torch.randn(shape, generator=g)
        for fmt in (torch.contiguous_format, torch.channels_last):
            a = x.clone(memory_format=fmt).requires_grad_()
            b = x.clone(memory_format=fmt).requires_grad_()
            out, expected = NearestUp2()(a), ref(b)
            assert torch.equal(out, expected) and out.shape == (
                shape[0],
                shape[1],
                2 * shape[2],
                2 * shape[3],
            )
            w = torch.randn(out.shape, generator=g)
            (out * w).sum().backward()
            (expected * w).sum().backward()
            # The backward sums each 2×2 block in another order: equal up to float rounding.
            assert a.grad is not None and b.grad is not None
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)
        assert NearestUp2()(x.to(memory_format=torch.channels_last)).is_contiguous(
            memory_format=torch.channels_last
        )


def test_nearest_up2_backward_is_a_2x2_block_sum_and_twice_differentiable() -> None:
    """The NCHW path's own backward (networks._NearestUp2Copy): gradcheck in float64 (each input
    pixel gets the sum of its 2×2 block), and a double backward through it, as a gradient
    penalty through the decoder would take."""
    from facegen_core.networks import NearestUp2

    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(NearestUp2(), (x,))
    assert torch.autograd.gradgradcheck(NearestUp2(), (x,))
    w = torch.arange(2 * 3 * 8 * 10, dtype=torch.float64).view(2, 3, 8, 10)
    (grad,) = torch.autograd.grad((NearestUp2()(x) * w).sum(), x)
    blocks = w.view(2, 3, 4, 2, 5, 2).sum((3, 5))
    assert torch.equal(grad, blocks)
