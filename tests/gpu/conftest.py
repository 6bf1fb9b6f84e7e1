"""CUDA-only tests: run with ``python -m pytest -m gpu tests/gpu`` on a machine with a GPU.

Every module here marks its tests ``gpu`` and skips them when torch sees no CUDA device
(``CUDA`` below), so the default suite collects this folder and skips it on CPU machines.
Fixtures: a temp store with seeded random-weight models, and a factory of loaded CUDA runners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

from facegen_core import ModelConfig
from tests.service.live import random_artifact, tiny_artifact

if TYPE_CHECKING:
    from service.runner import ModelRunner

REPO = Path(__file__).resolve().parents[2]
SHIPPED_STORE = REPO / "model_store"

# The marks every module here applies (``pytestmark = CUDA``). These tests run once, in one
# prepared GPU session: a warning from inside torch/NCCL must not fail them, so warnings are
# not errors here (they are in the rest of the suite).
CUDA = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m gpu on one)"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def small_artifact(store: Path, name: str = "small", seed: int = 0) -> Path:
    """``ModelConfig.small()`` at 64×64 with seeded random weights and BN statistics (the
    service's real shape, unlike the 32×32 tiny model)."""
    return random_artifact(store, name, ModelConfig.small(), seed, "gpu test model")


@pytest.fixture(scope="session")
def gpu_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding "tiny" (32×32) and "small" (64×64) random-weight models."""
    root = tmp_path_factory.mktemp("gpu_store")
    tiny_artifact(root)
    small_artifact(root)
    return root


RunnerFactory = Callable[..., "ModelRunner"]


@pytest.fixture()
def cuda_runner(gpu_store: Path) -> Iterator[RunnerFactory]:
    """``cuda_runner(model_name="tiny", **settings)``: a loaded, ready runner on CUDA with passes
    of max_batch_size = 64 rows (the CUDA default); shut down after the test. Skips when the
    service's dependencies (pydantic-settings) are not installed; the DDP test needs none."""
    pytest.importorskip("pydantic_settings")
    from service.runner import ModelRunner
    from service.settings import Settings

    made: list[ModelRunner] = []

    def make(**kw: object) -> ModelRunner:
        kw.setdefault("model_store", gpu_store)
        kw.setdefault("model_name", "tiny")
        kw.setdefault("warmup_batch_sizes", (1, 64))
        settings = Settings(device="cuda", max_batch_size=64, **kw)  # type: ignore[arg-type]
        runner = ModelRunner(settings)
        made.append(runner)
        runner.load()
        assert runner.ready, runner.reason
        assert runner.chunk_rows == 64
        return runner

    yield make
    for r in made:
        r.shutdown()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
