"""Each system's own count of model calls and rows, read at the edges of a measurement window.

facegen: the ``facegen_batch_size`` histogram on ``/metrics`` (op ``decode``). PyTriton:
Triton's ``nv_inference_exec_count`` (model executions) and ``nv_inference_request_success``
(requests, one row each here) on its metrics port. TorchServe: its metrics API counts requests
(``ts_inference_requests_total``) but not handler calls (``PredictionTime`` is a gauge), so the
handler counts in a memory-mapped file (``FaceHandler(stats_path=...)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.peers import protocol
from bench.peers.handler import read_stats
from bench.scrape import scrape

TRITON_COUNTERS = ("nv_inference_exec_count", "nv_inference_request_success")  # (calls, rows)
Counters = Callable[[], Awaitable[tuple[float, float] | None]]  # () -> (model calls, rows)


def facegen_counters(client: httpx.AsyncClient, url: str) -> Counters:
    async def read() -> tuple[float, float] | None:
        c = await scrape(client, url)
        return (c.calls["decode"], c.rows["decode"]) if c.available else None

    return read


def torchserve_counters(stats: Path) -> Counters:
    """The handler's (calls, rows): its file, or with several workers the sum of theirs
    (``stats.PID``, one per worker process)."""

    async def read() -> tuple[float, float] | None:
        found = [read_stats(f) for f in [stats, *sorted(stats.parent.glob(stats.name + ".*"))]]
        counts = [c for c in found if c is not None]
        if not counts:
            return None
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    return read


def triton_counters(client: httpx.AsyncClient, metrics_url: str) -> Counters:
    async def read() -> tuple[float, float] | None:
        try:
            r = await client.get(f"{metrics_url}/metrics", timeout=10.0)
            r.raise_for_status()
        except httpx.HTTPError:
            return None
        return parse_triton_metrics(r.text)

    return read


def parse_triton_metrics(text: str, model: str = protocol.MODEL) -> tuple[float, float] | None:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name.removesuffix("_total")  # the parser names counter samples NAME_total
            if s.labels.get("model") == model and name in TRITON_COUNTERS:
                found[name] = found.get(name, 0.0) + s.value
    if len(found) < 2:
        return None
    return found[TRITON_COUNTERS[0]], found[TRITON_COUNTERS[1]]
