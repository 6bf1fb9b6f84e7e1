"""The training loop, nanoGPT-style: ``setup`` builds the run, ``loop`` trains it, ``finish``
leaves the final checkpoint; each step's bookkeeping (learning rate, log line, checkpoint)
has a function of its own.

``train(args)`` runs (or resumes) a run in ``args.run_dir``; ``training.export`` turns its
final checkpoint into a model-store artifact. Data loading lives in ``training.run_data``,
checkpoint capture/restore in ``training.checkpoint``, the step itself in ``training.step``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from facegen_core.artifact import ArtifactError, load_artifact
from facegen_core.config import ModelConfig
from facegen_core.device import cpu_has_bf16, set_memory_format
from facegen_core.networks import Decoder, Discriminator, Encoder
from training import checkpoint as ckpt
from training import distributed as ddp
from training.augment import parse_policy
from training.decoder_step import (
    SampleAnchor,
    decoder_only,
    decoder_step,
    freeze_decoder_batchnorm,
    freeze_encoder,
    sample_anchor,
)
from training.ema import EMA
from training.encoder_step import batchnorm_frozen, encoder_step, freeze_batchnorm, freeze_decoder
from training.prior import RunningGaussian
from training.run_data import batch_indices, load_training_images
from training.step import Nets, StepConfig, train_part, train_step, unwrap
from training.warm_start import WarmStartError, warm_start

# Written by rank 0 of a torchrun run: every rank's parameter sha256 after the last step.
RANKS_FILE = "ranks.json"
# --config presets, and the architecture flags that override them (flag -> ModelConfig field).
CONFIG_PRESETS: dict[str, Callable[..., ModelConfig]] = {
    "default": ModelConfig,
    "small": ModelConfig.small,
    "tiny": ModelConfig.tiny,
}
CONFIG_FLAGS = {
    "latent_dim": "latent_dim",
    "image_size": "image_size",
    "channels": "channels",
    "kernel_size": "kernel_size",
    "enc_head_channels": "enc_head_channels",
    "enc_res_blocks": "enc_res_blocks",
    "crop": "input_crop",
    "upsample": "upsample",
}
# The loss terms the progress bar shows (the log has them all).
BAR_TERMS = ("prior", "dis_l", "pixel", "gan_g", "gan_d")


@dataclass
class Run:
    """One run: what ``setup`` builds, and the counters the loop advances."""

    args: argparse.Namespace
    info: ddp.DistInfo
    cfg: ModelConfig
    nets: Nets
    scfg: StepConfig
    images: torch.Tensor  # uint8 (N_train, C, H, W), all in memory (on the GPU there)
    data_info: dict[str, Any]  # the manifest's ``dataset`` record
    run_dir: Path
    init_from: dict[str, Any] | None = None  # the --init-from artifact, kept through resumes
    anchor: SampleAnchor | None = None  # --train-part decoder: the artifact's decoder and prior
    step: int = 0
    images_seen: int = 0
    saved_step: int = 0  # the step of the last checkpoint written
    wall_before: float = 0.0  # seconds trained by earlier processes of a resumed run
    t0: float = field(default_factory=time.monotonic)  # this process's start of training
    step_times: list[float] = field(default_factory=list)  # seconds per step, this process

    def wall_time_s(self) -> float:
        return self.wall_before + time.monotonic() - self.t0


def train(args: argparse.Namespace) -> Path:
    """Train (or resume) until --max-steps or --max-minutes; return the run directory."""
    run = setup(args)
    loop(run)
    finish(run)
    return run.run_dir


# ------------------------------------------------------------------------------ setup


def setup(args: argparse.Namespace) -> Run:
    """Data, networks and step config; then either the checkpoint's state (--resume) or a
    fresh start (optionally warm-started from --init-from)."""
    state: dict[str, Any] | None = None
    if args.resume:
        args, state = ckpt.resume_args(args)
    info = ddp.init_distributed(args.device)
    cfg = model_config(args)
    images, data_info = load_training_images(args, cfg, info)
    nets = build_nets(cfg, args, info)
    run = Run(args, info, cfg, nets, step_config(args, info.device), images, data_info, Path(args.run_dir))
    if state is not None:
        resume(run, state)
    else:
        start_fresh(run)
    if encoder_only(args):
        freeze_decoder(run.nets)
    if decoder_only(args):
        freeze_encoder(run.nets)
        run.anchor = build_anchor(run)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    return run


def build_anchor(run: Run) -> SampleAnchor | None:
    """--train-part decoder with --sample-anchor-weight > 0: the --init-from artifact's decoder,
    frozen, and its latent prior (reloaded on --resume; it must still hold the same weights)."""
    weight = float(getattr(run.args, "sample_anchor_weight", 0.0))
    init = run.init_from
    if weight <= 0:
        return None
    if not init:
        raise SystemExit("--sample-anchor-weight needs the --init-from artifact, and this run has none.")
    try:
        art = load_artifact(init["path"], run.info.device)
    except ArtifactError as e:
        raise SystemExit(f"The run's --init-from artifact {init['path']} cannot be loaded ({e}).") from e
    if art.weights_sha256 != init["weights_sha256"]:
        raise SystemExit(f"{init['path']} holds other weights than the run started from.")
    return sample_anchor(art.decoder, art.prior, weight, memory_format(run.args), run.info.device)


def encoder_only(args: argparse.Namespace) -> bool:
    """--train-part encoder (checkpoints written before the flag trained everything)."""
    return train_part(args) == "encoder"


def resume(run: Run, state: dict[str, Any]) -> None:
    run.init_from = state.get("init_from")
    ckpt.restore(run.nets, state, run.info.device)
    run.step, run.images_seen = int(state["step"]), int(state["images_seen"])
    run.saved_step, run.wall_before = run.step, float(state["wall_time_s"])
    if run.info.is_main:
        ckpt.truncate_log(run.run_dir, run.step)


def start_fresh(run: Run) -> None:
    source = getattr(run.args, "init_from", None)
    if encoder_only(run.args) and not source:
        raise SystemExit(
            "--train-part encoder trains an encoder for an existing decoder: pass --init-from ARTIFACT."
        )
    if decoder_only(run.args) and not source:
        raise SystemExit(
            "--train-part decoder fits an existing decoder to its encoder: pass --init-from ARTIFACT."
        )
    if source:
        try:
            run.init_from = warm_start(run.nets, run.cfg, source)
        except WarmStartError as e:
            raise SystemExit(str(e)) from e
        if run.info.is_main:
            print(f"warm start from {run.init_from['name']} v{run.init_from['version']} ({source})")
    torch.manual_seed(run.args.seed + 7919 * run.info.rank)  # noise/augment stream per rank


def model_config(args: argparse.Namespace) -> ModelConfig:
    """--config's preset with every architecture flag that was given (None: the preset's)."""
    overrides: dict[str, Any] = {
        field_name: getattr(args, flag)
        for flag, field_name in CONFIG_FLAGS.items()
        if getattr(args, flag, None) is not None  # older checkpoints lack newer flags
    }
    if args.config not in CONFIG_PRESETS:
        raise ValueError(f"Unknown --config {args.config!r}; use default, small or tiny.")
    return CONFIG_PRESETS[args.config](**overrides)


def build_nets(cfg: ModelConfig, args: argparse.Namespace, info: ddp.DistInfo) -> Nets:
    torch.manual_seed(args.seed)  # identical initial weights on every rank
    enc, dec = Encoder(cfg).to(info.device), Decoder(cfg).to(info.device)
    dis = Discriminator(cfg, norm=dis_norm(args)).to(info.device)
    # Channels-last (NHWC) by default everywhere: the oneDNN kernels behind bf16's speed-up on
    # CPU and cuDNN's tensor-core kernels take it, and it pays in fp32 on CPU as well
    # (python -m bench.train_step; docs/training.md, "Speed of a step").
    set_memory_format(enc, dec, dis, memory_format=memory_format(args))
    betas = (args.beta1, args.beta2)
    ema = EMA(dec, args.ema_decay)
    ema_enc = EMA(enc, args.ema_decay) if getattr(args, "ema_encoder", False) else None
    fitted = getattr(args, "gan_prior", "standard") == "fitted"
    return Nets(
        encoder=enc if decoder_only(args) else ddp.wrap(enc, info),  # DDP refuses a frozen module
        decoder=dec if encoder_only(args) else ddp.wrap(dec, info),
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


def memory_format(args: argparse.Namespace) -> str:
    """--memory-format; runs from before the flag trained in channels-last on CUDA and bf16, and
    resume as channels-last everywhere."""
    return str(getattr(args, "memory_format", "channels_last"))


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
        dis_warmup_steps=max(0, int(getattr(args, "dis_warmup_steps", 0))),
        memory_format=memory_format(args),
    )


# ------------------------------------------------------------------------------ the loop


def loop(run: Run) -> None:
    """Step until --max-steps, or until the next step would overrun --max-minutes."""
    args, info = run.args, run.info
    step_fn: Callable[..., dict[str, torch.Tensor]] = train_step
    trained: tuple[torch.nn.Module, ...] = (run.nets.encoder, run.nets.decoder, run.nets.discriminator)
    if encoder_only(args):
        step_fn, trained = encoder_step, (run.nets.encoder,)
    elif decoder_only(args):
        step_fn, trained = partial(decoder_step, anchor=run.anchor), (run.nets.decoder,)
    for m in trained:
        m.train()
    if batchnorm_frozen(args):
        freeze_batchnorm(unwrap(run.nets.encoder))
    if decoder_only(args):
        freeze_decoder_batchnorm(run.nets)
    budget_s = args.max_minutes * 60.0 if args.max_minutes > 0 else math.inf
    bar = tqdm(
        total=args.max_steps,
        initial=run.step,
        disable=not (args.progress and info.is_main),
        dynamic_ncols=True,
        desc="train",
    )
    run.t0 = time.monotonic()
    while run.step < args.max_steps:
        # One clock for every rank (max_over_ranks): the stop and the learning rate are decided
        # from it, and ranks that disagreed on either would end with different weights.
        elapsed = ddp.max_over_ranks(time.monotonic() - run.t0 + _mean(run.step_times[-20:]), info)
        # Stop before the step that would overrun the budget, leaving time to export.
        if elapsed > budget_s:
            if info.is_main:
                print(f"time budget of {args.max_minutes} min reached at step {run.step}; stopping.")
            break
        ts = time.monotonic()
        progress = max(run.step / max(1, args.max_steps), elapsed / budget_s)
        set_learning_rates(run.nets, args, lr_factor(progress, float(getattr(args, "lr_decay", 0.0))))
        idx = batch_indices(run.step, int(run.images.shape[0]), args.batch_size, args.seed, info)
        terms = step_fn(run.nets, run.images[idx.to(info.device)], run.step, run.scfg, info)
        run.step += 1
        run.images_seen += args.batch_size
        run.step_times.append(time.monotonic() - ts)
        bar.update(1)
        if run.step % args.log_every == 0 or run.step == args.max_steps:
            log_step(run, terms, bar)
        if args.checkpoint_every > 0 and run.step % args.checkpoint_every == 0:
            save(run)
    bar.close()


def set_learning_rates(nets: Nets, args: argparse.Namespace, factor: float) -> None:
    for opt, base in ((nets.opt_enc, args.lr_enc), (nets.opt_dec, args.lr_dec), (nets.opt_dis, args.lr_dis)):
        for group in opt.param_groups:
            group["lr"] = base * factor


def finish(run: Run) -> None:
    """The final checkpoint (unless the last step just wrote it); under torchrun, the check
    that every rank ends with the same weights."""
    if run.step != run.saved_step or not (run.run_dir / ckpt.CHECKPOINT_FILE).is_file():
        save(run)
    if run.info.enabled:
        check_ranks_agree(run.nets, run.step, run.run_dir, run.info)
    ddp.barrier(run.info)


# ------------------------------------------------------------------------------ logging, checkpoints


def log_step(run: Run, terms: dict[str, torch.Tensor], bar: tqdm[Any]) -> None:
    """The progress bar's loss terms; rank 0 appends one line to train_log.jsonl."""
    vals = {k: round(float(v), 6) for k, v in terms.items()}
    bar.set_postfix({k: f"{v:.3g}" for k, v in vals.items() if k in BAR_TERMS})
    if not run.info.is_main:
        return
    ckpt.append_log(
        run.run_dir,
        {
            "step": run.step,
            "images_seen": run.images_seen,
            "wall_time_s": round(run.wall_time_s(), 3),
            "sec_per_step": round(_mean(run.step_times[-run.args.log_every :]), 4),
            **vals,
            "lr_enc": run.nets.opt_enc.param_groups[0]["lr"],
            "lr_dec": run.nets.opt_dec.param_groups[0]["lr"],
            "lr_dis": run.nets.opt_dis.param_groups[0]["lr"],
        },
    )


def save(run: Run) -> None:
    """Checkpoint the run (rank 0 writes; every rank holds the same state)."""
    if run.info.is_main:
        ckpt.save_checkpoint(run.run_dir, ckpt.capture(run.nets, run.info.device, run_record(run)))
    run.saved_step = run.step


def run_record(run: Run) -> dict[str, Any]:
    """The checkpoint's plain values: progress, flags, config, data set, hardware."""
    device = run.info.device
    return {
        **({"init_from": run.init_from} if run.init_from is not None else {}),
        "step": run.step,
        "images_seen": run.images_seen,
        "wall_time_s": run.wall_time_s(),
        "args": {k: v for k, v in vars(run.args).items() if k != "func"},
        "model_config": run.cfg.to_dict(),
        "dataset": run.data_info,
        "precision": run.scfg.precision,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "trained_on": device.type,
        "world_size": run.info.world_size,
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / max(1, len(xs))


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
