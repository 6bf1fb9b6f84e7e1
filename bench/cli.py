"""``python -m bench``: the raw model's ceiling (a), the service with batching off (b) and on (c).

``python -m bench --peers``: facegen against TorchServe and PyTriton instead (bench/peers/run.py).

See docs/bench.md for the method, the columns and the target checks.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import gc
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import torch

from bench.ceiling import RawBench, lay_out_as_served, measure_ceiling, png_encoder
from bench.loadgen import Timing, event_loop_name, run_async, run_cell
from bench.model import RANDOM_CONFIGS, choose_model
from bench.profile import PySpy, summarize
from bench.report import CellResult, Report, render
from bench.scrape import mean_rows_per_call, scrape
from bench.server import ServerProcess, cpu_seconds
from bench.stats import summarize as summarize_cell
from bench.threads import cpu_by_group, thread_cpu, thread_names
from bench.workloads import MODES, Workload, build_workloads, upload_image
from facegen_core.artifact import load_artifact
from facegen_core.device import resolve_device
from facegen_core.latent import noise_for_seed
from facegen_core.preprocess import model_to_uint8

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SETTLE_CAP_S = 120.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="a quick run, under two minutes on 2 cores")
    size.add_argument("--smoke", action="store_true", help="seconds-long end-to-end check (tests)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument(
        "--url",
        default=None,
        help="benchmark this running service as (c) instead of starting one (loopback only)",
    )
    p.add_argument(
        "--url-off", default=None, help="with --url: a running service with max_batch_size=1 to use as (b)"
    )
    p.add_argument(
        "--model-store",
        type=Path,
        default=Path("model_store"),
        help="model store; its default model is benchmarked (default: model_store)",
    )
    p.add_argument("--model-name", default=None, help="a model of the store other than its default")
    p.add_argument("--model-version", type=int, default=None, help="a version other than the newest")
    p.add_argument(
        "--random-model",
        choices=sorted(RANDOM_CONFIGS),
        default=None,
        help="benchmark random weights of this config instead of the store's model",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (passed to the server)")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "bf16", "fp16"),
        help="autocast precision on CUDA (passed to the server)",
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=64,
        help="(c)'s max rows per model call, and the ceiling's batch size (default 64)",
    )
    p.add_argument(
        "--max-delay-ms", type=float, default=None, help="FACEGEN_MAX_DELAY_MS (default: the service's)"
    )
    p.add_argument(
        "--max-queue-rows", type=int, default=None, help="FACEGEN_MAX_QUEUE_ROWS (default: the service's)"
    )
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=0,
        help="FACEGEN_CHUNK_ROWS, rows per forward pass (default 0: the service's rule, 1 on CPU, "
        "max batch on CUDA); the ceiling also runs the max batch in passes of this many rows",
    )
    p.add_argument(
        "--row-threads",
        type=int,
        default=0,
        help="FACEGEN_ROW_THREADS, lane threads for a call of several passes (default 0: the "
        "service's rule, torch's thread count on CPU); the ceiling uses as many",
    )
    p.add_argument(
        "--png-compress-level",
        type=int,
        default=1,
        help="zlib level for the server's PNGs and the ceiling's (default 1, the service's)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads of the server and the ceiling (default: torch's, %(default)s here)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the started servers (repeatable)",
    )
    p.add_argument(
        "--client-procs",
        type=int,
        default=1,
        help="load-generator processes (default 1: on a small machine the client steals the server's CPU)",
    )
    p.add_argument(
        "--workloads", default=None, help="comma-separated subset of gen1,gen16,gen64,recon,interp16"
    )
    p.add_argument("--concurrency", default=None, help="comma-separated concurrencies for every workload")
    p.add_argument("--servers", default="off,on", help="which of off,on to run (default both)")
    p.add_argument("--duration", type=float, default=None, help="seconds per measurement window")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record the (c) server with py-spy during --profile-cell into this directory",
    )
    p.add_argument(
        "--profile-cell", default="gen1:64", help="WORKLOAD:CONCURRENCY to profile (default gen1:64)"
    )
    p.add_argument("--profile-gil", action="store_true", help="sample only the thread holding the GIL")
    p.add_argument(
        "--peers",
        action="store_true",
        help="instead: facegen against TorchServe and PyTriton on the same model (the `peers` extra; "
        "its own options: python -m bench --peers --help; docs/bench.md, Peers)",
    )
    args = p.parse_args(argv)
    for u in (args.url, args.url_off):
        if u is not None and urlsplit(u).hostname not in LOOPBACK:
            p.error(f"--url {u} is not on this machine: the bench only loads 127.0.0.1 (or localhost).")
    if args.url_off and not args.url:
        p.error("--url-off needs --url (the batching-on service).")
    return args


def chunk_rows(args: argparse.Namespace, device_type: str) -> int:
    """Rows per forward pass in the service: --chunk-rows, else the service's own default rule
    (read from ``service.settings`` so the two cannot drift: 1 on CPU, max_batch_size on
    CUDA). Passed to the server explicitly, so the ceiling's chunked figure is the same
    computation."""
    from service.settings import Settings

    rule = Settings(max_batch_size=args.max_batch_size, chunk_rows=args.chunk_rows or 0)
    return rule.effective_chunk_rows(device_type)


def row_threads(requested: int, device_type: str) -> int:
    """The row lanes the servers run: ``requested`` (--row-threads, passed to them as
    FACEGEN_ROW_THREADS), else the service's own rule with this process's torch threads, which
    the servers get too (FACEGEN_TORCH_THREADS); so the ceiling computes a batch as they do."""
    from service.settings import Settings

    return Settings(row_threads=requested).effective_row_threads(device_type, torch.get_num_threads())


def server_env(
    args: argparse.Namespace, store: Path, name: str, version: int, max_batch: int, chunk: int
) -> dict[str, str]:
    env = {
        "FACEGEN_MODEL_STORE": str(store.resolve()),
        "FACEGEN_MODEL_NAME": name,
        "FACEGEN_MODEL_VERSION": str(version),
        "FACEGEN_DEVICE": args.device,
        "FACEGEN_PRECISION": args.precision,
        "FACEGEN_MAX_BATCH_SIZE": str(max_batch),
        "FACEGEN_PNG_COMPRESS_LEVEL": str(args.png_compress_level),
        "FACEGEN_TORCH_THREADS": str(args.torch_threads),
        "FACEGEN_CHUNK_ROWS": str(chunk),
    }
    if getattr(args, "row_threads", 0):
        env["FACEGEN_ROW_THREADS"] = str(args.row_threads)
    if args.max_delay_ms is not None:
        env["FACEGEN_MAX_DELAY_MS"] = str(args.max_delay_ms)
    if args.max_queue_rows is not None:
        env["FACEGEN_MAX_QUEUE_ROWS"] = str(args.max_queue_rows)
    for kv in args.server_env:
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"--server-env {kv!r} is not KEY=VALUE.")
        env[key] = value
    return env


async def settle(client: httpx.AsyncClient, url: str) -> None:
    """Wait until the server's model-call counters stop moving: the last cell's queue is empty.

    Requests cancelled by the drain limit may still be queued in the server; measuring the
    next cell on top of them would charge it for the previous cell's work.
    """
    begin, last, still = time.monotonic(), None, 0
    while time.monotonic() - begin < SETTLE_CAP_S:
        now = await scrape(client, url)
        if not now.available:
            await asyncio.sleep(0.5)
            return
        total = sum(now.calls.values())
        still = still + 1 if total == last else 0
        if still >= 2:
            return
        last = total
        await asyncio.sleep(0.25)


async def measure_cell(
    server: str,
    url: str,
    pid: int | None,
    w: Workload,
    conc: int,
    timing: Timing,
    args: argparse.Namespace,
    metrics: httpx.AsyncClient,
    spy: PySpy | None,
) -> CellResult:
    """One (workload, concurrency) cell; ``pid`` (a server this run started) adds CPU figures."""
    edges: dict[str, Any] = {}

    def cpu(pids: list[int]) -> tuple[float | None, float]:
        client = time.process_time() + sum(cpu_seconds(p) or 0.0 for p in pids)
        return (cpu_seconds(pid) if pid is not None else None), client

    async def on_open(pids: list[int]) -> None:
        edges["m0"] = await scrape(metrics, url)
        edges["cpu0"] = cpu(pids)
        if pid is not None:
            edges["threads0"] = thread_cpu(pid)
        if spy is not None:
            spy.start()

    async def on_close(pids: list[int]) -> None:
        edges["cpu1"] = cpu(pids)
        if pid is not None:
            edges["threads1"] = thread_cpu(pid)
        if spy is not None:
            spy.stop()
        edges["m1"] = await scrape(metrics, url)

    run = await run_cell(url, w.spec, conc, timing, args.client_procs, on_open, on_close)
    if pid is not None:
        # Thread names (py-spy) after the window: threads started inside it are named too.
        edges["names"] = await asyncio.to_thread(thread_names, pid)
    stats = summarize_cell(run.samples, run.t0, run.t1)
    (s0, c0), (s1, c1) = edges["cpu0"], edges["cpu1"]
    cell = CellResult(
        server=server,
        workload=w.key,
        label=w.label,
        concurrency=conc,
        op=w.op,
        stats=stats,
        rows_per_call=mean_rows_per_call(edges["m0"], edges["m1"]),
        server_cpu_cores=(s1 - s0) / stats.window_s if s0 is not None and s1 is not None else None,
        client_cpu_cores=(c1 - c0) / stats.window_s,
    )
    if edges.get("names") and stats.requests:
        by_group = cpu_by_group(edges["threads0"], edges["threads1"], edges["names"])
        cell.server_cpu_ms_per_request_by_thread = {
            g: sec * 1e3 / stats.requests for g, sec in by_group.items()
        }
    return cell


async def measure_server(
    server: str,
    url: str,
    pid: int | None,
    workloads: list[Workload],
    timing: Timing,
    args: argparse.Namespace,
) -> list[CellResult]:
    """Every (workload, concurrency) cell against one running service, one after another."""
    cells: list[CellResult] = []
    profile_key = args.profile_cell if args.profile is not None and server == "on" else None
    async with httpx.AsyncClient() as metrics:
        for w in workloads:
            for conc in w.concurrencies:
                spy = None
                if profile_key == f"{w.key}:{conc}" and pid is not None:
                    spy = PySpy(pid, args.profile / f"py-spy-{w.key}-c{conc}.txt", gil=args.profile_gil)
                cell = await measure_cell(server, url, pid, w, conc, timing, args, metrics, spy)
                cells.append(cell)
                s, rows = cell.stats, cell.rows_per_call.get(w.op)
                print(
                    f"  {server:>3} {w.label:<22} c={conc:<4} {s.images_per_s:7.1f} img/s "
                    f"p50 {s.p50_ms or 0:7.1f} ms p99 {s.p99_ms or 0:7.1f} ms "
                    f"errors {s.errors} rows/call {rows if rows is None else round(rows, 1)}",
                    file=sys.stderr,
                    flush=True,
                )
                if spy is not None:
                    print(summarize(spy.out), file=sys.stderr, flush=True)
                await settle(metrics, url)
    return cells


def run(args: argparse.Namespace) -> Report:
    mode = MODES["smoke" if args.smoke else "short" if args.short else "full"]
    timing = (
        mode.timing if args.duration is None else dataclasses.replace(mode.timing, duration_s=args.duration)
    )
    torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    model = choose_model(args.model_store, args.model_name, args.model_version, args.random_model)
    try:
        print(f"model: {model.describe()}", file=sys.stderr, flush=True)
        artifact = load_artifact(model.path, device)
        cfg, decoder = artifact.config, artifact.decoder
        lay_out_as_served(decoder, device.type)
        encode, png_desc = png_encoder(model.name, model.version, args.png_compress_level)
        print("(a) ceiling: raw decoder + PNG ...", file=sys.stderr, flush=True)
        chunk = chunk_rows(args, device.type)
        lanes = row_threads(args.row_threads, device.type)
        raw = RawBench(decoder, cfg.latent_dim, device, args.precision, encode, lanes)
        ceiling = measure_ceiling(raw, args.max_batch_size, chunk, mode.ceiling_s, mode.ceiling_rounds)
        raw.close()
        with torch.inference_mode():
            face = model_to_uint8(decoder(noise_for_seed(0, cfg.latent_dim)[None].to(device)))
        upload = upload_image(face[0].permute(1, 2, 0).cpu().numpy())
        del artifact, decoder
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        keys = args.workloads.split(",") if args.workloads else None
        workloads = build_workloads(mode, upload, gpu=device.type == "cuda", keys=keys)
        if args.concurrency:
            conc = tuple(int(c) for c in args.concurrency.split(","))
            workloads = [dataclasses.replace(w, concurrencies=conc) for w in workloads]
        report = Report(
            meta={
                "mode": mode.name,
                "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "host": platform.node(),
                "cpu_count": os.cpu_count(),
                "load_average_at_start": list(os.getloadavg()),
                "torch_threads": args.torch_threads,
                "row_threads": lanes,
                # OpenMP's wait policy changes CPU results several-fold on a busy machine
                # (docs/bench.md); the servers inherit this process's environment.
                "openmp_env": {
                    k: v for k, v in os.environ.items() if k.startswith(("OMP_", "KMP_", "GOMP_"))
                },
                "device": str(device),
                "precision": args.precision,
                "model": model.describe(),
                "model_config": cfg.to_dict(),
                "png": png_desc,
                "max_batch_size": args.max_batch_size,
                "chunk_rows": chunk,
                "client_procs": args.client_procs,
                "client": f"an httpx.AsyncClient (1 keep-alive connection) per worker, {event_loop_name()}",
                "timing": dataclasses.asdict(timing),
                "workloads": {
                    w.key: {
                        "label": w.label,
                        "concurrencies": list(w.concurrencies),
                        "path": w.spec.path,
                        "body": w.spec.json_body or w.spec.form,
                    }
                    for w in workloads
                },
                "note": "Client and server share the CPU of this machine.",
                "servers": {},
            },
            ceiling=ceiling,
        )
        for server in [s for s in ("off", "on") if s in args.servers.split(",")]:
            max_batch = 1 if server == "off" else args.max_batch_size
            url = args.url if server == "on" else args.url_off
            label = "(b) batching off" if server == "off" else "(c) batching on"
            if args.url is not None:
                if url is None:
                    continue  # --url without --url-off: there is no (b) to measure
                print(f"{label}: {url}", file=sys.stderr, flush=True)
                report.meta["servers"][server] = {"url": url, "started_by_bench": False}
                report.cells += run_async(measure_server(server, url, None, workloads, timing, args))
                continue
            env = server_env(args, model.store, model.name, model.version, max_batch, chunk)
            print(
                f"{label}: starting python -m service (max_batch_size={max_batch}) ...",
                file=sys.stderr,
                flush=True,
            )
            with ServerProcess(env, label=f"batch{max_batch}") as srv:
                report.meta["servers"][server] = {
                    "started_by_bench": True,
                    "env": {k: v for k, v in env.items() if k.startswith("FACEGEN_")},
                }
                report.cells += run_async(measure_server(server, srv.url, srv.pid, workloads, timing, args))
        return report
    finally:
        model.cleanup()


def main(argv: list[str] | None = None) -> int:
    if "--peers" in (sys.argv[1:] if argv is None else argv):
        # facegen vs TorchServe and PyTriton (the optional `peers` extra): its own flags.
        from bench.peers.run import main as peers_main

        return peers_main(argv)
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers this run started are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    report = run(args)
    report.meta["command"] = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    print(render(report))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"\nwrote {args.out}")
    if args.profile is not None:
        for f in sorted(args.profile.glob("py-spy-*.txt")):
            print("\n" + summarize(f))
    return 0
