"""Every service setting, in one pydantic-settings class read from ``FACEGEN_*`` variables.

``python -m service`` builds ``Settings()`` from the environment; tests build it directly.
The deployment (Docker, compose) and the benchmark start the server only through these
variables, so their names are an interface: add, never rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from facegen_core.device import serving_decoder_memory_format

# The repo's bundled store, found from the package so `python -m service` works from any cwd.
DEFAULT_MODEL_STORE = Path(__file__).resolve().parents[1] / "model_store"
MAX_ROWS_PER_REQUEST = 64  # n, latents, files and steps are each capped at this (API contract)
REFINE_LIMIT = 10_000  # most refine steps the API's schema accepts; FACEGEN_MAX_REFINE_STEPS ≤ this


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
        default=0.0,
        ge=0.0,
        le=10_000.0,
        description=(
            "Longest a row waits for its batch to fill. 0: a batch is what queued while the "
            "model was busy, so a request at low load waits for nothing (docs/bench.md)."
        ),
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
        default=25_000_000,
        ge=1,
        description="Largest width × height an upload's header may claim (25 M: a 24-megapixel camera).",
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
    http_parser: Literal["auto", "httptools", "h11"] = Field(
        default="auto",
        description="HTTP/1.1 parser: httptools (C) when installed (auto), or h11 (pure Python).",
    )
    row_threads: int = Field(
        default=0,
        ge=0,
        le=64,
        description=(
            "CPU only: a model call of several passes runs them on this many threads of one torch "
            "thread each (a lone pass keeps every torch thread). 0: torch's thread count; 1: off. "
            "Outputs are bit-identical either way; warm-up checks it and turns this off if not."
        ),
    )
    decoder_memory_format: Literal["auto", "contiguous", "channels_last"] = Field(
        default="auto",
        description=(
            "How the decoder's weights and activations lie in memory: NCHW (contiguous) or NHWC "
            "(channels_last); the encoder stays NCHW. Convolutions pick their kernels by it, so it "
            "sets speed, and a face's floats are reproducible within one layout. auto: "
            "channels_last on CPU (measured faster there: python -m bench.layout), contiguous on CUDA."
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
    max_refine_steps: int = Field(
        default=200,
        ge=0,
        le=REFINE_LIMIT,
        description=(
            "Most refinement steps a request may ask for (`refine` on /encode, /reconstruct, /edit): "
            "each is a decoder forward and backward pass per face (docs/refine.md). 0: refinement off."
        ),
    )
    refine_slice_ms: float = Field(
        default=100.0,
        gt=0.0,
        le=60_000.0,
        description=(
            "Refinement holds the model for about this long per call (at least one step), then "
            "other requests' batches run before it goes on. The result does not depend on it."
        ),
    )
    warmup_batch_sizes: tuple[int, ...] = Field(
        default=(1, 8, 64), description="Batch sizes run once (encode and decode) before /readyz is 200."
    )
    warmup_delay_s: float = Field(
        default=0.0, ge=0.0, description="Test hook: extra sleep during warm-up, to observe /readyz 503."
    )

    # ---- Hardening (issue 12): memory of uploads, slow and stalled connections.
    decode_budget_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Most bytes of upload pixels decoded at once, across all requests (a larger "
        "file decodes alone).",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        description="A connection must send a request's complete headers within this many seconds "
        "of connecting (or of its previous response); else it is closed (408 when it sent a part).",
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0.0, description="Longest wait for the next piece of a request body; then 408."
    )
    keep_alive_s: int = Field(
        default=5, ge=1, description="An idle keep-alive connection is closed after this."
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="Open connections at most; past it the oldest idle one is closed. 0: the "
        "process's file-descriptor limit less 128 (kept for files, the model and threads).",
    )

    # ---- API keys, model versions without restart, caching (issues 12 and 13; docs/auth.md) ----
    api_keys_enabled: bool = Field(
        default=False,
        description="Require an API key (Authorization: Bearer KEY, or X-API-Key: KEY) on every route "
        "but open_paths. Keys come from api_keys and api_keys_file.",
    )
    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Keys as 'ID ROLE SECRET [RATE_PER_S [BURST]]' entries separated by ';' or newlines; "
        "ROLE is user or admin; SECRET is the key or 'sha256:HEX' of it.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file of key entries, one per line (format of api_keys; # comments)."
    )
    api_key_rate_per_s: float = Field(
        default=20.0, ge=0.0, description="Requests per second per key (token bucket); 0: unlimited."
    )
    api_key_burst: int = Field(default=40, ge=1, description="Requests a key may send at once (bucket size).")
    open_paths: tuple[str, ...] = Field(
        default=("/healthz", "/readyz", "/metrics", "/docs*", "/redoc", "/openapi.json", "/", "/static/*"),
        description="Paths that need no key when keys are on (probes, scrapers, docs, the playground "
        "page); 'P*': any path starting with P.",
    )
    admin_without_keys: bool = Field(
        default=False,
        description="Allow /admin/... routes with api_keys_enabled=false (anyone who reaches the port "
        "can then swap models; only for a trusted network).",
    )
    watch_store_s: float = Field(
        default=0.0,
        ge=0.0,
        description="Poll the store every this many seconds and swap to a new highest version of the "
        "served model when one appears (0: off; ignored when model_version pins a version).",
    )
    cache_max_age_s: int = Field(
        default=31_536_000,
        ge=0,
        description="max-age of the Cache-Control of responses fully determined by the request.",
    )

    @property
    def max_delay_s(self) -> float:
        return self.max_delay_ms / 1000.0

    def effective_row_threads(self, device_type: str, torch_threads: int) -> int:
        if device_type != "cpu":
            return 1
        return self.row_threads or max(1, torch_threads)

    def effective_decoder_memory_format(self, device_type: str) -> str:
        if self.decoder_memory_format != "auto":
            return self.decoder_memory_format
        return serving_decoder_memory_format(device_type)

    def effective_chunk_rows(self, device_type: str) -> int:
        if self.chunk_rows:
            return min(self.chunk_rows, self.max_batch_size)
        return self.max_batch_size if device_type == "cuda" else 1
