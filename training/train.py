"""The training loop: data in memory, seeded batches, logging, checkpoints, time budget.

``train(args)`` runs (or resumes) a run in ``args.run_dir`` and leaves a final checkpoint
there; ``training.export`` turns that checkpoint into a model-store artifact.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from facegen_core.config import ModelConfig
from facegen_core.networks import Decoder, Discriminator, Encoder
from training import checkpoint as ckpt
from training import distributed as ddp
from training.augment import parse_policy
from training.data import FaceDataset, load_faces, split_indices, synthetic_faces
from training.ema import EMA
from training.step import Nets, StepConfig, train_step, unwrap

CELEBA_LICENCE = (
    "CelebA: non-commercial research only (MMLAB, CUHK); weights trained on it inherit these terms"
)
SYNTHETIC_LICENCE = "synthetic images drawn by training.data.synthetic_faces: no third-party terms"
UNKNOWN_LICENCE = "unknown: the terms of the data source apply to these weights; check them before sharing"
# Written by rank 0 of a torchrun run: every rank's parameter sha256 after the last step.
RANKS_FILE = "ranks.json"
# Flags a resumed run takes from the new command line; every other flag comes from the
# checkpoint, so that the resumed run is the same run.
RESUME_OVERRIDES = (
    "max_steps",
    "max_minutes",
    "log_every",
    "checkpoint_every",
    "store",
    "name",
    "progress",
    "device",
    "run_dir",
    "resume",
    "export",
)


def model_config(args: argparse.Namespace) -> ModelConfig:
    overrides: dict[str, Any] = {}
    for key in ("latent_dim", "image_size", "channels", "kernel_size"):
        if getattr(args, key, None) is not None:  # older checkpoints lack newer flags
            overrides[key] = getattr(args, key)
    if args.crop is not None:
        overrides["input_crop"] = args.crop
    if args.config == "default":
        return ModelConfig(**overrides)
    if args.config == "small":
        return ModelConfig.small(**overrides)
    if args.config == "tiny":
        return ModelConfig.tiny(**overrides)
    raise ValueError(f"Unknown --config {args.config!r}; use default, small or tiny.")


def load_dataset(args: argparse.Namespace, cfg: ModelConfig) -> FaceDataset:
    if args.data is None:
        if not args.dry_run:
            raise SystemExit("No training data: pass --data PATH (or --dry-run for synthetic images).")
        return synthetic_faces(args.dry_run_images, cfg.image_size, cfg.channels, seed=args.seed)
    return load_faces(
        args.data,
        cfg.image_size,
        cfg.channels,
        cfg.input_crop,
        cache_dir=args.cache_dir or None,
        limit=args.limit,
    )


def is_celeba(ds: FaceDataset) -> bool:
    return "celeba" in ds.source.lower() or ds.attribute_names[:1] == ["5_o_Clock_Shadow"]


def dataset_info(ds: FaceDataset, args: argparse.Namespace, n_train: int, n_val: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": ds.source,
        "source": str(args.data) if args.data is not None else "synthetic (--dry-run)",
        "images": len(ds),
        "skipped": ds.skipped,
        "split": {"seed": args.seed, "val_fraction": args.val_fraction, "train": n_train, "val": n_val},
    }
    if is_celeba(ds):
        info["licence"] = CELEBA_LICENCE
    elif args.data is None:
        info["licence"] = SYNTHETIC_LICENCE
    else:
        info["licence"] = UNKNOWN_LICENCE
    return info


def build_nets(cfg: ModelConfig, args: argparse.Namespace, info: ddp.DistInfo) -> Nets:
    torch.manual_seed(args.seed)  # identical initial weights on every rank
    enc, dec = Encoder(cfg).to(info.device), Decoder(cfg).to(info.device)
    dis = Discriminator(cfg, spectral_norm=args.spectral_norm).to(info.device)
    if info.device.type == "cuda":
        for m in (enc, dec, dis):
            m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    betas = (args.beta1, args.beta2)
    ema = EMA(dec, args.ema_decay)
    return Nets(
        encoder=ddp.wrap(enc, info),
        decoder=ddp.wrap(dec, info),
        discriminator=dis,
        opt_enc=torch.optim.Adam(enc.parameters(), lr=args.lr_enc, betas=betas),
        opt_dec=torch.optim.Adam(dec.parameters(), lr=args.lr_dec, betas=betas),
        opt_dis=torch.optim.Adam(dis.parameters(), lr=args.lr_dis, betas=betas),
        ema=ema,
    )


def step_config(args: argparse.Namespace, device: torch.device) -> StepConfig:
    precision = args.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return StepConfig(
        kl_weight=args.kl_weight,
        gamma=args.gamma,
        pixel_weight=args.pixel_weight,
        gan_loss=args.gan_loss,
        r1_gamma=args.r1_gamma,
        r1_every=max(1, args.r1_every),
        augment=parse_policy(args.diffaugment),
        precision=precision,
    )


def batch_indices(step: int, n: int, global_batch: int, seed: int, info: ddp.DistInfo) -> torch.Tensor:
    """This rank's rows of the global batch ``step``: a pure function of the step, so a
    resumed run draws exactly the batches the uninterrupted run would have."""
    per_epoch = max(1, n // global_batch)
    epoch, i = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    if n < global_batch:  # tiny data sets: sample with repetition
        perm = perm.repeat(math.ceil(global_batch / n))
    rows = perm[i * global_batch : (i + 1) * global_batch]
    return rows[info.rank :: info.world_size]


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def capture(
    nets: Nets,
    step: int,
    images_seen: int,
    wall: float,
    args: argparse.Namespace,
    cfg: ModelConfig,
    data_info: dict[str, Any],
    precision: str,
    device: torch.device,
    world: int,
) -> dict[str, Any]:
    return {
        "step": step,
        "images_seen": images_seen,
        "wall_time_s": wall,
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "model_config": cfg.to_dict(),
        "dataset": data_info,
        "precision": precision,
        "device": _device_name(device),
        "trained_on": device.type,
        "world_size": world,
        "encoder": unwrap(nets.encoder).state_dict(),
        "decoder": unwrap(nets.decoder).state_dict(),
        "discriminator": unwrap(nets.discriminator).state_dict(),
        "ema": nets.ema.state_dict(),
        "opt_enc": nets.opt_enc.state_dict(),
        "opt_dec": nets.opt_dec.state_dict(),
        "opt_dis": nets.opt_dis.state_dict(),
        "rng": _rng_state(device),
    }


def restore(nets: Nets, state: dict[str, Any], device: torch.device) -> None:
    unwrap(nets.encoder).load_state_dict(state["encoder"])
    unwrap(nets.decoder).load_state_dict(state["decoder"])
    unwrap(nets.discriminator).load_state_dict(state["discriminator"])
    nets.ema.load_state_dict(state["ema"])
    nets.opt_enc.load_state_dict(state["opt_enc"])
    nets.opt_dec.load_state_dict(state["opt_dec"])
    nets.opt_dis.load_state_dict(state["opt_dis"])
    _set_rng_state(state["rng"], device)


def resume_args(args: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, Any]]:
    state = ckpt.load_checkpoint(Path(args.run_dir))
    merged = dict(state["args"])
    for k in RESUME_OVERRIDES:
        merged[k] = getattr(args, k)
    return argparse.Namespace(**merged), state


def check_ranks_agree(nets: Nets, step: int, run_dir: Path, info: ddp.DistInfo) -> dict[str, list[str]]:
    """Every rank must end with bit-identical weights: DDP averages E's and G's gradients,
    ``average_gradients`` D's, and all start from the same seed. A mismatch means the
    gradient sync is broken and rank 0's export would be one rank's model, so it is fatal.
    Parameters only: BatchNorm running statistics are per rank by design."""
    digests = {
        name: ddp.all_gather_hex(ddp.parameter_sha256([net]), info)
        for name, net in (
            ("encoder", unwrap(nets.encoder)),
            ("decoder", unwrap(nets.decoder)),
            ("discriminator", unwrap(nets.discriminator)),
            ("decoder_ema", nets.ema.shadow),
        )
    }
    if info.is_main:
        record = {"step": step, "world_size": info.world_size, "parameter_sha256": digests}
        (run_dir / RANKS_FILE).write_text(json.dumps(record, indent=2) + "\n")
    diverged = [name for name, per_rank in digests.items() if len(set(per_rank)) != 1]
    if diverged:
        raise RuntimeError(
            f"The {info.world_size} ranks hold different {', '.join(diverged)} weights after step "
            f"{step} (see {run_dir / RANKS_FILE}); the gradient all-reduce is broken. Do not use "
            f"this run; report it with the torch version and backend."
        )
    if info.is_main:
        print(f"all {info.world_size} ranks hold identical weights after step {step}")
    return digests


def train(args: argparse.Namespace) -> Path:
    """Train (or resume) until --max-steps or --max-minutes; return the run directory."""
    run_dir = Path(args.run_dir)
    state: dict[str, Any] | None = None
    if args.resume:
        args, state = resume_args(args)
    info = ddp.init_distributed(args.device)
    device = info.device
    cfg = model_config(args)
    t_load = time.monotonic()
    ds = load_dataset(args, cfg)
    train_idx, val_idx = split_indices(len(ds), args.val_fraction, args.seed)
    data_info = dataset_info(ds, args, len(train_idx), len(val_idx))
    train_images = ds.images[train_idx].to(device)  # uint8 (N_train, C, H, W), all in memory
    if info.is_main:
        print(
            f"data: {len(ds)} images from {data_info['source']} ({ds.skipped} skipped), "
            f"{len(train_idx)} train / {len(val_idx)} val, loaded in {time.monotonic() - t_load:.1f}s; "
            f"device {device}"
        )
    del ds  # the training rows were copied out: do not hold the whole set twice (2.5 GB for CelebA)
    nets = build_nets(cfg, args, info)
    scfg = step_config(args, device)
    step, images_seen, wall_before = 0, 0, 0.0
    if state is not None:
        restore(nets, state, device)
        step, images_seen, wall_before = (
            int(state["step"]),
            int(state["images_seen"]),
            float(state["wall_time_s"]),
        )
        if info.is_main:
            ckpt.truncate_log(run_dir, step)
        del state
    else:
        torch.manual_seed(args.seed + 7919 * info.rank)  # noise/augment stream per rank
    run_dir.mkdir(parents=True, exist_ok=True)

    for m in (nets.encoder, nets.decoder, nets.discriminator):
        m.train()
    budget_s = args.max_minutes * 60.0 if args.max_minutes > 0 else math.inf
    t0 = time.monotonic()
    bar = tqdm(
        total=args.max_steps,
        initial=step,
        disable=not (args.progress and info.is_main),
        dynamic_ncols=True,
        desc="train",
    )
    step_times: list[float] = []

    def save() -> None:
        if info.is_main:
            wall = wall_before + time.monotonic() - t0
            ckpt.save_checkpoint(
                run_dir,
                capture(
                    nets,
                    step,
                    images_seen,
                    wall,
                    args,
                    cfg,
                    data_info,
                    scfg.precision,
                    device,
                    info.world_size,
                ),
            )

    last_saved = step
    while step < args.max_steps:
        elapsed = time.monotonic() - t0
        mean_step = sum(step_times[-20:]) / max(1, len(step_times[-20:]))
        # Stop before the step that would overrun the budget, leaving time to export.
        if ddp.any_rank(elapsed + mean_step > budget_s, info):
            if info.is_main:
                print(f"time budget of {args.max_minutes} min reached at step {step}; stopping.")
            break
        ts = time.monotonic()
        idx = batch_indices(step, len(train_idx), args.batch_size, args.seed, info)
        terms = train_step(nets, train_images[idx.to(device)], step, scfg, info)
        step += 1
        images_seen += args.batch_size
        step_times.append(time.monotonic() - ts)
        bar.update(1)
        if step % args.log_every == 0 or step == args.max_steps:
            vals = {k: round(float(v), 6) for k, v in terms.items()}
            bar.set_postfix(
                {k: f"{v:.3g}" for k, v in vals.items() if k in ("prior", "dis_l", "pixel", "gan_g", "gan_d")}
            )
            if info.is_main:
                ckpt.append_log(
                    run_dir,
                    {
                        "step": step,
                        "images_seen": images_seen,
                        "wall_time_s": round(wall_before + time.monotonic() - t0, 3),
                        "sec_per_step": round(
                            sum(step_times[-args.log_every :]) / len(step_times[-args.log_every :]), 4
                        ),
                        **vals,
                        "lr_enc": nets.opt_enc.param_groups[0]["lr"],
                        "lr_dec": nets.opt_dec.param_groups[0]["lr"],
                        "lr_dis": nets.opt_dis.param_groups[0]["lr"],
                    },
                )
        if args.checkpoint_every > 0 and step % args.checkpoint_every == 0:
            save()
            last_saved = step
    bar.close()
    if step != last_saved or not (run_dir / ckpt.CHECKPOINT_FILE).is_file():
        save()
    if info.enabled:
        check_ranks_agree(nets, step, run_dir, info)
    ddp.barrier(info)
    return run_dir
