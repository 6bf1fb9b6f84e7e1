"""What the API knows about a loaded model version: a plain record, so the HTTP layer can type
its arguments without importing the device-owning runner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from facegen_core.attributes import AttributeDirections
from facegen_core.latent import LatentPrior

# The model's primitive operations: the batcher's queue keys and the ``op`` metrics label.
# refine: a slice of per-face latent refinement (service/refining.py).
ENCODE, DECODE, REFINE = "encode", "decode", "refine"
OPS = (ENCODE, DECODE, REFINE)


@dataclass(frozen=True)
class ModelInfo:
    """What the API reports about the loaded model (immutable once ready)."""

    name: str
    version: int
    sha256: str
    image_size: int
    channels: int
    latent_dim: int
    input_crop: str
    manifest: dict[str, Any]
    prior: LatentPrior  # seeds' noise -> latents (N(0, I) unless the artifact fitted one)
    attributes: AttributeDirections | None = None  # None: the artifact has no attribute directions
