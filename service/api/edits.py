"""Attribute edits for the routes: names checked against the model's, latents moved."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from service.errors import InvalidFieldError
from service.model_info import ModelInfo


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


def apply_edit(info: ModelInfo, latents: torch.Tensor, strengths: Mapping[str, float] | None) -> torch.Tensor:
    """latents (N, D) moved by {name: strength} (unchanged when there is none)."""
    if not strengths:
        return latents
    check_attributes(info, list(strengths))
    assert info.attributes is not None
    return info.attributes.apply(latents, strengths)
