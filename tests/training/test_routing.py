"""Algorithm 1's gradient routing (Larsen et al. 2015), checked on the real ``train_step``:

    encoder       <- ∇ (β·L_prior + L_llike^Dis_l + w·L_pixel)      nothing from L_GAN
    decoder       <- ∇ (γ·L_llike^Dis_l + w·L_pixel + L_GAN)        nothing from L_prior
    discriminator <- ∇ (L_GAN's discriminator side + R1)            nothing from L_llike^Dis_l

and a step of every option combination on the tiny config (lucidrains style)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch

from training import step as step_mod
from training.cli import parse_train_args
from training.data import synthetic_faces
from training.distributed import DistInfo
from training.step import Nets, StepConfig, StepLosses, train_step
from training.train import build_nets, model_config, step_config

CPU = DistInfo(rank=0, world_size=1, device=torch.device("cpu"))
Grads = dict[str, list[torch.Tensor | None]]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def setup(*flags: str, batch: int = 6) -> tuple[Nets, StepConfig, torch.Tensor]:
    """Networks, optimisers and step config exactly as the CLI builds them for ``flags``."""
    args = parse_train_args(["--config", "tiny", "--seed", "3", *flags])
    cfg = model_config(args)
    nets = build_nets(cfg, args, CPU)
    images = synthetic_faces(batch, cfg.image_size, cfg.channels, seed=1).images  # uint8 (B, 3, 32, 32)
    return nets, step_config(args, CPU.device), images


def params(nets: Nets, net: str) -> list[torch.Tensor]:
    return [p for p in getattr(nets, net).parameters() if p.requires_grad]


def grads(nets: Nets) -> Grads:
    return {
        net: [None if p.grad is None else p.grad.clone() for p in params(nets, net)]
        for net in ("encoder", "decoder", "discriminator")
    }


def grad_of(loss: torch.Tensor, nets: Nets, net: str) -> list[torch.Tensor]:
    """∇ loss w.r.t. one network, leaving the graph and every .grad untouched."""
    gs = torch.autograd.grad(loss, params(nets, net), retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(gs, params(nets, net), strict=True)]


def same(a: list[torch.Tensor | None], b: list[torch.Tensor]) -> bool:
    pairs = zip(a, b, strict=True)
    return all(x is not None and torch.allclose(x, y, rtol=1e-5, atol=1e-7) for x, y in pairs)


def plus(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
    return [x + y for x, y in zip(a, b, strict=True)]


def moved(before: list[torch.Tensor], after: list[torch.Tensor]) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(before, after, strict=True))


def nonzero(gs: list[torch.Tensor]) -> bool:
    return any(bool(g.abs().sum() > 0) for g in gs)


def spy_on_train_step(
    monkeypatch: pytest.MonkeyPatch, nets: Nets, scfg: StepConfig
) -> tuple[dict[str, Grads], dict[str, Any]]:
    """Wrap the ``routed_backward`` that ``train_step`` calls: before it runs, compute each
    network's expected gradient from the loss TERMS (the routing spec, written out here
    independently of step.py's sums); after each of its backward calls, record every .grad."""
    snapshots: dict[str, Grads] = {}
    spec: dict[str, Any] = {}
    real: Callable[..., None] = step_mod.routed_backward

    def spy(nets_: Nets, sl: StepLosses, after_each: Callable[[str], None] | None = None) -> None:
        t = sl.terms
        r1 = t.get("r1", torch.zeros(()))
        enc_loss = scfg.kl_weight * t["prior"] + t["dis_l"] + scfg.pixel_weight * t["pixel"]
        dec_loss = scfg.gamma * t["dis_l"] + scfg.pixel_weight * t["pixel"] + t["gan_g"]
        dis_loss = t["gan_d"] + 0.5 * scfg.r1_gamma * scfg.r1_every * r1
        spec["expected"] = {
            "encoder": grad_of(enc_loss, nets_, "encoder"),
            "decoder": grad_of(dec_loss, nets_, "decoder"),
            "discriminator": grad_of(dis_loss, nets_, "discriminator"),
        }
        # The terms each network must NOT see do reach it through the shared graph, so a
        # leak would change its gradient (this is what makes the test able to fail).
        spec["leaks"] = {
            "gan_g->encoder": grad_of(t["gan_g"], nets_, "encoder"),
            "dis_l->discriminator": grad_of(t["dis_l"], nets_, "discriminator"),
            "gan_d->decoder": grad_of(t["gan_d"], nets_, "decoder"),
            "gan_d->encoder": grad_of(t["gan_d"], nets_, "encoder"),
        }
        spec["r1"] = "r1" in t
        real(nets_, sl, after_each=lambda name: snapshots.__setitem__(name, grads(nets_)))

    monkeypatch.setattr(step_mod, "routed_backward", spy)
    return snapshots, spec


@pytest.mark.parametrize("r1", [True, False], ids=["r1", "no-r1"])
def test_each_loss_reaches_only_its_network(monkeypatch: pytest.MonkeyPatch, r1: bool) -> None:
    flags = ["--r1-every", "1"] if r1 else ["--r1-gamma", "0"]
    nets, scfg, images = setup(*flags, "--pixel-weight", "0.5", "--gamma", "0.7", "--kl-weight", "0.01")
    snapshots, spec = spy_on_train_step(monkeypatch, nets, scfg)
    before = {n: [p.detach().clone() for p in params(nets, n)] for n in ("encoder", "decoder")}

    terms = train_step(nets, images, step=0, cfg=scfg)

    assert spec["r1"] is r1 and ("r1" in terms) is r1
    assert list(snapshots) == ["dis", "enc", "dec"]  # the order of step.ROUTING
    exp = spec["expected"]
    # After D's loss: D has exactly ∇(L_GAN^D [+ R1]); E and G have no gradient at all.
    s = snapshots["dis"]
    assert same(s["discriminator"], exp["discriminator"])
    assert all(g is None for g in s["encoder"] + s["decoder"])
    # After E's loss: E has ∇(β·L_prior + L_Dis_l + w·L_pixel); G still none, D unchanged.
    s = snapshots["enc"]
    assert same(s["encoder"], exp["encoder"])
    assert all(g is None for g in s["decoder"])
    assert same(s["discriminator"], exp["discriminator"])
    # After G's loss: G has ∇(γ·L_Dis_l + w·L_pixel + L_GAN^G); E and D unchanged.
    s = snapshots["dec"]
    assert same(s["decoder"], exp["decoder"])
    assert same(s["encoder"], exp["encoder"])
    assert same(s["discriminator"], exp["discriminator"])

    # The excluded terms would have changed those gradients had they leaked.
    for name, g in spec["leaks"].items():
        assert nonzero(g), f"{name} is zero: the test could not see that leak"
    assert not same(s["encoder"], plus(exp["encoder"], spec["leaks"]["gan_g->encoder"]))
    assert not same(s["discriminator"], plus(exp["discriminator"], spec["leaks"]["dis_l->discriminator"]))
    # And the optimisers then stepped with them.
    for n in ("encoder", "decoder"):
        assert moved(before[n], params(nets, n))


def test_step_losses_sum_their_terms_with_the_configured_weights() -> None:
    nets, scfg, images = setup("--pixel-weight", "0.5", "--gamma", "0.7", "--kl-weight", "0.01")
    sl = step_mod.compute_losses(nets, images, step=0, cfg=scfg)
    t = sl.terms
    torch.testing.assert_close(sl.enc, 0.01 * t["prior"] + t["dis_l"] + 0.5 * t["pixel"])
    torch.testing.assert_close(sl.dec, 0.7 * t["dis_l"] + 0.5 * t["pixel"] + t["gan_g"])
    # R1 every 16 steps (default), gamma 0.05: lazy scaling 0.5·0.05·16.
    torch.testing.assert_close(sl.dis, t["gan_d"] + 0.4 * t["r1"])
    assert t["r1"].item() > 0 and t["prior"].item() > 0
    sl = step_mod.compute_losses(nets, images, step=1, cfg=scfg)  # not an R1 step
    assert "r1" not in sl.terms
    torch.testing.assert_close(sl.dis, sl.terms["gan_d"])


OPTIONS = list(
    itertools.product(
        ["hinge", "ns"],
        ["--dis-norm=none", "--dis-norm=spectral", "--dis-norm=batch"],
        ["1", "0"],  # --r1-gamma
        ["color,translation,cutout", "none"],
    )
)


@pytest.mark.parametrize(
    ("gan", "sn", "r1", "aug"),
    OPTIONS,
    ids=[f"{g}-{s.strip('-')}-r1={r}-aug={'on' if a != 'none' else 'off'}" for g, s, r, a in OPTIONS],
)
def test_a_step_runs_for_every_option_combination(gan: str, sn: str, r1: str, aug: str) -> None:
    flags = ["--gan-loss", gan, sn, "--r1-gamma", r1, "--r1-every", "2", "--diffaugment", aug]
    nets, scfg, images = setup(*flags, batch=4)
    nets_ = ("encoder", "decoder", "discriminator")
    start = {n: [p.detach().clone() for p in params(nets, n)] for n in nets_}
    ema_start = [p.clone() for p in nets.ema.shadow.parameters()]
    for step in range(2):  # step 0 applies R1 (when on), step 1 does not
        terms = train_step(nets, images, step=step, cfg=scfg)
        assert all(torch.isfinite(v) for v in terms.values()), terms
        assert ("r1" in terms) == (r1 == "1" and step == 0)
    for n, ps in start.items():  # all three networks and the EMA moved
        assert moved(ps, params(nets, n)), n
    assert moved(ema_start, list(nets.ema.shadow.parameters()))
