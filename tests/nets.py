"""Helpers for tests that build networks by hand."""

from __future__ import annotations

import torch


def randomise_batchnorm(*nets: torch.nn.Module) -> None:
    """Random running statistics in every BatchNorm, so eval-mode BN is not the identity and
    an output depends on every layer (and on the statistics being saved and loaded)."""
    for net in nets:
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
