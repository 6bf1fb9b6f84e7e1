"""Widen a trained encoder's head without changing what it computes (``--enc-head-channels``).

Why: the encoder squeezes its (256, 8, 8) features to ``enc_head_channels`` = 16 maps by a
1×1 conv + BatchNorm + ReLU before the fully connected μ/logσ² head (``networks.Encoder``):
1,024 numbers, about half of them zero after the ReLU, from which 128 means are read. With
the decoder frozen (``--train-part encoder``) the encoder is the only thing that can close the
amortisation gap (``training.inversion_gap``), and that squeeze is its narrowest point.

A function-preserving widening in the spirit of Net2Net (Chen, Goodfellow & Shlens 2016,
"Net2Net: Accelerating Learning via Knowledge Transfer"), in its simplest form: the old maps
keep their weights and BatchNorm state, the new maps start from the fresh run's random init,
and the head's weights *from* the new maps start at zero. So the widened encoder gives the
artifact's μ and logσ² exactly at step 0, and training continues from there instead of from
scratch. The new maps still learn: the head's weights from them get the gradient
∂L/∂out · activation, which is not zero, and the squeeze filters follow once those weights
have moved.
"""

from __future__ import annotations

import torch

from facegen_core.networks import Encoder


@torch.no_grad()
def widen_encoder_head(target: Encoder, source: Encoder) -> None:
    """Copy ``source`` into ``target``, whose head has at least as many squeeze maps and is
    otherwise the same architecture; ``target``'s extra maps keep their own init (see above)."""
    src, dst = source.state_dict(), target.state_dict()
    old = int(src["squeeze.0.weight"].shape[0])  # squeeze maps of the source
    new = int(dst["squeeze.0.weight"].shape[0])
    if new < old:
        raise ValueError(f"cannot narrow the encoder head from {old} to {new} maps")
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
