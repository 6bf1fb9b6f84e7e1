"""``python -m bench.refine``: what ``refine=N`` costs a client, and what it costs everyone else.

Starts ``python -m service`` (the bundled store, or ``--store``) and measures, over real HTTP:

1. one photo through ``POST /reconstruct`` with ``refine`` = each of ``--steps`` (0 first),
   ``--repeats`` times one after another: the median latency, its ratio to refine=0, and the
   added milliseconds per step;
2. while one client keeps a long refinement running (``refine=--busy-steps`` of ``--busy-faces``
   faces in one request), another asks for
   single faces (``POST /generate``): their latency beside the same requests on the idle server.
   Refinement runs in slices of ``FACEGEN_REFINE_SLICE_MS`` with other batches in between
   (docs/refine.md), so a face should wait about one slice, not the whole refinement.

The photo is the served model's own face for seed 0, scaled to 178×218 (bench.workloads), sent
with ``align=false``: refinement's cost does not depend on the photo. Figures are printed,
never asserted.

    python -m bench.refine [--threads 2] [--steps 0 25 50 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.server import ServerProcess
from bench.workloads import upload_image


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def photo_of_seed(c: httpx.Client, seed: int = 0) -> bytes:
    r = c.post("/generate", json={"seed": seed})
    r.raise_for_status()
    with Image.open(io.BytesIO(r.content)) as img:
        return upload_image(np.asarray(img.convert("RGB")))


def reconstruct_s(c: httpx.Client, photo: bytes, steps: int, faces: int = 1) -> float:
    t0 = time.perf_counter()
    r = c.post(
        "/reconstruct",
        files=[("image", (f"face{i}.jpg", photo, "image/jpeg")) for i in range(faces)],
        data={"refine": str(steps), "align": "false"},
    )
    r.raise_for_status()
    return time.perf_counter() - t0


def generate_latencies(c: httpx.Client, n: int) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        c.post("/generate", json={"seed": 100 + i}).raise_for_status()
        out.append(time.perf_counter() - t0)
    return out


def measure(
    url: str, steps: list[int], repeats: int, busy_steps: int, faces: int, busy_faces: int = 1
) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=600) as c:
        photo = photo_of_seed(c)
        reconstruct_s(c, photo, max(steps))  # first-call costs out of the way
        per_steps = {k: [reconstruct_s(c, photo, k) for _ in range(repeats)] for k in steps}
        idle = generate_latencies(c, faces)
        stop, busy_runs = threading.Event(), []

        def keep_busy() -> None:
            with httpx.Client(base_url=url, timeout=600) as b:
                while not stop.is_set():
                    busy_runs.append(reconstruct_s(b, photo, busy_steps, busy_faces))

        worker = threading.Thread(target=keep_busy, daemon=True)
        worker.start()
        time.sleep(0.5)  # the refinement is running
        during = generate_latencies(c, faces)
        stop.set()
        worker.join()
    base = statistics.median(per_steps[steps[0]])
    rows = []
    for k, times in per_steps.items():
        med = statistics.median(times)
        rows.append(
            {
                "refine": k,
                "p50_ms": round(1000 * med, 1),
                "ratio": round(med / base, 2),
                "ms_per_step": round(1000 * (med - base) / k, 2) if k else None,
            }
        )
    return {
        "reconstruct": rows,
        "generate_idle_ms": {"p50": round(1000 * pct(idle, 0.5), 1), "p95": round(1000 * pct(idle, 0.95), 1)},
        "generate_during_refine_ms": {
            "p50": round(1000 * pct(during, 0.5), 1),
            "p95": round(1000 * pct(during, 0.95), 1),
        },
        "busy_refine_steps": busy_steps,
        "busy_refine_faces": busy_faces,
        "busy_refine_s": round(statistics.median(busy_runs), 2) if busy_runs else None,
        "repeats": repeats,
        "faces": faces,
    }


def report(m: dict[str, Any], env: dict[str, str]) -> str:
    lines = [
        f"POST /reconstruct, one 178×218 JPEG, align=false (median of {m['repeats']}); "
        f"{env.get('FACEGEN_DEVICE')} {env.get('FACEGEN_PRECISION')}, "
        f"threads {env.get('FACEGEN_TORCH_THREADS')}, slice {env.get('FACEGEN_REFINE_SLICE_MS')} ms",
        f"{'refine':>7} {'p50 ms':>9} {'× refine=0':>11} {'ms/step':>8}",
    ]
    for r in m["reconstruct"]:
        per = "" if r["ms_per_step"] is None else f"{r['ms_per_step']:.1f}"
        lines.append(f"{r['refine']:>7} {r['p50_ms']:>9.1f} {r['ratio']:>11.2f} {per:>8}")
    idle, during = m["generate_idle_ms"], m["generate_during_refine_ms"]
    lines += [
        f"POST /generate (one face, {m['faces']} requests): idle p50 {idle['p50']} ms, p95 {idle['p95']} ms; "
        f"while refine={m['busy_refine_steps']} of {m['busy_refine_faces']} face(s) runs "
        f"(each {m['busy_refine_s']} s) "
        f"p50 {during['p50']} ms, p95 {during['p95']} ms "
        f"(p50 × {during['p50'] / idle['p50']:.1f})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--steps", type=int, nargs="+", default=[0, 25, 50, 100], help="refine values to time")
    p.add_argument("--repeats", type=int, default=5, help="requests per refine value (median)")
    p.add_argument("--busy-steps", type=int, default=200, help="refine of the long request in part 2")
    p.add_argument("--busy-faces", type=int, default=1, help="faces in the long request of part 2")
    p.add_argument("--faces", type=int, default=20, help="single-face requests in each half of part 2")
    p.add_argument("--threads", type=int, default=2, help="FACEGEN_TORCH_THREADS of the server")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="FACEGEN_DEVICE of the server")
    p.add_argument(
        "--precision", default="fp32", choices=("fp32", "fp16", "bf16"), help="FACEGEN_PRECISION (CUDA)"
    )
    p.add_argument("--slice-ms", type=float, default=100.0, help="FACEGEN_REFINE_SLICE_MS of the server")
    p.add_argument("--store", default=None, help="model store (default: the bundled one)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    steps = sorted(set(args.steps) | {0})
    env = {
        "FACEGEN_DEVICE": args.device,
        "FACEGEN_PRECISION": args.precision,
        "FACEGEN_TORCH_THREADS": str(args.threads),
        "FACEGEN_REFINE_SLICE_MS": str(args.slice_ms),
        "FACEGEN_MAX_REFINE_STEPS": str(max(max(steps), args.busy_steps)),
    }
    if args.store:
        env["FACEGEN_MODEL_STORE"] = args.store
    with ServerProcess(env, "refine") as srv:
        m = measure(srv.url, steps, args.repeats, args.busy_steps, args.faces, args.busy_faces)
    print(report(m, env))
    if args.json:
        Path(args.json).write_text(json.dumps({**m, "env": env}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
