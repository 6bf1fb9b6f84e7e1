"""Medians over rounds, the table, and the ratios facegen/peer."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from bench.peers.protocol import FACEGEN


@dataclass
class PeerCell:
    """One (system, concurrency) measurement in one round."""

    system: str
    round: int
    concurrency: int
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    rows_per_call: float | None  # the system's own counters (docs/bench.md, Peers)
    server_cpu_ms_per_request: float | None  # the server's whole process tree, from /proc
    rss_mib: float  # the tree's VmRSS at the window's close

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Table = dict[str, dict[int, dict[str, float | None]]]  # system -> concurrency -> field -> value
FIELDS = ("requests_per_s", "p50_ms", "p99_ms", "rows_per_call", "server_cpu_ms_per_request", "rss_mib")


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def medians(cells: list[PeerCell]) -> Table:
    """system -> concurrency -> field -> median over rounds (plus ``rounds`` and ``errors``)."""
    out: Table = {}
    for c in cells:
        out.setdefault(c.system, {}).setdefault(c.concurrency, {})
    for system, by_conc in out.items():
        for conc in by_conc:
            mine = [c for c in cells if c.system == system and c.concurrency == conc]
            row: dict[str, float | None] = {f: _median([getattr(c, f) for c in mine]) for f in FIELDS}
            row["rounds"] = float(len(mine))
            row["errors"] = float(sum(c.errors for c in mine))
            by_conc[conc] = row
    return out


def ratios(med: Table) -> Table:
    """peer -> concurrency -> {req/s facegen/peer (> 1: facegen faster), p99 facegen/peer (< 1:
    facegen's tail shorter), server CPU ms/request facegen/peer (< 1: facegen cheaper)}."""
    out: Table = {}
    ours = med.get(FACEGEN, {})
    for peer, by_conc in med.items():
        if peer == FACEGEN:
            continue
        for conc, row in by_conc.items():
            mine = ours.get(conc, {})
            out.setdefault(peer, {})[conc] = {
                f: (mine[f] / row[f]) if mine.get(f) and row.get(f) else None  # type: ignore[operator]
                for f in ("requests_per_s", "p99_ms", "server_cpu_ms_per_request")
            }
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def render(meta: dict[str, Any], med: Table) -> str:
    lines = [
        f"facegen vs peers: generate n=1, peer mode {meta['peer_mode']}, {meta['rounds']} interleaved "
        f"round(s), medians; {meta['cpu_count']} CPUs shared by client and servers; "
        f"model {meta['model']}; torch threads {meta['torch_threads']}.",
        "",
        "| system | concurrency | req/s | p50 ms | p99 ms | rows / model call | server CPU ms / request "
        "| RSS MiB | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system, by_conc in med.items():
        for conc, r in sorted(by_conc.items()):
            lines.append(
                f"| {meta['labels'].get(system, system)} | {conc} | {_fmt(r['requests_per_s'])} "
                f"| {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | {_fmt(r['rows_per_call'])} "
                f"| {_fmt(r['server_cpu_ms_per_request'], 2)} | {_fmt(r['rss_mib'], 0)} "
                f"| {int(r['errors'] or 0)} |"
            )
    lines += _ceiling_lines(meta, med)
    lines += ["", "Ratios facegen / peer (req/s > 1: facegen faster; p99 and CPU < 1: facegen better):", ""]
    lines += ["| peer | concurrency | req/s | p99 | server CPU / request |", "|---|---|---|---|---|"]
    for peer, by_conc in ratios(med).items():
        for conc, r in sorted(by_conc.items()):
            lines.append(
                f"| {meta['labels'].get(peer, peer)} | {conc} | {_fmt(r['requests_per_s'], 2)} "
                f"| {_fmt(r['p99_ms'], 2)} | {_fmt(r['server_cpu_ms_per_request'], 2)} |"
            )
    return "\n".join(lines)


CEILING_ROWS = (
    ("batch_1", "batch 1"),
    ("batch_max", "one pass of the max batch"),
    ("batch_max_chunked", "max batch as the service computes it (1-row passes on its row lanes)"),
)


def _ceiling_lines(meta: dict[str, Any], med: Table) -> list[str]:
    """(a) the raw model + PNG in this run, and facegen's served req/s at the highest
    concurrency against the ceiling computed the way the service computes."""
    ceiling = meta.get("ceiling")
    if not ceiling:
        return []
    lines = ["", "(a) ceiling in this run: raw decoder + PNG, no HTTP", "", "| batch | img/s |", "|---|---|"]
    for key, name in CEILING_ROWS:
        if key in ceiling:
            lines.append(f"| {name} | {_fmt(ceiling[key]['images_per_s'])} |")
    ours = med.get(FACEGEN, {})
    chunked = ceiling.get("batch_max_chunked")
    if ours and chunked:
        conc = max(ours)
        served = ours[conc].get("requests_per_s")
        if served:
            frac = served / chunked["images_per_s"]
            lines += [
                "",
                f"facegen at concurrency {conc}: {served:.1f} img/s = {frac:.0%} of the ceiling "
                "as the service computes it.",
            ]
    return lines
