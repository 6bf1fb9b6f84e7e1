"""PyTriton around ``FaceHandler``: ``python -m bench.peers.pytriton --artifact DIR --http-port P ...``.

One model ``faces``, input ``seed`` (INT64, per row shape [1]), output ``png`` (BYTES, per
row shape [1]); Triton's dynamic batcher with max batch 64 and a 5 ms max queue delay
(PyTriton's ``ModelConfig(max_batch_size=..., batcher=DynamicBatcher(
max_queue_delay_microseconds=...))``), one model instance, as facegen has one model thread.
``@batch`` hands the inference function the batch's stacked inputs. Runs in the foreground
until SIGTERM/SIGINT (``Triton.serve``); Prometheus metrics on ``--metrics-port``.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.peers.handler import MODES, FaceHandler
from bench.peers.protocol import MODEL, PNG_OUTPUT, PYTRITON, SEED_INPUT
from bench.peers.server import PeerOptions, PeerProcess
from bench.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def infer_function(handler: FaceHandler) -> Callable[..., dict[str, np.ndarray]]:
    """The model's function on one stacked batch: seed (B, 1) int64 -> png (B, 1) bytes."""

    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        seeds = inputs[SEED_INPUT][:, 0]  # (B, 1) -> (B,)
        pngs = handler.handle([int(s) for s in seeds])
        # dtype object keeps every byte (a fixed-width bytes_ array drops trailing NULs).
        return {PNG_OUTPUT: np.array(pngs, dtype=object).reshape(-1, 1)}

    return infer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers.pytriton", description=__doc__)
    p.add_argument("--artifact", required=True, help="artifact directory (model_store/NAME/VERSION)")
    p.add_argument("--mode", choices=MODES, default="per-row", help="the handler's mode")
    p.add_argument("--png-level", type=int, default=1, help="zlib level of the PNGs (facegen's: 1)")
    p.add_argument("--torch-threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--max-batch-size", type=int, default=64, help="the dynamic batcher's max batch")
    p.add_argument("--max-delay-ms", type=float, default=5.0, help="max queue delay, ms")
    p.add_argument("--http-port", type=int, required=True, help="KServe v2 HTTP port (127.0.0.1)")
    p.add_argument("--grpc-port", type=int, required=True, help="gRPC port (unused, must be free)")
    p.add_argument("--metrics-port", type=int, required=True, help="Prometheus /metrics port")
    args = p.parse_args(argv)

    # Imported here: the default install has no pytriton, and --help must work without it.
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    handler = FaceHandler(args.artifact, args.mode, args.png_level, args.torch_threads or None)
    infer = batch(infer_function(handler))

    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=infer,
            inputs=[Tensor(name=SEED_INPUT, dtype=np.int64, shape=(1,))],
            outputs=[Tensor(name=PNG_OUTPUT, dtype=bytes, shape=(1,))],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=int(args.max_delay_ms * 1000)),
            ),
            strict=False,
        )
        triton.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def library_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this interpreter's libpython first on LD_LIBRARY_PATH.

    Triton's Python-backend stub (bundled per Python minor version) links
    ``libpython3.X.so.1.0``. Left to the loader, it can find the system's library of another
    patch release while importing this interpreter's standard library, and fail in the model's
    initialisation (seen with pyenv's 3.11.7 over Debian's 3.11.2: "'_thread.RLock' object has
    no attribute '_recursion_count'").
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir:
        return dict(env)
    old = env.get("LD_LIBRARY_PATH")
    return {**env, "LD_LIBRARY_PATH": f"{libdir}{os.pathsep}{old}" if old else str(libdir)}


def server(opts: PeerOptions, env: dict[str, str]) -> tuple[PeerProcess, str]:
    """(the unstarted ``python -m bench.peers.pytriton`` server, its metrics URL)."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    cmd = [
        sys.executable, "-m", "bench.peers.pytriton",
        "--artifact", str(opts.artifact.resolve()),
        "--mode", opts.mode,
        "--png-level", str(opts.png_level),
        "--torch-threads", str(opts.torch_threads),
        "--max-batch-size", str(opts.max_batch_size),
        "--max-delay-ms", str(opts.max_delay_ms),
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
    ]  # fmt: skip
    proc = PeerProcess(PYTRITON, cmd, library_env(env), f"http://127.0.0.1:{http}", cwd=ROOT)
    return proc, f"http://127.0.0.1:{metrics}"
