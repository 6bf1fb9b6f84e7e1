"""The results of a run: cells, ratios, the issue's target checks, the table and the JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bench.ceiling import RawResult
from bench.stats import CellStats

SERVER_LABELS = {"off": "(b) batching off", "on": "(c) batching on"}
SHARED_CPU_NOTE = (
    "Client and server share this machine's CPU cores: the load generator's CPU "
    "time (cli cpu) is taken from the server, so served figures are a lower bound."
)


@dataclass
class CellResult:
    server: str  # "off" or "on"
    workload: str
    label: str
    concurrency: int
    op: str
    stats: CellStats
    rows_per_call: dict[str, float | None]
    server_cpu_cores: float | None  # server CPU seconds / window seconds
    client_cpu_cores: float | None  # load generator CPU seconds / window seconds
    # Server CPU ms per request by thread group (bench/threads.py); empty without py-spy.
    server_cpu_ms_per_request_by_thread: dict[str, float] = field(default_factory=dict)

    def cpu_ms_per_request(self, cores: float | None) -> float | None:
        """CPU milliseconds per successful request, from cores busy over the window."""
        if cores is None or self.stats.requests_per_s <= 0:
            return None
        return cores / self.stats.requests_per_s * 1e3

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict()
        d["server_cpu_ms_per_request"] = self.cpu_ms_per_request(self.server_cpu_cores)
        d["client_cpu_ms_per_request"] = self.cpu_ms_per_request(self.client_cpu_cores)
        return d


@dataclass
class Target:
    name: str
    passed: bool | None  # None: the cells it needs were not measured in this run
    value: float | None
    threshold: float | None
    detail: str


@dataclass
class Report:
    meta: dict[str, Any]
    # "batch_1", "batch_max" (one pass), and "batch_max_chunked" (passes of the service's
    # chunk_rows) when the service splits a batch
    ceiling: dict[str, RawResult]
    cells: list[CellResult] = field(default_factory=list)

    def cell(self, server: str, workload: str, concurrency: int) -> CellResult | None:
        for c in self.cells:
            if (c.server, c.workload, c.concurrency) == (server, workload, concurrency):
                return c
        return None

    @property
    def raw_gain(self) -> float:
        """The raw model's own gain from batching: images/s at the max batch over batch 1."""
        return self.ceiling["batch_max"].images_per_s / self.ceiling["batch_1"].images_per_s

    def ratios(self) -> list[dict[str, Any]]:
        out = []
        ceiling = self.ceiling["batch_max"].images_per_s
        for on in (c for c in self.cells if c.server == "on"):
            off = self.cell("off", on.workload, on.concurrency)
            out.append(
                {
                    "workload": on.workload,
                    "concurrency": on.concurrency,
                    "on_over_off": (
                        on.stats.images_per_s / off.stats.images_per_s
                        if off is not None and off.stats.images_per_s > 0
                        else None
                    ),
                    "on_over_ceiling": on.stats.images_per_s / ceiling,
                }
            )
        return out

    def targets(self) -> list[Target]:
        raw1, rawmax = self.ceiling["batch_1"], self.ceiling["batch_max"]
        b = rawmax.batch_size
        out: list[Target] = []
        on, off = self.cell("on", "gen1", 64), self.cell("off", "gen1", 64)
        if on is not None and off is not None and off.stats.images_per_s > 0:
            gain = on.stats.images_per_s / off.stats.images_per_s
            need = 0.8 * self.raw_gain
            out.append(
                Target(
                    "T1 batching gain, generate n=1 at concurrency 64",
                    gain >= need,
                    gain,
                    need,
                    f"served gain (c)/(b) = {on.stats.images_per_s:.1f}/{off.stats.images_per_s:.1f} "
                    f"= {gain:.2f}x; needs >= 80% of the raw gain {rawmax.images_per_s:.1f}/"
                    f"{raw1.images_per_s:.1f} = {self.raw_gain:.2f}x, i.e. >= {need:.2f}x",
                )
            )
        else:
            out.append(
                Target(
                    "T1 batching gain, generate n=1 at concurrency 64",
                    None,
                    None,
                    None,
                    "not measured: needs generate n=1 at concurrency 64 on both servers",
                )
            )
        for key, conc in (("gen1", 64), ("gen64", 4)):
            cell = self.cell("on", key, conc)
            if cell is None:
                if key == "gen1":
                    out.append(
                        Target(
                            "T2 served vs ceiling",
                            None,
                            None,
                            None,
                            "not measured: needs generate n=1 at concurrency 64, batching on",
                        )
                    )
                continue
            frac = cell.stats.images_per_s / rawmax.images_per_s
            rows = cell.rows_per_call.get("decode")
            rows_s = f"{rows:.1f}" if rows is not None else "?"
            chunked = self.ceiling.get("batch_max_chunked")
            note = ""
            if chunked is not None:
                note = (
                    f" [vs the ceiling as the service computes it, {b} rows in passes of "
                    f"{chunked.rows_per_pass}: {chunked.images_per_s:.1f} img/s, "
                    f"{cell.stats.images_per_s / chunked.images_per_s:.0%}]"
                )
            out.append(
                Target(
                    f"T2 served vs ceiling, {cell.label} at concurrency {conc}",
                    frac >= 0.7,
                    frac,
                    0.7,
                    f"(c) {cell.stats.images_per_s:.1f} img/s (mean {rows_s} rows/model call) vs ceiling "
                    f"(a) {rawmax.images_per_s:.1f} img/s at batch {b} = {frac:.0%}; needs >= 70%{note}",
                )
            )
        cell = self.cell("on", "gen1", 1)
        if cell is not None and cell.stats.p99_ms is not None:
            limit = 2.0 * raw1.batch_p50_ms
            out.append(
                Target(
                    "T3 p99 latency at concurrency 1, generate n=1",
                    cell.stats.p99_ms <= limit,
                    cell.stats.p99_ms,
                    limit,
                    f"p99 {cell.stats.p99_ms:.1f} ms vs 2 x raw single-image forward + PNG "
                    f"(2 x {raw1.batch_p50_ms:.1f} ms = {limit:.1f} ms)",
                )
            )
        else:
            out.append(
                Target(
                    "T3 p99 latency at concurrency 1",
                    None,
                    None,
                    None,
                    "not measured: needs generate n=1 at concurrency 1, batching on",
                )
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "ceiling": {k: v.to_dict() for k, v in self.ceiling.items()} | {"raw_gain": self.raw_gain},
            "cells": [c.to_dict() for c in self.cells],
            "ratios": self.ratios(),
            "targets": [asdict(t) for t in self.targets()],
        }


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def render(report: Report) -> str:
    m = report.meta
    rawmax = report.ceiling["batch_max"]
    lines = [
        f"facegen bench ({m['mode']} mode) — model {m['model']}, device {m['device']}/{m['precision']}, "
        f"torch threads {m['torch_threads']}, {m['cpu_count']} CPU cores"
        + "".join(f", {k}={v}" for k, v in m.get("openmp_env", {}).items()),
        f"PNG: {m['png']}. {SHARED_CPU_NOTE}",
        "",
        "(a) ceiling: raw decoder + PNG, no HTTP",
        f"  {'batch':>5} {'rows/pass':>9} {'img/s':>8} {'batch ms':>9} {'fwd ms/img':>10} {'png ms/img':>10}",
    ]
    for key in ("batch_1", "batch_max", "batch_max_chunked"):
        if (raw := report.ceiling.get(key)) is None:
            continue
        lines.append(
            f"  {raw.batch_size:>5} {raw.rows_per_pass:>9} {raw.images_per_s:>8.1f} {raw.batch_p50_ms:>9.1f} "
            f"{raw.forward_ms_per_image:>10.2f} {raw.png_ms_per_image:>10.2f}"
            + (
                f"   <- as the service runs a full batch (FACEGEN_CHUNK_ROWS, "
                f"{m.get('row_threads', 1)} row threads)"
                if key == "batch_max_chunked"
                else ""
            )
        )
    lines.append(f"  raw gain from batching: {report.raw_gain:.2f}x")
    lines.append("")
    ratios = {(r["workload"], r["concurrency"]): r for r in report.ratios()}
    head = (
        f"{'workload':<22}{'conc':>5} {'server':<17}{'img/s':>8}{'req/s':>8}{'p50 ms':>9}"
        f"{'p95 ms':>9}{'p99 ms':>9}{'err':>5}{'rows/call':>10}{'srv cpu':>8}{'cli cpu':>8}{'srv ms/req':>11}"
        f"{'c/b':>7}{'c/a':>7}"
    )
    lines += [head, "-" * len(head)]
    order = sorted(report.cells, key=lambda c: (c.workload, c.concurrency, c.server != "off"))
    for c in order:
        s = c.stats
        rows = c.rows_per_call.get(c.op)
        r = ratios.get((c.workload, c.concurrency)) if c.server == "on" else None
        lines.append(
            f"{c.label:<22}{c.concurrency:>5} {SERVER_LABELS[c.server]:<17}{s.images_per_s:>8.1f}"
            f"{s.requests_per_s:>8.1f}{_f(s.p50_ms):>9}{_f(s.p95_ms):>9}{_f(s.p99_ms):>9}"
            f"{s.errors:>5}{_f(rows):>10}{_f(c.server_cpu_cores, '.2f'):>8}"
            f"{_f(c.client_cpu_cores, '.2f'):>8}{_f(c.cpu_ms_per_request(c.server_cpu_cores)):>11}"
            f"{_f(r['on_over_off'] if r else None, '.2f'):>7}"
            f"{_f(r['on_over_ceiling'] if r else None, '.2f'):>7}"
        )
    lines += [
        "",
        "c/b = (c)/(b) images/s; c/a = (c) images/s over the ceiling (a) at batch "
        f"{rawmax.batch_size}; rows/call from /metrics (encode for reconstruct); srv/cli cpu = "
        "CPU cores busy in the server / load generator during the window; srv ms/req = server CPU "
        "per request.",
        "",
    ]
    lines += _thread_table(order)
    lines.append("Targets")
    for t in report.targets():
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[t.passed]
        lines.append(f"  {verdict}  {t.name}: {t.detail}")
    return "\n".join(lines)


def _thread_table(cells: list[CellResult]) -> list[str]:
    """Server CPU ms per request by thread group, for the cells that have it."""
    cells = [c for c in cells if c.server_cpu_ms_per_request_by_thread]
    if not cells:
        return []
    short = {
        "event loop": "loop",
        "model thread": "model",
        "anyio workers": "anyio",
        "native threads": "native",
    }
    groups: list[str] = []
    for c in cells:
        groups += [g for g in c.server_cpu_ms_per_request_by_thread if g not in groups]
    names = [next((v for k, v in short.items() if g.startswith(k)), g[:10]) for g in groups]
    head = f"{'workload':<22}{'conc':>5} {'server':<17}" + "".join(f"{n:>9}" for n in names)
    lines = [
        "Server CPU ms per request, by thread (from /proc, named by py-spy dump):",
        head,
        "-" * len(head),
    ]
    for c in cells:
        by = c.server_cpu_ms_per_request_by_thread
        lines.append(
            f"{c.label:<22}{c.concurrency:>5} {SERVER_LABELS[c.server]:<17}"
            + "".join(f"{_f(by.get(g)):>9}" for g in groups)
        )
    legend = "; ".join(f"{n} = {g}" for n, g in zip(names, groups, strict=True))
    return [*lines, legend + ".", ""]
