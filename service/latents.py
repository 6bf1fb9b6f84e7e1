"""Latent vectors for the routes: seeds' latents, attribute edits, sweeps and interpolation paths.

The model side owns torch: these functions take and return float32 numpy arrays (N, D) and do
their tensor work with the served model's prior and attribute directions (``ModelInfo``), so the
HTTP layer (``service/api``) never imports torch. Attribute names are checked here too (a 422
naming the model's attributes), before any latent moves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from service.errors import InvalidFieldError
from service.model_info import ModelInfo


def seed_latents(info: ModelInfo, seed: int, n: int, temperature: float) -> np.ndarray:
    """float32 (n, D): row i is seed + i's noise ε mapped through the model's prior."""
    return info.prior.latents_for_seeds(seed, n, info.latent_dim, temperature).numpy()


def valid_names(info: ModelInfo) -> list[str]:
    return list(info.attributes.names) if info.attributes is not None else []


def check_attributes(info: ModelInfo, names: list[str], field: str = "attributes") -> None:
    """422 naming the model's attributes unless every one of ``names`` is one of them."""
    valid = valid_names(info)
    unknown = [n for n in names if n not in valid]
    if not unknown:
        return
    name = unknown[0] if len(unknown[0]) <= 64 else unknown[0][:64] + "…"  # echoed, so bounded
    if not valid:
        detail = (
            f"This model ({info.name} v{info.version}) has no attribute directions, so "
            f"{name!r} cannot be edited; compute them with `python -m training.attributes`."
        )
    else:
        detail = (
            f"Unknown attribute {name!r} in field '{field}'; this model's attributes are: {', '.join(valid)}."
        )
    raise InvalidFieldError(detail, field=f"{field}.{name}", valid=valid)


def apply_edit(info: ModelInfo, latents: np.ndarray, strengths: Mapping[str, float] | None) -> np.ndarray:
    """float32 latents (N, D) moved by {name: strength} (unchanged when there is none)."""
    if not strengths:
        return latents
    check_attributes(info, list(strengths))
    assert info.attributes is not None
    return info.attributes.apply(torch.from_numpy(latents), strengths).numpy()


def sweep(
    info: ModelInfo, z: np.ndarray, name: str, start: float, stop: float, steps: int
) -> tuple[np.ndarray, list[float]]:
    """float32 (steps, D): z (D,) plus ``name``'s direction at ``steps`` strengths from start to
    stop, and those strengths."""
    assert info.attributes is not None
    rows = info.attributes.sweep(torch.from_numpy(z), name, start, stop, steps).numpy()
    strengths: list[float] = torch.linspace(start, stop, steps, dtype=torch.float64).tolist()
    return rows.astype(np.float32), strengths


def path(info: ModelInfo, a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
    """float32 (steps, D) from latent a to b (D,), both ends included, through the prior's
    ε-space, where slerp's constant-norm path is the right one."""
    out = info.prior.path(torch.from_numpy(a), torch.from_numpy(b), steps, method)
    return out.numpy().astype(np.float32)
