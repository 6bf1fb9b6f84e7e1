"""The service's three model passes in each memory layout, side by side: ``python -m bench.layout``.

The service runs every pass as fixed-shape passes of ``chunk_rows`` rows (service/runner.py),
on the row lanes when a call holds several. This times those very passes (``run_passes``)
for decode, encode and a refinement gradient, with the networks' weights and the encoder's
input in NCHW (``contiguous``) and in NHWC (``channels_last``), interleaved round by round so
that drift in a shared machine's load hits both alike. It prints ms per row for each and
the ratio, and how far the two layouts' outputs differ (different kernels round differently).

    python -m bench.layout                       # the store's default model, the service's settings
    python -m bench.layout --rows 1 64 --rounds 5 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from facegen_core.artifact import Artifact, ModelStore, load_artifact
from facegen_core.device import MEMORY_FORMATS, set_memory_format
from facegen_core.preprocess import model_to_uint8
from service.runner import encode_pass, lane_pool, refine_pass, run_passes

Pass = Callable[[torch.Tensor], torch.Tensor]


def passes(art: Artifact, memory_format: str) -> dict[str, Pass]:
    """The service's decode, encode and refine passes on a copy of ``art``'s networks laid out
    in ``memory_format`` (as ``service.runner.ModelRunner.prepare`` lays them out)."""
    enc, dec = copy.deepcopy(art.encoder), copy.deepcopy(art.decoder)
    set_memory_format(enc, dec, memory_format=memory_format)
    fmt, cfg = MEMORY_FORMATS[memory_format], art.config

    def encode(x: torch.Tensor) -> torch.Tensor:  # rows come NCHW from run_passes
        return encode_pass(enc, x.contiguous(memory_format=fmt))

    return {
        "decode": dec,
        "encode": encode,
        "refine": partial(refine_pass, dec, cfg.latent_dim, cfg.channels, cfg.image_size),
    }


def inputs(art: Artifact, rows: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Each pass's input rows: latents from the prior; faces decoded from them; [z, x, mask]."""
    cfg = art.config
    z = art.prior.latents_for_seeds(seed, rows, cfg.latent_dim, 1.0)  # (rows, D)
    with torch.inference_mode():
        x = art.decoder(z).float()  # (rows, C, H, W) in [-1, 1]
    mask = torch.ones(rows, cfg.image_size**2)
    z_start = z + 0.3 * torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    return {
        "decode": z,
        "encode": x.contiguous(),
        "refine": torch.cat([z_start, x.flatten(1), mask], dim=1),  # (rows, D + CHW + HW)
    }


def measure(
    art: Artifact, rows: list[int], rounds: int, chunk_rows: int, row_threads: int, min_s: float
) -> dict[str, Any]:
    """ms per row for each (pass, rows, layout), the minimum over ``rounds`` interleaved rounds."""
    lanes = lane_pool(row_threads) if row_threads > 1 else None
    fns = {fmt: passes(art, fmt) for fmt in MEMORY_FORMATS}
    ins = {n: inputs(art, n) for n in rows}
    best: dict[tuple[str, int, str], float] = {}
    outputs: dict[tuple[str, int, str], torch.Tensor] = {}
    try:
        with torch.inference_mode():
            for _ in range(rounds):
                for name in ("decode", "encode", "refine"):
                    for n in rows:
                        for fmt in MEMORY_FORMATS:
                            fn, x = fns[fmt][name], ins[n][name]
                            out = run_passes(fn, x, chunk_rows, lanes)  # warm: first use of a shape
                            reps, t = 0, time.perf_counter()
                            while reps < 1 or time.perf_counter() - t < min_s:
                                out = run_passes(fn, x, chunk_rows, lanes)
                                reps += 1
                            ms = (time.perf_counter() - t) / reps / n * 1e3
                            key = (name, n, fmt)
                            best[key] = min(best.get(key, float("inf")), ms)
                            outputs[key] = out
    finally:
        if lanes is not None:
            lanes.shutdown()
    table = []
    for name in ("decode", "encode", "refine"):
        for n in rows:
            a, b = outputs[(name, n, "contiguous")], outputs[(name, n, "channels_last")]
            row = {
                "pass": name,
                "rows": n,
                "contiguous_ms_per_row": best[(name, n, "contiguous")],
                "channels_last_ms_per_row": best[(name, n, "channels_last")],
                "max_abs_diff": float((a.float() - b.float()).abs().max()),
            }
            if name == "decode":  # the pixels a client sees
                row["pixels_differing"] = int((model_to_uint8(a) != model_to_uint8(b)).sum())
            table.append(row)
    return {"table": table}


def report(result: dict[str, Any], header: str) -> str:
    lines = [
        header,
        f"{'pass':8} {'rows':>5} {'NCHW ms/row':>12} {'NHWC ms/row':>12} {'NCHW/NHWC':>10} "
        f"{'max |diff|':>11} {'pixels diff':>12}",
    ]
    for r in result["table"]:
        ratio = r["contiguous_ms_per_row"] / r["channels_last_ms_per_row"]
        pixels = str(r.get("pixels_differing", "-"))
        lines.append(
            f"{r['pass']:8} {r['rows']:>5} {r['contiguous_ms_per_row']:>12.2f} "
            f"{r['channels_last_ms_per_row']:>12.2f} {ratio:>9.2f}x {r['max_abs_diff']:>11.2g} {pixels:>12}"
        )
    lines.append(
        "NCHW/NHWC > 1: channels_last is faster. refine: one gradient pass (forward and backward "
        "of the decoder) per row. pixels diff: uint8 values that differ between the layouts."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.layout", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-store", default="model_store")
    p.add_argument("--model", default=None, help="model name (default: the store's default)")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--rows", type=int, nargs="+", default=[1, 64], help="rows per call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=0.5, help="timing window per cell and round")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the service's default: all)")
    p.add_argument("--chunk-rows", type=int, default=1, help="rows per pass (the service's CPU default)")
    p.add_argument("--row-threads", type=int, default=0, help="row lanes (0: as many as --threads)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    store = ModelStore(a.model_store)
    name = a.model or store.default_name()
    art = load_artifact(store.resolve(name, a.version))
    lanes = a.row_threads or a.threads
    result = measure(art, a.rows, a.rounds, a.chunk_rows, lanes, a.min_seconds)
    result.update(
        model=f"{art.name} v{art.version}",
        threads=a.threads,
        chunk_rows=a.chunk_rows,
        row_threads=lanes,
        torch=torch.__version__,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
    )
    header = (
        f"facegen bench.layout: {result['model']}, CPU {result['cpu_capability']}, torch {result['torch']}, "
        f"{a.threads} threads, passes of {a.chunk_rows} row(s) on {lanes} lane(s), best of {a.rounds} rounds"
    )
    print(report(result, header))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
