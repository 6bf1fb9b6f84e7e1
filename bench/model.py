"""Which model the bench runs: the store's default, or a random-weights artifact.

Speed depends on the architecture (``config.json``), not on the weights, so when the
store holds no model the bench writes a random ``ModelConfig.small()`` artifact into a
temporary store and serves that.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from facegen_core.artifact import ArtifactError, ModelStore, read_manifest, write_artifact
from facegen_core.config import ModelConfig
from facegen_core.networks import build_autoencoder

RANDOM_CONFIGS = {"small": ModelConfig.small, "tiny": ModelConfig.tiny}
RANDOM_NAME = "bench"


@dataclass
class ModelChoice:
    store: Path
    name: str
    version: int
    path: Path
    config: ModelConfig
    random_weights: bool
    # Holds the temporary store alive (deleted by ``cleanup``) when the bench wrote one.
    tmpdir: tempfile.TemporaryDirectory[str] | None = None

    def describe(self) -> str:
        weights = "random weights" if self.random_weights else "trained weights"
        return f"{self.name} v{self.version} ({weights}; {self.path})"

    def cleanup(self) -> None:
        if self.tmpdir is not None:
            self.tmpdir.cleanup()
            self.tmpdir = None


def write_random_model(config: ModelConfig, seed: int = 0) -> ModelChoice:
    """A random-weights artifact of ``config`` in a fresh temporary store."""
    import torch

    torch.manual_seed(seed)
    tmp = tempfile.TemporaryDirectory(prefix="facegen-bench-store-")
    store = Path(tmp.name)
    encoder, decoder = build_autoencoder(config)
    path = write_artifact(
        store,
        RANDOM_NAME,
        config,
        encoder,
        decoder,
        manifest={"note": "random weights written by python -m bench"},
    )
    ModelStore(store).set_default(RANDOM_NAME)
    return ModelChoice(store, RANDOM_NAME, int(path.name), path, config, True, tmp)


def choose_model(
    store: str | Path, name: str | None, version: int | None, random_config: str | None
) -> ModelChoice:
    """``random_config`` forces a random artifact; otherwise the store's model, else a random small one."""
    if random_config is not None:
        if random_config not in RANDOM_CONFIGS:
            raise ValueError(
                f"--random-model must be one of {sorted(RANDOM_CONFIGS)}, got {random_config!r}."
            )
        return write_random_model(RANDOM_CONFIGS[random_config]())
    try:
        path = ModelStore(store).resolve(name, version)
    except ArtifactError:
        if name is not None or version is not None:
            raise  # an explicitly named model that is missing is the user's error, not a fallback
        return write_random_model(ModelConfig.small())
    manifest = read_manifest(path)
    config = ModelConfig.load(path / "config.json")
    return ModelChoice(Path(store), str(manifest["name"]), int(manifest["version"]), path, config, False)
