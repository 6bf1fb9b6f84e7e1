"""Prometheus metrics, one CollectorRegistry per app so tests (and two apps) never share state.

The names and labels are a contract with deploy/ (dashboard, alerts): add, never rename.
Labels have few values: ``endpoint`` is a route path or "other", ``op`` is encode/decode,
``reason`` is a problem slug (queue_full, invalid_field, ...), ``key`` a configured API key id
or "-", ``model_version`` a NAME/VERSION of the store.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from service.model_info import OPS

# Seconds: from a 1 ms queue wait to a 30 s request, about ×2.5 apart.
TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def batch_size_buckets(max_batch_size: int) -> tuple[float, ...]:
    """1, 2, 4, … up to max_batch_size (itself included when it is not a power of two)."""
    buckets, b = [], 1
    while b < max_batch_size:
        buckets.append(float(b))
        b *= 2
    buckets.append(float(max_batch_size))
    return tuple(buckets)


class Metrics:
    """Every facegen metric, registered in a registry of its own."""

    def __init__(self, max_batch_size: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "facegen_requests_total",
            "HTTP requests by route and status code.",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "facegen_request_duration_seconds",
            "Wall time from request start to the last response byte.",
            ["endpoint"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "facegen_batch_size",
            "Rows per model call.",
            ["op"],
            buckets=batch_size_buckets(max_batch_size),
            registry=r,
        )
        self.queue_wait = Histogram(
            "facegen_queue_wait_seconds",
            "Time a request's rows waited in the batch queue before their model call.",
            ["op"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "facegen_inference_duration_seconds",
            "Duration of one model call (a whole batch).",
            ["op"],
            buckets=TIME_BUCKETS,
            registry=r,
        )
        self.queue_depth_gauge = Gauge(
            "facegen_queue_depth", "Rows waiting for a model call.", ["op"], registry=r
        )
        self.images = Counter(
            "facegen_images_total",
            "Images (faces, frames, reconstructions) returned.",
            ["endpoint"],
            registry=r,
        )
        self.rejected = Counter(
            "facegen_rejected_total",
            "Requests refused or abandoned, by reason (queue_full, invalid_field, ...).",
            ["reason"],
            registry=r,
        )
        self.model_info = Gauge(
            "facegen_model_info",
            "The loaded model (value 1).",
            ["name", "version", "sha256", "device", "precision"],
            registry=r,
        )
        self.api_key_requests = Counter(
            "facegen_api_key_requests_total",
            "Requests by API key id ('-': no valid key) and status code, when API keys are on.",
            ["key", "status"],
            registry=r,
        )
        self.model_requests = Counter(
            "facegen_model_requests_total",
            "Requests answered by a model version (the X-Model-Version they carry), by route.",
            ["model_version", "endpoint"],
            registry=r,
        )
        self.model_swaps = Counter(
            "facegen_model_swaps_total",
            "Model version swaps while serving, by outcome (ok, failed).",
            ["outcome"],
            registry=r,
        )
        self.not_modified = Counter(
            "facegen_not_modified_total",
            "Requests answered 304 from If-None-Match, without running the model.",
            ["endpoint"],
            registry=r,
        )
        for op in OPS:  # export the per-op series from the start, at zero
            self.queue_depth_gauge.labels(op=op).set(0)
        for outcome in ("ok", "failed"):  # so rate() and alerts see a swap's first increase
            self.model_swaps.labels(outcome=outcome)

    def track_gpu_memory(self, read: Callable[[], float]) -> None:
        """Export facegen_gpu_memory_allocated_bytes (only called when running on CUDA)."""
        g = Gauge(
            "facegen_gpu_memory_allocated_bytes",
            "torch.cuda.memory_allocated() on the model's device.",
            registry=self.registry,
        )
        g.set_function(read)

    # BatchObserver (service.batcher): called on the event loop.
    def queue_depth(self, op: str, rows: int) -> None:
        self.queue_depth_gauge.labels(op=op).set(rows)

    def batch_done(self, op: str, rows: int, waits_s: list[float], inference_s: float) -> None:
        self.batch_size.labels(op=op).observe(rows)
        self.inference.labels(op=op).observe(inference_s)
        for w in waits_s:
            self.queue_wait.labels(op=op).observe(max(0.0, w))

    def dropped(self, op: str, reason: str, rows: int) -> None:
        pass  # requests are counted once, by reason, where their response is made

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
