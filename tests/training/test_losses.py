"""The loss terms of training/losses.py against hand-computed values and torch's own
distributions: KL, the Dis_l and pixel likelihoods, both GAN surrogates and R1."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from training import losses

LN2 = math.log(2.0)


def test_kl_prior_by_hand_and_against_torch_distributions() -> None:
    mu = torch.tensor([[1.0, 2.0], [0.0, 0.0]])  # (B=2, D=2)
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    # row 0: ½(1 + 1 - 1 - 0) + ½(4 + 4 - 1 - ln 4); row 1 is N(0, I) itself: 0
    row0 = 0.5 + 0.5 * (7.0 - math.log(4.0))
    assert losses.kl_prior(mu, logvar).item() == pytest.approx(row0 / 2, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    want = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1).mean()
    assert losses.kl_prior(mu, logvar).item() == pytest.approx(want.item(), rel=1e-5)


def test_dis_l_likelihood_is_the_mean_squared_feature_error() -> None:
    real = torch.zeros(2, 3, 4, 4)
    assert losses.dis_l_likelihood(real + 2.0, real).item() == pytest.approx(4.0)


def test_dis_l_likelihood_per_channel_divides_by_each_channels_variance() -> None:
    # Channel 0 of the real features is [0, 2] over the batch (unbiased variance 2),
    # channel 1 is [0, 4] (variance 8); the reconstruction is off by 1 everywhere.
    real = torch.tensor([[0.0, 0.0], [2.0, 4.0]]).view(2, 2, 1, 1)  # (B=2, C=2, 1, 1)
    got = losses.dis_l_likelihood(real + 1.0, real, per_channel=True).item()
    assert got == pytest.approx((1 / (2 + 1e-4) + 1 / (8 + 1e-4)) / 2, rel=1e-6)
    assert losses.dis_l_likelihood(real + 1.0, real).item() == pytest.approx(1.0)


def test_pixel_likelihood_pooled_ignores_what_pooling_averages_away() -> None:
    ii, jj = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    checker = ((ii + jj) % 2).float().view(1, 1, 4, 4)  # 0/1 checkerboard, mean 0.5 per 2×2
    flat = torch.full_like(checker, 0.5)
    assert losses.pixel_likelihood(checker, flat).item() == pytest.approx(0.25)  # (±0.5)²
    assert losses.pixel_likelihood(checker, flat, pool=2).item() == pytest.approx(0.0)
    assert losses.pixel_likelihood(checker, torch.zeros_like(checker), pool=2).item() == pytest.approx(0.25)


def test_hinge_losses_by_hand() -> None:
    real = torch.tensor([2.0, 0.0])  # relu(1 - x): 0, 1 -> 0.5
    fakes = [torch.tensor([-2.0, 0.0]), torch.tensor([1.0, 1.0])]  # relu(1 + x): 0.5 and 2 -> mean 1.25
    assert losses.d_loss("hinge", real, fakes).item() == pytest.approx(0.5 + 1.25)
    # The generator side: -mean over each source, averaged over sources: -(2 + 5) / 2.
    assert losses.g_loss("hinge", [torch.tensor([1.0, 3.0]), torch.tensor([5.0])]).item() == -3.5


def test_non_saturating_losses_by_hand() -> None:
    zero = torch.zeros(3)
    assert losses.d_loss("ns", zero, [zero, zero]).item() == pytest.approx(2 * LN2)  # -log ½ twice
    assert losses.g_loss("ns", [zero]).item() == pytest.approx(LN2)
    # A confident discriminator: -log σ(10) + -log(1 - σ(-10)) = 2·softplus(-10) ≈ 9.1e-5.
    big = torch.full((2,), 10.0)
    want = 2 * math.log1p(math.exp(-10.0))
    assert losses.d_loss("ns", big, [-big]).item() == pytest.approx(want, rel=1e-5)
    assert losses.g_loss("ns", [-big]).item() == pytest.approx(math.log1p(math.exp(10.0)), rel=1e-6)


def test_fake_sources_are_averaged_not_summed() -> None:
    real, fake = torch.tensor([0.5]), torch.tensor([0.3])
    one = losses.d_loss("hinge", real, [fake]).item()
    assert losses.d_loss("hinge", real, [fake, fake]).item() == pytest.approx(one)


@pytest.mark.parametrize(
    "fn",
    [
        lambda k: losses.d_loss(k, torch.zeros(1), [torch.zeros(1)]),
        lambda k: losses.g_loss(k, [torch.zeros(1)]),
    ],
)
def test_unknown_gan_loss_names_the_choices(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="hinge"):
        fn("wasserstein")


def test_r1_penalty_is_the_squared_input_gradient_norm() -> None:
    # Dis(x) = w·x: ∇_x = w for every image, so R1 = ||w||² = 1 + 4 + 4.
    w = torch.tensor([1.0, 2.0, 2.0])
    x = torch.randn(4, 3, requires_grad=True)
    assert losses.r1_penalty((x * w).sum(1), x).item() == pytest.approx(9.0)
    # Dis(x) = Σ x²: ∇_x = 2x, so R1 = mean over images of 4·||x_i||².
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    r1 = losses.r1_penalty((x**2).sum(1), x)
    assert r1.item() == pytest.approx((4 * 1 + 4 * 2) / 2)
    # create_graph: the penalty itself trains D, so it must have a gradient.
    assert r1.requires_grad
