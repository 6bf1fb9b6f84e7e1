"""Read the service's batch sizes from ``GET /metrics`` (Prometheus text format).

``facegen_batch_size`` is a histogram of rows per model call, labelled ``op`` ("decode" or
"encode"); the mean batch size over a workload is Δsum / Δcount between two scrapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

BATCH_METRIC = "facegen_batch_size"
OPS = ("decode", "encode")


@dataclass(frozen=True)
class BatchCounters:
    """Cumulative (rows, calls) per op at one instant; None when the server has no such metric."""

    rows: dict[str, float]
    calls: dict[str, float]
    available: bool


def parse_batch_counters(text: str) -> BatchCounters:
    rows = dict.fromkeys(OPS, 0.0)
    calls = dict.fromkeys(OPS, 0.0)
    seen = False
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            op = s.labels.get("op")
            if op not in rows:
                continue
            if s.name == f"{BATCH_METRIC}_sum":
                rows[op] += s.value
                seen = True
            elif s.name == f"{BATCH_METRIC}_count":
                calls[op] += s.value
                seen = True
    return BatchCounters(rows, calls, seen)


async def scrape(client: httpx.AsyncClient, url: str) -> BatchCounters:
    try:
        r = await client.get(f"{url}/metrics", timeout=10.0)
        r.raise_for_status()
    except httpx.HTTPError:
        return BatchCounters({}, {}, False)
    return parse_batch_counters(r.text)


def mean_rows_per_call(before: BatchCounters, after: BatchCounters) -> dict[str, float | None]:
    """Per op: rows / calls over the interval; None where no call happened or no metric exists."""
    out: dict[str, float | None] = {}
    for op in OPS:
        if not (before.available and after.available):
            out[op] = None
            continue
        calls = after.calls.get(op, 0.0) - before.calls.get(op, 0.0)
        rows = after.rows.get(op, 0.0) - before.rows.get(op, 0.0)
        out[op] = rows / calls if calls > 0 else None
    return out
