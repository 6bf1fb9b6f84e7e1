"""Real `python -m service` processes for the HTTP tests, and helpers to read what they send.

``LiveService`` starts the server exactly as deployment and benchmark do (FACEGEN_* env,
a free port), with one torch thread so the suite behaves on a 2-core machine; ``stop`` always
ends it. ``tiny_artifact`` writes the seeded tiny model the whole service suite runs on.
"""

from __future__ import annotations

import io
import os
import re
import resource
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from facegen_core import ModelConfig, build_autoencoder, write_artifact
from facegen_core.latent import LatentPrior
from tests.nets import randomise_batchnorm

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
AI_KEYS = ("facegen:model", "facegen:version", "AI-Generated")


def tiny_prior(latent_dim: int, seed: int = 0) -> LatentPrior:
    """A seeded off-centre, correlated Gaussian, as export fits (so the service's ε -> z mapping
    is exercised, not the identity of an N(0, I) model)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(latent_dim, latent_dim, generator=g) * 0.3
    scale_tril = torch.linalg.cholesky(a @ a.T + 0.5 * torch.eye(latent_dim))
    return LatentPrior(mean=torch.randn(latent_dim, generator=g), scale_tril=scale_tril)


def random_artifact(
    store: Path, name: str, cfg: ModelConfig, seed: int = 0, note: str = "test model"
) -> Path:
    """A VAE-GAN of ``cfg`` with seeded random weights (BatchNorm statistics randomised too, so
    eval-mode BN is not the identity and the decoder's output depends on every layer) and a
    fitted-style latent prior, written to ``store``."""
    torch.manual_seed(seed)
    encoder, decoder = build_autoencoder(cfg)
    randomise_batchnorm(encoder, decoder)
    return write_artifact(
        store, name, cfg, encoder, decoder, manifest={"note": note}, prior=tiny_prior(cfg.latent_dim)
    )


def tiny_artifact(store: Path, name: str = "tiny", seed: int = 0, **config: Any) -> Path:
    """``random_artifact`` of ModelConfig.tiny(); ``config`` overrides its fields (e.g.
    input_crop="align")."""
    return random_artifact(store, name, ModelConfig.tiny(**config), seed, "service test model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveService:
    """One `python -m service` subprocess; ``url`` once started, log in ``log_path``.

    Started on construction; a context manager that stops it on exit, whatever happened::

        with LiveService(store, tmp_path / "service.log", env) as live:
            live.wait_ready()
            ...
    """

    def __init__(
        self, store: Path, log_path: Path, env: Mapping[str, str] | None = None, nofile: int | None = None
    ) -> None:
        """``nofile``: the process's file-descriptor limit (soft and hard), e.g. 1024."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        base = {k: v for k, v in os.environ.items() if not k.startswith("FACEGEN_")}
        self.env = {
            **base,
            "FACEGEN_HOST": "127.0.0.1",
            "FACEGEN_PORT": str(self.port),
            "FACEGEN_MODEL_STORE": str(store),
            "FACEGEN_DEVICE": "cpu",
            "FACEGEN_TORCH_THREADS": "1",
            "FACEGEN_WARMUP_BATCH_SIZES": "[1, 8]",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            **dict(env or {}),
        }
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
                if nofile
                else None,
            )

    def __enter__(self) -> LiveService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rss_bytes(self, key: str = "VmRSS") -> int:
        """The server's resident memory (``VmRSS``), or its peak (``VmHWM``), from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no {key} in /proc/{self.proc.pid}/status")

    def reset_peak_rss(self) -> bool:
        """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where that is not allowed."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until /healthz answers (the model may still be loading)."""
        self._wait(lambda r: r.status_code == 200, "/healthz", timeout_s)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        self._wait(lambda r: r.status_code == 200, "/readyz", timeout_s)

    def wait_loaded(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the model has left the "loading" state (ready, warming up or failed)."""
        self._wait(lambda r: r.json()["loaded"]["state"] != "loading", "/models", timeout_s)

    def _wait(self, ok: Any, path: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"`python -m service` exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if ok(httpx.get(self.url + path, timeout=2)):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(
            f"{self.url}{path} did not answer in {timeout_s:.0f} s. Log:\n{self.log()[-4000:]}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# ------------------------------------------------------------------ reading responses


def png_pixels(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, C)."""
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        arr = np.asarray(img.convert("RGB") if img.mode not in ("RGB", "L") else img)
    return arr if arr.ndim == 3 else arr[:, :, None]


def png_text(data: bytes) -> dict[str, str]:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return dict(img.text)  # type: ignore[attr-defined]


def assert_ai_labelled(data: bytes, model: str = "tiny", version: int = 1) -> dict[str, str]:
    text = png_text(data)
    assert text["facegen:model"] == model and text["facegen:version"] == str(version), text
    assert text["AI-Generated"] == "true" and "AI-generated" in text["Description"], text
    return text


def tile(grid: np.ndarray, i: int, ncols: int, side: int, pad: int = 2) -> np.ndarray:
    """Tile i of a row-major grid made by facegen_core.images.make_grid."""
    r, c = divmod(i, ncols)
    y, x = pad + r * (side + pad), pad + c * (side + pad)
    return grid[y : y + side, x : x + side]


def apng_frames(data: bytes) -> list[np.ndarray]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and getattr(img, "is_animated", False)
        frames = []
        for k in range(img.n_frames):  # type: ignore[attr-defined]
            img.seek(k)
            frames.append(np.asarray(img.convert("RGB")))
    return frames


def gif_frames(data: bytes) -> tuple[list[np.ndarray], bytes]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "GIF"
        frames = []
        for k in range(img.n_frames):  # type: ignore[attr-defined]
            img.seek(k)
            frames.append(np.asarray(img.convert("RGB")))
        comment = img.info.get("comment", b"")
    return frames, comment


def zip_pngs(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {name: z.read(name) for name in z.namelist()}


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 body with ``status`` (and ``field``, when given)."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status and body["type"].startswith("/problems/") and len(body["detail"]) > 20
    if field is not None:
        assert body.get("field") == field, body
    return body


def _label_filter(labels: str) -> dict[str, str | None]:
    """'op="decode",status="503"' -> {'op': 'decode', 'status': '503'}; a bare 'sha256='
    asks only that the sample has that label (None)."""
    wanted: dict[str, str | None] = {k: v for k, v in re.findall(r'(\w+)="([^"]*)"', labels)}
    for bare in re.findall(r"(\w+)=(?=,|$)", labels):
        wanted.setdefault(bare, None)
    return wanted


def _samples(metrics: str, name: str, labels: str) -> list[Sample]:
    """The samples called ``name`` (a sample name: ``x_total``, ``x_bucket``, ``x_sum``) whose
    labels include ``labels``, parsed by prometheus_client (as bench/scrape.py does)."""
    wanted = _label_filter(labels)
    return [
        s
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == name
        and all(k in s.labels and (v is None or s.labels[k] == v) for k, v in wanted.items())
    ]


def parse_histogram(metrics: str, name: str, labels: str) -> dict[str, float]:
    """{le: cumulative count} of one histogram series, e.g. ('facegen_batch_size', 'op="decode"')."""
    return {s.labels["le"]: s.value for s in _samples(metrics, f"{name}_bucket", labels)}


def metric_value(metrics: str, name: str, labels: str = "") -> float:
    """Sum of the samples of ``name`` whose label set contains ``labels``."""
    return sum(s.value for s in _samples(metrics, name, labels))
