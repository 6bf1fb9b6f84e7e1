"""Every service setting, in one pydantic-settings class read from ``FACEGEN_*`` variables.

``python -m service`` builds ``Settings()`` from the environment; tests build it directly.
The deployment (Docker, compose) and the benchmark start the server only through these
variables, so their names are an interface: add, never rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repo's bundled store, found from the package so `python -m service` works from any cwd.
DEFAULT_MODEL_STORE = Path(__file__).resolve().parents[1] / "model_store"
MAX_ROWS_PER_REQUEST = 64  # n, latents, files and steps are each capped at this (API contract)


class Settings(BaseSettings):
    """The service's configuration; each field is ``FACEGEN_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="FACEGEN_", protected_namespaces=(), extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface uvicorn binds to (0.0.0.0 in containers).")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: any free port).")
    model_store: Path = Field(default=DEFAULT_MODEL_STORE, description="Directory of versioned artifacts.")
    model_name: str | None = Field(default=None, description="Model to serve; default: the store's default.")
    model_version: int | None = Field(
        default=None, ge=1, description="Version to serve; default: the highest."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when available.")
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        default="fp32", description="Autocast precision on CUDA; CPU always computes in fp32."
    )
    max_batch_size: int = Field(default=64, ge=1, le=4096, description="Most rows in one model call.")
    max_delay_ms: float = Field(
        default=5.0, ge=0.0, le=10_000.0, description="Longest a row waits for its batch to fill."
    )
    max_queue_rows: int = Field(
        default=1024, ge=1, description="Rows waiting for the model before requests get 503 + Retry-After."
    )
    request_timeout_s: float = Field(default=30.0, gt=0.0, description="Deadline of a request; then 504.")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="Largest accepted file.")
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest request body (all files together); then 413."
    )
    max_image_pixels: int = Field(
        default=40_000_000, ge=1, description="Largest width × height an upload's header may claim."
    )
    png_compress_level: int = Field(default=1, ge=0, le=9, description="zlib level of every PNG sent.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    access_log: bool = Field(
        default=False, description="uvicorn's per-request log lines (metrics count requests anyway)."
    )
    torch_threads: int = Field(
        default=0, ge=0, description="torch intra-op threads for the model worker; 0 keeps torch's default."
    )
    chunk_rows: int = Field(
        default=0,
        ge=0,
        description=(
            "Rows per forward pass. A batch is run in passes of exactly this many rows (the last "
            "one padded), so a row's pixels never depend on what it was batched with. "
            "0: 1 on CPU (measured fastest there for these convnets), max_batch_size on CUDA."
        ),
    )
    cuda_graphs: bool = Field(
        default=True,
        description=(
            "On CUDA, capture one CUDA graph each for the decode and encode pass of chunk_rows "
            "rows during warm-up and replay them (less launch overhead; if capture fails the "
            "service logs a warning and runs eagerly). Ignored on CPU."
        ),
    )
    drain_delay_s: float = Field(
        default=0.0,
        ge=0.0,
        le=300.0,
        description=(
            "On SIGTERM, seconds to keep serving with /readyz 503 before the listener closes, so a "
            "load balancer or Kubernetes stops routing here first (5 in deploy/kubernetes). Then "
            "requests in flight finish (up to request_timeout_s) and the process exits."
        ),
    )
    warmup_batch_sizes: tuple[int, ...] = Field(
        default=(1, 8, 64), description="Batch sizes run once (encode and decode) before /readyz is 200."
    )
    warmup_delay_s: float = Field(
        default=0.0, ge=0.0, description="Test hook: extra sleep during warm-up, to observe /readyz 503."
    )

    @property
    def max_delay_s(self) -> float:
        return self.max_delay_ms / 1000.0

    def effective_chunk_rows(self, device_type: str) -> int:
        if self.chunk_rows:
            return min(self.chunk_rows, self.max_batch_size)
        return self.max_batch_size if device_type == "cuda" else 1
