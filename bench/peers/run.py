"""``python -m bench --peers``: facegen, TorchServe and PyTriton on the same artifact, same machine.

Every server is started once and stays up. Before timing, seeds 0-15 (n=1 each, sent at once
so the peers batch them) are fetched from every system and the PNGs decoded: in peer mode
``per-row`` the pixels must equal facegen's, or the run stops; in ``batched`` mode the max
absolute difference is reported. Then rounds: facegen, TorchServe, PyTriton, facegen, ... so
that drift on a shared machine hits all alike; each cell is ``bench.loadgen.run_cell`` with
the system's own request; medians over rounds. See docs/bench.md, section "Peers".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.ceiling import RawBench, lay_out_as_served, measure_ceiling, png_encoder
from bench.cli import chunk_rows, row_threads, server_env
from bench.loadgen import Timing, run_async, run_cell
from bench.model import RANDOM_CONFIGS, ModelChoice, choose_model
from bench.peers import procs, protocol
from bench.peers.counters import facegen_counters, torchserve_counters, triton_counters
from bench.peers.handler import MODES
from bench.peers.identity import check_identity
from bench.peers.protocol import FACEGEN, FACEGEN_OFF, LABELS, PEERS, PYTRITON, TORCHSERVE, TORCHSERVE_WORKERS
from bench.peers.report import PeerCell, medians, ratios, render
from bench.peers.server import PeerOptions, System
from bench.server import ServerProcess
from bench.stats import summarize
from bench.workloads import MODES as TIMINGS
from facegen_core.artifact import load_artifact

SETTLE_CAP_S = 60.0
DISTS = {TORCHSERVE: "torchserve", PYTRITON: "nvidia-pytriton"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench --peers", description=__doc__)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="3-second windows (python -m bench --short's)")
    size.add_argument("--smoke", action="store_true", help="seconds-long end-to-end check (tests)")
    p.add_argument("--peers", action="store_true", help=argparse.SUPPRESS)  # python -m bench's switch
    p.add_argument(
        "--peer-systems",
        default=",".join(PEERS),
        help=f"comma-separated peers to run (default {','.join(PEERS)})",
    )
    p.add_argument(
        "--peer-mode",
        choices=MODES,
        default="per-row",
        help="per-row: the peers do facegen's work (1-row passes); batched: one pass per batch",
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians over them (default 3)")
    p.add_argument("--concurrency", default="1,64", help="comma-separated concurrencies (default 1,64)")
    p.add_argument("--duration", type=float, default=None, help="seconds per measurement window")
    p.add_argument(
        "--model-store", type=Path, default=Path("model_store"), help="model store (default: model_store)"
    )
    p.add_argument(
        "--model",
        "--model-name",
        dest="model_name",
        default=None,
        help="a model other than the store's default",
    )
    p.add_argument("--model-version", type=int, default=None, help="a version other than the newest")
    p.add_argument(
        "--random-model", choices=sorted(RANDOM_CONFIGS), default=None, help="random weights of this config"
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads of every server (default: torch's, %(default)s here)",
    )
    p.add_argument(
        "--png-compress-level", type=int, default=1, help="zlib level of every PNG (default 1, facegen's)"
    )
    p.add_argument(
        "--max-batch-size", type=int, default=64, help="max rows per model call, all systems (default 64)"
    )
    p.add_argument(
        "--max-delay-ms", type=float, default=5.0, help="the peers' max batch delay (default 5 ms)"
    )
    p.add_argument(
        "--facegen-off",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also serve facegen with batching off (FACEGEN_MAX_BATCH_SIZE=1), (b) of python -m bench",
    )
    p.add_argument(
        "--torchserve-workers",
        type=int,
        default=0,
        help="also serve TorchServe with this many workers, the torch threads split among them "
        "(its default is one worker per core); 0: not",
    )
    p.add_argument(
        "--ceiling-s", type=float, default=None, help="seconds of the raw-model ceiling (a) (default: mode's)"
    )
    p.add_argument("--client-procs", type=int, default=1, help="load-generator processes (default 1)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    args.systems = [FACEGEN, *[s for s in args.peer_systems.split(",") if s]]
    for s in args.systems[1:]:
        if s not in PEERS:
            p.error(f"--peer-systems: unknown peer {s!r}; use {', '.join(PEERS)}.")
    if args.facegen_off:
        args.systems.insert(1, FACEGEN_OFF)
    if args.torchserve_workers > 1 and TORCHSERVE in args.systems:
        args.systems.insert(args.systems.index(TORCHSERVE) + 1, TORCHSERVE_WORKERS)
    return args


# ---------------------------------------------------------------------- cells


async def settle(system: System) -> None:
    """Wait until the model-call counter stops moving: cancelled requests have drained."""
    begin, last, still = time.monotonic(), None, 0
    while time.monotonic() - begin < SETTLE_CAP_S:
        now = await system.counters()
        if now is None:
            await asyncio.sleep(0.5)
            return
        still = still + 1 if now == last else 0
        if still >= 2:
            return
        last = now
        await asyncio.sleep(0.25)


async def measure(system: System, conc: int, rnd: int, timing: Timing, procs_n: int) -> PeerCell:
    edges: dict[str, Any] = {}

    async def on_open(pids: list[int]) -> None:
        edges["n0"] = await system.counters()
        edges["cpu0"] = procs.tree_cpu_seconds(system.pid)

    async def on_close(pids: list[int]) -> None:
        edges["cpu1"] = procs.tree_cpu_seconds(system.pid)
        edges["rss"] = procs.tree_rss_mib(system.pid)
        edges["n1"] = await system.counters()

    run = await run_cell(system.url, protocol.spec(system.name), conc, timing, procs_n, on_open, on_close)
    s = summarize(run.samples, run.t0, run.t1)
    n0, n1 = edges["n0"], edges["n1"]
    calls = n1[0] - n0[0] if n0 is not None and n1 is not None else 0.0
    cell = PeerCell(
        system=system.name,
        round=rnd,
        concurrency=conc,
        requests=s.requests,
        errors=s.errors,
        requests_per_s=s.requests_per_s,
        p50_ms=s.p50_ms,
        p99_ms=s.p99_ms,
        rows_per_call=(n1[1] - n0[1]) / calls if calls > 0 else None,
        server_cpu_ms_per_request=(edges["cpu1"] - edges["cpu0"]) * 1e3 / s.requests if s.requests else None,
        rss_mib=edges["rss"],
    )
    print(
        f"  round {rnd} {LABELS[system.name]:<22} c={conc:<3} {s.requests_per_s:7.1f} req/s "
        f"p50 {s.p50_ms or 0:6.1f} ms p99 {s.p99_ms or 0:6.1f} ms errors {s.errors} "
        f"rows/call {cell.rows_per_call and round(cell.rows_per_call, 1)} "
        f"cpu {cell.server_cpu_ms_per_request and round(cell.server_cpu_ms_per_request, 2)} ms/req",
        file=sys.stderr,
        flush=True,
    )
    await settle(system)
    return cell


async def rounds(systems: list[System], args: argparse.Namespace, timing: Timing) -> list[PeerCell]:
    concs = [int(c) for c in args.concurrency.split(",")]
    cells = []
    for rnd in range(1, args.rounds + 1):
        for system in systems:
            for conc in concs:
                cells.append(await measure(system, conc, rnd, timing, args.client_procs))
    return cells


# ---------------------------------------------------------------------- servers


def start_all(
    args: argparse.Namespace, model: ModelChoice, stack: contextlib.ExitStack, client: httpx.AsyncClient
) -> list[System]:
    """facegen (bench.server, its defaults as python -m bench starts it), then each peer."""
    env = dict(os.environ)
    ns = argparse.Namespace(
        device="cpu",
        precision="fp32",
        png_compress_level=args.png_compress_level,
        torch_threads=args.torch_threads,
        max_delay_ms=None,
        max_queue_rows=None,
        server_env=[],
        max_batch_size=args.max_batch_size,
        chunk_rows=0,
    )
    fenv = server_env(ns, model.store, model.name, model.version, args.max_batch_size, chunk_rows(ns, "cpu"))
    print("starting facegen (python -m service) ...", file=sys.stderr, flush=True)
    srv = stack.enter_context(ServerProcess(fenv, label="peers-facegen"))
    systems = [System(FACEGEN, srv.url, srv.pid, facegen_counters(client, srv.url))]
    if FACEGEN_OFF in args.systems:
        print("starting facegen with batching off ...", file=sys.stderr, flush=True)
        off = stack.enter_context(
            ServerProcess({**fenv, "FACEGEN_MAX_BATCH_SIZE": "1"}, label="peers-facegen-off")
        )
        systems.append(System(FACEGEN_OFF, off.url, off.pid, facegen_counters(client, off.url)))
    opts = PeerOptions(
        model.path,
        args.peer_mode,
        args.png_compress_level,
        args.torch_threads,
        args.max_batch_size,
        args.max_delay_ms,
    )
    for peer in args.systems[1:]:
        if peer == FACEGEN_OFF:
            continue
        print(f"starting {label(peer, args)} ...", file=sys.stderr, flush=True)
        if peer in (TORCHSERVE, TORCHSERVE_WORKERS):
            from bench.peers import torchserve

            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="facegen-bench-ts-")))
            ts_opts = opts
            if peer == TORCHSERVE_WORKERS:
                n = args.torchserve_workers
                ts_opts = dataclasses.replace(opts, workers=n, torch_threads=max(1, args.torch_threads // n))
            proc, _, stats = torchserve.server(ts_opts, workdir, env)
            stack.enter_context(proc)
            systems.append(System(peer, proc.url, proc.pid, torchserve_counters(stats)))
        else:
            from bench.peers import pytriton

            proc, metrics_url = pytriton.server(opts, env)
            stack.enter_context(proc)
            systems.append(System(peer, proc.url, proc.pid, triton_counters(client, metrics_url)))
    return systems


def ceiling(args: argparse.Namespace, model: ModelChoice, seconds: float) -> dict[str, Any]:
    """(a) of python -m bench in this run: the raw decoder + the service's PNG encoding, batch 1,
    64 rows in one pass, and 64 rows as the service computes them (1-row passes on its row
    lanes); alternated rounds. Measured before the servers start, with the servers' threads."""
    torch.set_num_threads(args.torch_threads)
    art = load_artifact(model.path)
    lay_out_as_served(art.decoder, "cpu")
    encode, _ = png_encoder(model.name, model.version, args.png_compress_level)
    lanes = row_threads(0, "cpu")  # facegen's server runs the service's rule
    raw = RawBench(art.decoder, art.config.latent_dim, torch.device("cpu"), "fp32", encode, lanes)
    try:
        res = measure_ceiling(raw, args.max_batch_size, 1, seconds, rounds=3)
    finally:
        raw.close()
    return {"row_threads": lanes, **{k: v.to_dict() for k, v in res.items()}}


def label(system: str, args: argparse.Namespace) -> str:
    if system == TORCHSERVE_WORKERS:
        n = args.torchserve_workers
        return f"TorchServe, {n} workers x {max(1, args.torch_threads // n)} thread(s)"
    return LABELS[system]


def preflight(systems: list[str]) -> None:
    """Stop before starting anything when a peer cannot run here, saying what to install."""
    import importlib.util
    import shutil

    missing = []
    if TORCHSERVE in systems:
        if importlib.util.find_spec("ts") is None or importlib.util.find_spec("model_archiver") is None:
            missing.append("TorchServe (pip install -e '.[peers]')")
        if shutil.which("java") is None:
            missing.append("Java 17 for TorchServe (FACEGEN_PEERS=1 scripts/system-deps.sh)")
    if PYTRITON in systems and importlib.util.find_spec("pytriton") is None:
        missing.append("PyTriton (pip install -e '.[peers]')")
    if missing:
        raise SystemExit(
            "python -m bench --peers cannot run here: missing "
            + "; ".join(missing)
            + ". See docs/bench.md, Peers; --peer-systems chooses which peers to run."
        )


def versions(systems: list[str]) -> dict[str, str]:
    out = {"torch": torch.__version__, "python": platform.python_version()}
    for s in systems:
        if s in DISTS:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                out[DISTS[s]] = importlib.metadata.version(DISTS[s])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    # OpenMP's spin-wait steals the other servers' and the client's CPU (docs/bench.md,
    # findings): PASSIVE for all three servers alike, unless the caller chose otherwise.
    preflight(args.systems)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    mode = TIMINGS["smoke" if args.smoke else "short" if args.short else "full"]
    timing = (
        mode.timing if args.duration is None else dataclasses.replace(mode.timing, duration_s=args.duration)
    )
    model = choose_model(args.model_store, args.model_name, args.model_version, args.random_model)
    meta: dict[str, Any] = {
        "mode": mode.name,
        "peer_mode": args.peer_mode,
        "rounds": args.rounds,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "torch_threads": args.torch_threads,
        "openmp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP_", "KMP_", "GOMP_"))},
        "model": model.describe(),
        "png_compress_level": args.png_compress_level,
        "max_batch_size": args.max_batch_size,
        "peer_max_delay_ms": args.max_delay_ms,
        "timing": dataclasses.asdict(timing),
        "versions": versions(args.systems),
        "labels": {system: label(system, args) for system in LABELS},
    }
    try:
        print("(a) ceiling: raw decoder + PNG, no HTTP ...", file=sys.stderr, flush=True)
        meta["ceiling"] = ceiling(args, model, mode.ceiling_s if args.ceiling_s is None else args.ceiling_s)
        with contextlib.ExitStack() as stack:

            async def go() -> tuple[dict[str, Any], list[PeerCell]]:
                async with httpx.AsyncClient() as client:
                    systems = await asyncio.to_thread(start_all, args, model, stack, client)
                    print("pixel identity: seeds 0-15 from every system ...", file=sys.stderr, flush=True)
                    identity = await check_identity(systems, args.peer_mode)
                    print(f"  {json.dumps(identity)}", file=sys.stderr, flush=True)
                    return identity, await rounds(systems, args, timing)

            identity, cells = run_async(go())
    finally:
        model.cleanup()
    med = medians(cells)
    return {
        "meta": meta,
        "identity": identity,
        "cells": [c.to_dict() for c in cells],
        "medians": {s: {str(k): v for k, v in by.items()} for s, by in med.items()},
        "ratios_facegen_over_peer": {s: {str(k): v for k, v in by.items()} for s, by in ratios(med).items()},
        "table": render(meta, med),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    result["meta"]["command"] = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    print(result["table"])
    print("\nPixel identity (seeds 0-15 vs facegen): " + json.dumps(result["identity"]))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0
