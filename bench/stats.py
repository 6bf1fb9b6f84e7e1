"""Per-cell figures from the raw samples: throughput, latency percentiles, errors."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bench.loadgen import Sample


@dataclass
class CellStats:
    window_s: float
    requests: int  # successful requests finished inside the window
    images_per_s: float
    requests_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    errors: int  # failed requests finished inside the window
    errors_by_status: dict[str, int]  # over the whole cell, warm-up and drain included

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status_name(status: int) -> str:
    return {0: "connection", -1: "timeout"}.get(status, str(status))


def summarize(samples: list[Sample], t0: float, t1: float) -> CellStats:
    window = [s for s in samples if t0 <= s.end <= t1]
    ok = [s for s in window if s.images > 0]
    span = max(t1 - t0, 1e-9)
    lat = np.array([(s.end - s.start) * 1e3 for s in ok], dtype=np.float64)

    def pct(q: float) -> float | None:
        return float(np.percentile(lat, q)) if lat.size else None

    errors = Counter(status_name(s.status) for s in samples if s.images == 0)
    return CellStats(
        window_s=span,
        requests=len(ok),
        images_per_s=sum(s.images for s in ok) / span,
        requests_per_s=len(ok) / span,
        p50_ms=pct(50),
        p95_ms=pct(95),
        p99_ms=pct(99),
        mean_ms=float(lat.mean()) if lat.size else None,
        max_ms=float(lat.max()) if lat.size else None,
        errors=len(window) - len(ok),
        errors_by_status=dict(sorted(errors.items())),
    )
