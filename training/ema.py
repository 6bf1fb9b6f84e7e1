"""Exponential moving average of the decoder's weights (Karras et al. 2018; Yazıcı et al.
2019): the exported decoder is the EMA, which gives visibly smoother samples than the raw
weights a GAN's oscillating updates leave at any one step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """shadow = decay·shadow + (1-decay)·param after every step; buffers (BatchNorm running
    statistics) are copied, not averaged, since they are already running averages."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"--ema-decay must be in [0, 1), got {decay}.")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """Warm-up min(decay, (1+step)/(10+step)) (as in TensorFlow's ExponentialMovingAverage):
        with a fixed 0.999 a 700-step CPU run would export a decoder still ~50% made of
        its random initial weights (0.999^700 ≈ 0.5)."""
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold in ``model``'s weights after optimisation step ``step`` (0-based)."""
        d = self.decay_at(step)
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            s.lerp_(p.detach(), 1.0 - d)
        for sb, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            sb.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(sd)
