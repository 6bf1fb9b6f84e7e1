"""Attribute directions in latent space, stored in an artifact, and edits along them.

An artifact may hold ``attributes.safetensors`` (listed and checksummed in its manifest like
every other file): for K named attributes ("Smiling", "Eyeglasses", ...) a direction each in
z-space, ``directions`` (K, D) float32. ``training.attributes`` computes them; the service
only reads them.

Strength units. A direction is built in the whitened space ε = L⁻¹(μ - m) of the training
faces' encoder means μ ~ N(m, LLᵀ), as a unit normal n of a linear classifier there
(InterFaceGAN, Shen et al. 2020), and stored mapped back to z-space, v = L n. Editing
z' = z + s·v is ε' = ε + s·n: ``s`` is in **standard deviations of the training faces' encoder
means along that direction** (in whitened space every unit direction has standard deviation 1).
``separation`` (K,) records, in the same units, how far apart the mean faces with and without
the attribute are: s = separation moves an average face without it to an average face with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

ATTRIBUTES_FILE = "attributes.safetensors"
FORMAT = "facegen-attributes-1"


class UnknownAttributeError(ValueError):
    """An edit names an attribute the model has no direction for."""

    def __init__(self, unknown: list[str], valid: list[str]) -> None:
        self.unknown, self.valid = unknown, valid
        have = ", ".join(valid) if valid else "none (this model has no attribute directions)"
        super().__init__(
            f"Unknown attribute{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}; "
            f"this model's attributes are: {have}."
        )


@dataclass(frozen=True)
class AttributeDirections:
    """K named directions in z-space: ``directions`` (K, D), ``separation`` (K,).

    ``info`` is free JSON about how they were made (method, data, conditioning per attribute).
    """

    names: list[str]
    directions: torch.Tensor
    separation: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.names)
        if len(set(self.names)) != k:
            raise ValueError("Attribute names must be unique.")
        if (
            self.directions.dim() != 2
            or self.directions.shape[0] != k
            or tuple(self.separation.shape) != (k,)
        ):
            raise ValueError(
                f"{k} attribute names need directions (K, D) and separation (K,); got "
                f"{tuple(self.directions.shape)} and {tuple(self.separation.shape)}."
            )
        if not bool(torch.isfinite(self.directions).all() and torch.isfinite(self.separation).all()):
            raise ValueError("Attribute directions hold non-finite values.")

    @property
    def latent_dim(self) -> int:
        return int(self.directions.shape[1])

    def check(self, strengths: Mapping[str, float]) -> None:
        """Raise UnknownAttributeError naming the valid attributes if a name is not one of them."""
        unknown = [n for n in strengths if n not in self.names]
        if unknown:
            raise UnknownAttributeError(unknown, list(self.names))

    def offset(self, strengths: Mapping[str, float]) -> torch.Tensor:
        """Σ s_k v_k: the z-space step (D,) float32 of an edit {name: strength}."""
        self.check(strengths)
        out = torch.zeros(self.latent_dim, dtype=torch.float64)
        for name, s in strengths.items():
            out += float(s) * self.directions[self.names.index(name)].double()
        return out.float()

    def apply(self, z: torch.Tensor, strengths: Mapping[str, float]) -> torch.Tensor:
        """z (N, D) or (D,) moved by the edit; the same shape and dtype."""
        if not strengths:
            return z
        return (z.double() + self.offset(strengths).double()).to(z.dtype)

    def sweep(self, z: torch.Tensor, name: str, lo: float, hi: float, steps: int) -> torch.Tensor:
        """z (D,) moved by strengths linspace(lo, hi, steps) of one attribute: (steps, D)."""
        self.check({name: 0.0})
        s = torch.linspace(lo, hi, steps, dtype=torch.float64)[:, None]  # (steps, 1)
        v = self.directions[self.names.index(name)].double()[None]  # (1, D)
        return (z.double()[None] + s * v).to(z.dtype)

    def to_bytes(self) -> bytes:
        """safetensors bytes (never pickle): tensors plus names and info as JSON metadata."""
        meta = {"format": FORMAT, "names": json.dumps(self.names), "info": json.dumps(self.info)}
        tensors = {
            "directions": self.directions.detach().float().contiguous(),
            "separation": self.separation.detach().float().contiguous(),
        }
        return save(tensors, metadata=meta)


class AttributeFileError(ValueError):
    """attributes.safetensors is unreadable or does not fit the model."""


def read_attributes(path: str | Path, latent_dim: int) -> AttributeDirections:
    """Load ``path`` (an attributes.safetensors) for a ``latent_dim``-d model."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {FORMAT!r}")
        attrs = AttributeDirections(
            names=list(json.loads(meta["names"])),
            directions=tensors["directions"].float(),
            separation=tensors["separation"].float(),
            info=dict(json.loads(meta.get("info", "{}"))),
        )
    except Exception as e:  # safetensors, JSON and shape errors alike
        raise AttributeFileError(f"{path} is not a valid attribute file: {e}") from e
    if attrs.latent_dim != latent_dim:
        raise AttributeFileError(
            f"{path} holds {attrs.latent_dim}-d directions for a {latent_dim}-d latent space."
        )
    return attrs
