"""The decoder EMA: warm-up schedule, the update rule with values, buffers copied not
averaged, and a state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.ema import EMA


def _scalar_model(value: float) -> nn.Linear:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(value)
    return m


def test_decay_warms_up_then_holds() -> None:
    ema = EMA(_scalar_model(0.0), 0.999)
    assert ema.decay_at(0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema.decay_at(90) == pytest.approx(0.91)  # 91 / 100
    assert ema.decay_at(10**6) == 0.999  # capped at --ema-decay
    assert EMA(_scalar_model(0.0), 0.5).decay_at(90) == 0.5


def test_update_is_decay_times_shadow_plus_the_rest_times_weights() -> None:
    model = _scalar_model(1.0)
    ema = EMA(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(11.0)
    ema.update(model, step=0)  # decay 0.1: 0.1·1 + 0.9·11 = 10
    assert ema.shadow.weight.item() == pytest.approx(10.0)
    ema.update(model, step=90)  # decay 0.91: 0.91·10 + 0.09·11 = 10.09
    assert ema.shadow.weight.item() == pytest.approx(10.09)
    assert model.weight.item() == 11.0  # the trained weights are left alone


def test_buffers_are_copied_not_averaged() -> None:
    model = nn.BatchNorm1d(2)
    ema = EMA(model, 0.9)
    model.running_mean.copy_(torch.tensor([3.0, -1.0]))
    model.num_batches_tracked.fill_(7)
    ema.update(model, step=10**6)
    assert torch.equal(ema.shadow.running_mean, torch.tensor([3.0, -1.0]))
    assert int(ema.shadow.num_batches_tracked) == 7


def test_shadow_is_a_frozen_eval_copy_and_round_trips() -> None:
    model = _scalar_model(2.0)
    ema = EMA(model, 0.99)
    assert not ema.shadow.training and not any(p.requires_grad for p in ema.shadow.parameters())
    assert ema.shadow.weight is not model.weight
    other = EMA(_scalar_model(0.0), 0.99)
    other.load_state_dict(ema.state_dict())
    assert other.shadow.weight.item() == 2.0


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_decay_out_of_range_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="ema-decay"):
        EMA(_scalar_model(0.0), decay)
