"""Grow a trained encoder without changing what it computes (``--enc-head-channels``,
``--enc-res-blocks`` with ``--init-from``).

Why: with the decoder frozen (``--train-part encoder``) the encoder is the only thing that can
close the amortisation gap (``training.inversion_gap``), and it is small: three stride-2 convs,
then a 1×1 conv + BatchNorm + ReLU that squeezes the (256, 8, 8) features to
``enc_head_channels`` = 16 maps, 1,024 numbers (about half of them zero after the ReLU) from
which the fully connected head reads 128 means.

Both ways of growing it are function-preserving, in the spirit of Net2Net (Chen, Goodfellow &
Shlens 2016, "Net2Net: Accelerating Learning via Knowledge Transfer"), so training continues
from the artifact's quality instead of from scratch:

- wider head: the old maps keep their weights and BatchNorm state, the new maps keep the fresh
  run's random init, and the head's weights *from* the new maps start at zero. They still
  learn: those weights get the gradient ∂L/∂out · activation, which is not zero, and the
  squeeze filters follow once the weights have moved;
- more residual blocks: a new ``networks.ResBlock`` starts as the identity (zero-γ), so it is
  simply left as the run initialised it.
"""

from __future__ import annotations

import torch

from facegen_core.networks import Encoder


@torch.no_grad()
def grow_encoder(target: Encoder, source: Encoder) -> None:
    """Copy ``source`` into ``target``, which has at least as many squeeze maps and residual
    blocks and is otherwise the same architecture; what ``target`` has beyond ``source`` keeps
    its own init (see above). A plain copy when both are the same."""
    src, dst = source.state_dict(), target.state_dict()
    old = int(src["squeeze.0.weight"].shape[0])  # squeeze maps of the source
    new = int(dst["squeeze.0.weight"].shape[0])
    if new < old or len(target.res) < len(source.res):
        raise ValueError(
            f"cannot shrink the encoder ({old} -> {new} head maps, "
            f"{len(source.res)} -> {len(target.res)} residual blocks)"
        )
    out = {k: v.clone() for k, v in dst.items()}
    for k, v in src.items():
        if k.startswith("squeeze.") and v.dim() >= 1 and v.shape[0] == old and new != old:
            out[k][:old] = v  # conv filters (H, C, 1, 1) and BatchNorm's per-map vectors (H,)
        elif k == "head.weight" and new != old:
            rows = v.shape[0]  # 2·latent
            w = torch.zeros(rows, new, v.shape[1] // old, dtype=v.dtype)  # (2D, H_new, side²)
            w[:, :old] = v.view(rows, old, -1)  # flatten(1) is map-major: index = map·side² + pos
            out[k] = w.view(rows, -1)
        else:
            if out[k].shape != v.shape:
                raise ValueError(f"encoder tensor {k} differs: {tuple(v.shape)} vs {tuple(out[k].shape)}")
            out[k] = v.clone()
    target.load_state_dict(out)
