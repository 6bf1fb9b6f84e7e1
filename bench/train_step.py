"""``python -m bench.train_step``: seconds per training step by tensor layout and precision,
side by side in one run.

Builds the networks as ``python -m training`` does and times one step of the VAE-GAN
(``training.step.train_step``) and of the encoder alone (``training.encoder_step``, what
``--train-part encoder`` runs), on a random uint8 batch, for each ``--memory-format`` and each
precision the device runs natively (fp32; bf16 on CUDA and on CPUs with AMX/AVX512-BF16). The
variants take turns step by step, so a busy machine slows them alike. Prints the median seconds
per step and each variant's speed against NCHW fp32. Figures are printed, never asserted.

    python -m bench.train_step [--config default] [--batch-size 32] [--threads 1] [--steps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from facegen_core.device import cpu_has_bf16
from training.cli import parse_train_args
from training.distributed import init_distributed
from training.encoder_step import encoder_step, freeze_decoder
from training.step import Nets, StepConfig, train_step
from training.train import build_nets, model_config, step_config

Step = Callable[[Nets, torch.Tensor, int, StepConfig], dict[str, torch.Tensor]]
PARTS: dict[str, Step] = {"VAE-GAN": train_step, "encoder alone": encoder_step}


def precisions(device: torch.device) -> list[str]:
    return ["fp32", "bf16"] if device.type == "cuda" or cpu_has_bf16() else ["fp32"]


def build(
    part: str, config: str, batch: int, device: str, fmt: str, precision: str
) -> tuple[Nets, StepConfig]:
    argv = ["--config", config, "--batch-size", str(batch), "--device", device]
    args = parse_train_args([*argv, "--precision", precision, "--memory-format", fmt, "--pixel-pool", "1"])
    info = init_distributed(args.device)
    nets = build_nets(model_config(args), args, info)
    for m in (nets.encoder, nets.decoder, nets.discriminator):
        m.train()
    if part == "encoder alone":
        freeze_decoder(nets)
    return nets, step_config(args, info.device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="default", help="model preset, as python -m training's")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant, after one warm-up step")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = init_distributed(args.device).device
    g = torch.Generator().manual_seed(0)
    cfg = model_config(parse_train_args(["--config", args.config]))
    shape = (args.batch_size, cfg.channels, cfg.image_size, cfg.image_size)
    batch = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
    print(f"device {device}, {args.threads} thread(s), config {args.config}, batch {args.batch_size}")
    print(f"{'part':<14} {'layout':<14} {'precision':<9} {'s/step':>8} {'speed vs NCHW fp32':>19}")
    for part, fn in PARTS.items():
        variants = [(fmt, prec) for prec in precisions(device) for fmt in ("contiguous", "channels_last")]
        built = {v: build(part, args.config, args.batch_size, args.device, *v) for v in variants}
        times: dict[tuple[str, str], list[float]] = {v: [] for v in variants}
        for step in range(args.steps + 1):
            for v, (nets, scfg) in built.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn(nets, batch, step, scfg)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if step > 0:  # the first step of each variant warms its kernels and allocator
                    times[v].append(time.perf_counter() - t)
        base = statistics.median(times[("contiguous", "fp32")])
        for (fmt, prec), ts in times.items():
            med = statistics.median(ts)
            layout = "NCHW" if fmt == "contiguous" else "channels_last"
            print(f"{part:<14} {layout:<14} {prec:<9} {med:>8.3f} {base / med:>18.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
