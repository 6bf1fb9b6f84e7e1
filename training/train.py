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
from facegen_core.device import cpu_has_bf16
from facegen_core.networks import Decoder, Discriminator, Encoder
from training import checkpoint as ckpt
from training import distributed as ddp
from training.augment import parse_policy
from training.data import FaceDataset, load_faces, split_indices, synthetic_faces
from training.ema import EMA
from training.prior import RunningGaussian
from training.step import Nets, StepConfig, train_step, unwrap
from training.warm_start import WarmStartError, warm_start

CELEBA_LICENCE = (
    "CelebA: non-commercial research only (MMLAB, CUHK); weights trained on it inherit these terms"
)
FAIRFACE_LICENCE = (
    "FairFace: CC BY 4.0; credit Kärkkäinen & Joo, 'FairFace: Face Attribute Dataset for Balanced "
    "Race, Gender, and Age', WACV 2021"
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
    if getattr(args, "upsample", None) is not None:
        overrides["upsample"] = args.upsample
    if args.config == "default":
        return ModelConfig(**overrides)
    if args.config == "small":
        return ModelConfig.small(**overrides)
    if args.config == "tiny":
        return ModelConfig.tiny(**overrides)
    raise ValueError(f"Unknown --config {args.config!r}; use default, small or tiny.")


def data_sources(args: argparse.Namespace) -> list[str]:
    """--data split on commas: each source is loaded, split and credited on its own."""
    return [part.strip() for part in str(args.data).split(",") if part.strip()]


def load_datasets(args: argparse.Namespace, cfg: ModelConfig) -> list[FaceDataset]:
    if args.data is None:
        if not args.dry_run:
            raise SystemExit("No training data: pass --data PATH (or --dry-run for synthetic images).")
        return [synthetic_faces(args.dry_run_images, cfg.image_size, cfg.channels, seed=args.seed)]
    return [
        load_faces(
            source,
            cfg.image_size,
            cfg.channels,
            cfg.input_crop,
            cache_dir=args.cache_dir or None,
            limit=args.limit,
        )
        for source in data_sources(args)
    ]


def split_datasets(
    datasets: list[FaceDataset], args: argparse.Namespace
) -> tuple[torch.Tensor, list[torch.Tensor], list[tuple[int, int]]]:
    """(train uint8 (N_train, C, H, W) of every source, each source's validation images,
    each source's (n_train, n_val)). Every source is split on its own with the same seeded
    rule, so a single-source run's split is the one earlier versions recorded."""
    train, vals, sizes = [], [], []
    for ds in datasets:
        train_idx, val_idx = split_indices(len(ds), args.val_fraction, args.seed)
        train.append(ds.images[train_idx])
        vals.append(ds.images[val_idx])
        sizes.append((len(train_idx), len(val_idx)))
    return torch.cat(train), vals, sizes


def is_celeba(ds: FaceDataset) -> bool:
    return "celeba" in ds.source.lower() or ds.attribute_names[:1] == ["5_o_Clock_Shadow"]


def licence(ds: FaceDataset, synthetic: bool) -> str:
    if is_celeba(ds):
        return CELEBA_LICENCE
    if "fairface" in ds.source.lower():
        return FAIRFACE_LICENCE
    return SYNTHETIC_LICENCE if synthetic else UNKNOWN_LICENCE


def dataset_info(
    datasets: list[FaceDataset], args: argparse.Namespace, sizes: list[tuple[int, int]]
) -> dict[str, Any]:
    """The manifest's ``dataset``: one record per source with its split, plus the totals.
    A single source keeps the flat layout of earlier versions (evaluate reads both)."""
    synthetic = args.data is None
    paths = data_sources(args) if not synthetic else ["synthetic (--dry-run)"]
    sources: list[dict[str, Any]] = [
        {
            "name": ds.source,
            "source": path,
            "images": len(ds),
            "skipped": ds.skipped,
            "split": {"seed": args.seed, "val_fraction": args.val_fraction, "train": n_t, "val": n_v},
            "licence": licence(ds, synthetic),
        }
        for ds, path, (n_t, n_v) in zip(datasets, paths, sizes, strict=True)
    ]
    if len(sources) == 1:
        return sources[0]
    return {
        "name": "+".join(str(s["name"]) for s in sources),
        "source": ",".join(paths),
        "images": sum(int(s["images"]) for s in sources),
        "skipped": sum(int(s["skipped"]) for s in sources),
        "split": {
            "seed": args.seed,
            "val_fraction": args.val_fraction,
            "train": sum(n for n, _ in sizes),
            "val": sum(v for _, v in sizes),
            "per_source": True,
        },
        "licence": "; ".join(dict.fromkeys(str(s["licence"]) for s in sources)),
        "sources": sources,
    }


def build_nets(cfg: ModelConfig, args: argparse.Namespace, info: ddp.DistInfo) -> Nets:
    torch.manual_seed(args.seed)  # identical initial weights on every rank
    enc, dec = Encoder(cfg).to(info.device), Decoder(cfg).to(info.device)
    dis = Discriminator(cfg, norm=dis_norm(args)).to(info.device)
    if info.device.type == "cuda" or resolve_precision(args, info.device) == "bf16":
        for m in (enc, dec, dis):
            m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    betas = (args.beta1, args.beta2)
    ema = EMA(dec, args.ema_decay)
    ema_enc = EMA(enc, args.ema_decay) if getattr(args, "ema_encoder", False) else None
    fitted = getattr(args, "gan_prior", "standard") == "fitted"
    return Nets(
        encoder=ddp.wrap(enc, info),
        decoder=ddp.wrap(dec, info),
        discriminator=dis,
        opt_enc=torch.optim.Adam(enc.parameters(), lr=args.lr_enc, betas=betas),
        opt_dec=torch.optim.Adam(dec.parameters(), lr=args.lr_dec, betas=betas),
        opt_dis=torch.optim.Adam(dis.parameters(), lr=args.lr_dis, betas=betas),
        ema=ema,
        ema_encoder=ema_enc,
        gan_prior=RunningGaussian(cfg.latent_dim, info.device) if fitted else None,
    )


def dis_norm(args: argparse.Namespace) -> str:
    """--dis-norm; checkpoints written before it existed recorded --spectral-norm on/off."""
    if getattr(args, "dis_norm", None):
        return str(args.dis_norm)
    return "spectral" if getattr(args, "spectral_norm", True) else "batch"


def resolve_precision(args: argparse.Namespace, device: torch.device) -> str:
    if args.precision != "auto":
        return str(args.precision)
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()):
        return "bf16"
    return "fp32"


def lr_factor(progress: float, decay: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of the run: 1, then linear to 0
    over the last ``decay`` share (annealing the step size settles the GAN's oscillation
    and the final EMA on a better point)."""
    if decay <= 0.0 or progress <= 1.0 - decay:
        return 1.0
    return max(0.0, (1.0 - progress) / decay)


def step_config(args: argparse.Namespace, device: torch.device) -> StepConfig:
    precision = resolve_precision(args, device)
    return StepConfig(
        kl_weight=args.kl_weight,
        gamma=args.gamma,
        pixel_weight=args.pixel_weight,
        gan_loss=args.gan_loss,
        r1_gamma=args.r1_gamma,
        r1_every=max(1, args.r1_every),
        augment=parse_policy(args.diffaugment),
        precision=precision,
        dis_l_per_channel=getattr(args, "dis_l_norm", "none") == "channel",
        pixel_pool=max(1, int(getattr(args, "pixel_pool", 1))),
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
    init_from: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        **({"init_from": init_from} if init_from is not None else {}),
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
        **({"ema_encoder": nets.ema_encoder.state_dict()} if nets.ema_encoder is not None else {}),
        **({"gan_prior": nets.gan_prior.state_dict()} if nets.gan_prior is not None else {}),
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
    if nets.ema_encoder is not None:
        nets.ema_encoder.load_state_dict(state.get("ema_encoder", state["encoder"]))
    if nets.gan_prior is not None and "gan_prior" in state:
        nets.gan_prior.load_state_dict(state["gan_prior"])
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
            *((("encoder_ema", nets.ema_encoder.shadow),) if nets.ema_encoder is not None else ()),
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
    datasets = load_datasets(args, cfg)
    train_cpu, _, sizes = split_datasets(datasets, args)
    data_info = dataset_info(datasets, args, sizes)
    del datasets  # the training rows were copied out: do not hold the whole set twice (2.5 GB for CelebA)
    train_images = train_cpu.to(device)  # uint8 (N_train, C, H, W), all in memory (on the GPU there)
    del train_cpu
    n_train = int(train_images.shape[0])
    if info.is_main:
        print(
            f"data: {data_info['images']} images from {data_info['source']} ({data_info['skipped']} "
            f"skipped), {n_train} train / {data_info['split']['val']} val, loaded in "
            f"{time.monotonic() - t_load:.1f}s; device {device}"
        )
    nets = build_nets(cfg, args, info)
    scfg = step_config(args, device)
    step, images_seen, wall_before = 0, 0, 0.0
    init_from: dict[str, Any] | None = None
    if state is not None:
        init_from = state.get("init_from")
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
        if getattr(args, "init_from", None):
            try:
                init_from = warm_start(nets, cfg, args.init_from)
            except WarmStartError as e:
                raise SystemExit(str(e)) from e
            if info.is_main:
                print(f"warm start from {init_from['name']} v{init_from['version']} ({args.init_from})")
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
                    init_from,
                ),
            )

    last_saved = step
    while step < args.max_steps:
        mean_step = sum(step_times[-20:]) / max(1, len(step_times[-20:]))
        # One clock for every rank (max_over_ranks): the stop and the learning rate are decided
        # from it, and ranks that disagreed on either would end with different weights.
        elapsed = ddp.max_over_ranks(time.monotonic() - t0 + mean_step, info)
        # Stop before the step that would overrun the budget, leaving time to export.
        if elapsed > budget_s:
            if info.is_main:
                print(f"time budget of {args.max_minutes} min reached at step {step}; stopping.")
            break
        ts = time.monotonic()
        progress = max(step / max(1, args.max_steps), elapsed / budget_s)
        factor = lr_factor(progress, float(getattr(args, "lr_decay", 0.0)))
        for opt, base in (
            (nets.opt_enc, args.lr_enc),
            (nets.opt_dec, args.lr_dec),
            (nets.opt_dis, args.lr_dis),
        ):
            for group in opt.param_groups:
                group["lr"] = base * factor
        idx = batch_indices(step, n_train, args.batch_size, args.seed, info)
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
