"""The real server on CUDA: CUDA graphs are captured during warm-up, before /readyz is 200."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.gpu.conftest import CUDA
from tests.service.live import LiveService

pytestmark = CUDA

# The service's own dependencies: the GPU machine gets them from carried wheels.
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def test_readyz_is_200_only_after_the_graphs_are_captured(gpu_store: Path, tmp_path: Path) -> None:
    env = {
        "FACEGEN_DEVICE": "cuda",
        "FACEGEN_MODEL_NAME": "small",
        "FACEGEN_CUDA_GRAPHS": "true",
        "FACEGEN_WARMUP_BATCH_SIZES": "[1, 64]",
    }
    with LiveService(gpu_store, tmp_path / "service.log", env) as service:
        service.wait_ready(timeout_s=180)
        log = service.log()
        captured, ready = log.find("Captured CUDA graphs"), log.find("ready in")
        assert 0 <= captured < ready, log[-4000:]
        assert "cuda_graphs=True" in log[ready:].splitlines()[0], log[-4000:]
        loaded = httpx.get(service.url + "/models", timeout=10).json()["loaded"]
        assert loaded["state"] == "ready" and loaded["device"].startswith("cuda")
        assert loaded["cuda_graphs"] is True
        r = httpx.post(service.url + "/generate", json={"n": 64, "seed": 7}, timeout=60)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/png")
