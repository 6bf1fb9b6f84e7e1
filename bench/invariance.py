"""``python -m bench.invariance``: does a face depend on its batch, and what does each way cost?

The service promises that a seed's pixels never depend on what it was batched with
(service/runner.py). This measures that promise on the store's model and this machine, for
every batch size 1..``--max-batch`` (one batch of each size, ~2,000 rows at 64), against each
row decoded alone on the model thread (all torch threads):

* ``service``: as the service runs a model call: 1-row passes (``FACEGEN_CHUNK_ROWS``) dealt
  to the row lanes of one torch thread each (``service.runner.run_passes``);
* ``one pass``: the whole batch in one forward (what a framework user writes, and the
  "fast mode" issue 17 asks about);

and prints, per way, the rows whose floats differ and the rows whose uint8 pixels differ, then
the wall time per row of a full batch each way (median of ``--rounds`` alternated rounds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bench.model import RANDOM_CONFIGS, choose_model
from facegen_core.artifact import load_artifact
from facegen_core.device import MEMORY_FORMATS, set_memory_format
from facegen_core.preprocess import model_to_uint8
from service.runner import lane_pool, run_passes
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.invariance", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-store", default="model_store")
    p.add_argument("--random-model", choices=sorted(RANDOM_CONFIGS), default=None)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--row-threads", type=int, default=0, help="lanes (default: torch's thread count)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--decoder-memory-format",
        choices=sorted(MEMORY_FORMATS),
        default=Settings().effective_decoder_memory_format("cpu"),
        help="the decoder's layout (default: the service's on CPU)",
    )
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    lanes_n = args.row_threads or threads
    choice = choose_model(args.model_store, None, None, args.random_model)
    try:
        art = load_artifact(choice.path)
        dec, prior, dim = art.decoder, art.prior, art.config.latent_dim
        set_memory_format(dec, memory_format=args.decoder_memory_format)
        lanes = lane_pool(lanes_n) if lanes_n > 1 else None
        ways: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "service (1-row passes on row lanes)": lambda z: run_passes(dec, z, 1, lanes),
            "one pass per batch": dec,
        }
        sizes = range(1, args.max_batch + 1)
        total = sum(sizes)
        z_all = prior.latents_for_seeds(0, total, dim)  # (total, D), seeds 0..total-1
        print(
            f"model {choice.describe()}, decoder {args.decoder_memory_format}, torch threads {threads}, "
            f"row lanes {lanes_n}"
        )
        with torch.inference_mode():
            alone = torch.cat([dec(z_all[i : i + 1]) for i in range(total)])  # (total, C, H, W)
            alone_u8 = model_to_uint8(alone)
            print(f"{total} rows in batches of every size 1..{args.max_batch}, each against the row alone:")
            for name, way in ways.items():
                out = torch.cat([way(z_all[s - 1 : s - 1 + b]) for b, s in _batches(sizes)])
                floats = int((out != alone).flatten(1).any(1).sum())
                pixels = int((model_to_uint8(out) != alone_u8).flatten(1).any(1).sum())
                print(f"  {name:<38} rows with other floats {floats:>5}   with other pixels {pixels:>5}")
            z = z_all[: args.max_batch]
            times: dict[str, list[float]] = {"1-row passes on the model thread": []}
            times.update({k: [] for k in ways})
            for _ in range(args.rounds):
                times["1-row passes on the model thread"].append(_per_row(lambda x: run_passes(dec, x, 1), z))
                for name, way in ways.items():
                    times[name].append(_per_row(way, z))
        print(f"wall ms per row, batch of {args.max_batch} (median of {args.rounds} alternated rounds):")
        for name, ts in times.items():
            print(f"  {name:<38} {statistics.median(ts):7.2f} ms/row")
        if lanes is not None:
            lanes.shutdown()
    finally:
        choice.cleanup()


def _batches(sizes: range) -> list[tuple[int, int]]:
    """(size, first seed + 1) of one batch per size, consecutive over the seeds."""
    out, start = [], 1
    for b in sizes:
        out.append((b, start))
        start += b
    return out


def _per_row(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> float:
    fn(z)  # warm
    t = time.perf_counter()
    fn(z)
    return (time.perf_counter() - t) / z.shape[0] * 1e3


if __name__ == "__main__":
    main()
