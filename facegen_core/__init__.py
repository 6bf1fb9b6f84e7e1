"""facegen's shared core: the VAE-GAN networks and the model-store artifact format.

Training (``training``) and serving (``service``) import this package and never each other.
"""

from facegen_core.artifact import (
    Artifact,
    ArtifactError,
    ArtifactFormatError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    ModelStore,
    load_artifact,
    verify_artifact,
    write_artifact,
)
from facegen_core.config import ModelConfig
from facegen_core.networks import Decoder, Discriminator, Encoder, build_autoencoder, count_parameters

__all__ = [
    "Artifact",
    "ArtifactError",
    "ArtifactFormatError",
    "ArtifactNotFoundError",
    "ChecksumMismatchError",
    "Decoder",
    "Discriminator",
    "Encoder",
    "ModelConfig",
    "ModelStore",
    "build_autoencoder",
    "count_parameters",
    "load_artifact",
    "verify_artifact",
    "write_artifact",
]
