"""A real `python -m service` on a tiny artifact, shared by the deploy tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch

from facegen_core import ModelConfig, build_autoencoder, write_artifact

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval_s)
    raise AssertionError(f"Timed out after {timeout_s:.0f} s waiting for {what}.")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    torch.manual_seed(0)
    cfg = ModelConfig.tiny()
    write_artifact(store, "tiny", cfg, *build_autoencoder(cfg))
    return store


@pytest.fixture(scope="session")
def live_service(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of the service, started the way the image starts it, ready (GET /readyz 200)."""
    if not (ROOT / "service" / "__main__.py").is_file():
        pytest.skip("service/__main__.py does not exist yet, so `python -m service` cannot run.")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGEN_")}
    env.update(
        FACEGEN_HOST="127.0.0.1",
        FACEGEN_PORT=str(port),
        FACEGEN_MODEL_STORE=str(tiny_store),
        FACEGEN_DEVICE="cpu",
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path_factory.mktemp("service") / "service.log"
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"`python -m service` exited with {proc.returncode}:\n{log_path.read_text()}"
                )
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        try:
            wait_until(ready, READY_TIMEOUT_S, f"{url}/readyz to answer 200")
        except AssertionError as e:
            raise AssertionError(f"{e}\nService log:\n{log_path.read_text()[-4000:]}") from None
        yield url
    finally:
        stop(proc)
