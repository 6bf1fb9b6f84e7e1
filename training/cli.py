"""Command line of ``python -m training``: train-then-export, and ``export`` alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from facegen_core.config import CROP_MODES, UPSAMPLE_MODES
from facegen_core.networks import DIS_NORMS
from training.checkpoint import saved_args
from training.decoder_step import SAMPLE_ANCHOR_WEIGHT
from training.losses import GAN_LOSSES


def add_weights_dtype(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--weights-dtype, shared by training (its export) and ``export``."""
    p.add_argument(
        "--weights-dtype",
        choices=("fp32", "fp16"),
        default="fp32",
        help="How the exported artifact stores its weights (fp16 halves it; the loader casts back to fp32).",
    )


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training",
        description="Train the facegen VAE-GAN (Larsen et al. 2015) and export it to a model store. "
        "Run 'python -m training export -h' to export an existing run without training.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data and output")
    g.add_argument(
        "--data",
        default=None,
        help="Folder/.zip of face images (CelebA layout read with "
        "its attributes), .npz with an 'images' array, or the age/gender/ethnicity CSV; several "
        "sources separated by commas are trained on together, each with its own validation split.",
    )
    g.add_argument(
        "--store", default="model_store", help="Model store directory the artifact is written into."
    )
    g.add_argument("--name", default="facegen", help="Model name inside the store.")
    g.add_argument("--run-dir", default=None, help="Checkpoints and train_log.jsonl; default runs/NAME.")
    g.add_argument("--resume", action="store_true", help="Continue the run in --run-dir from its checkpoint.")
    g.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Export an artifact when training stops.",
    )
    g.add_argument(
        "--init-from",
        default=None,
        metavar="ARTIFACT",
        help="Start from this exported artifact's encoder, decoder and latent prior (a model-store "
        "version folder); the discriminator and optimiser start fresh. The architecture flags must "
        "match the artifact's.",
    )
    g.add_argument("--cache-dir", default="data_cache", help="Where decoded data sets are cached ('' = off).")
    g.add_argument("--limit", type=int, default=None, help="Use only the first N images of --data.")
    g.add_argument("--val-fraction", type=float, default=0.05, help="Held-out validation share.")
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="A few steps of the tiny config on synthetic images, then export (smoke test).",
    )
    g.add_argument("--dry-run-images", type=int, default=64, help="Synthetic images for --dry-run.")

    g = p.add_argument_group("model")
    g.add_argument(
        "--config",
        choices=("default", "small", "tiny"),
        default="small",
        help="Architecture preset (facegen_core.config.ModelConfig).",
    )
    g.add_argument("--latent-dim", type=int, default=None, help="Override the preset's latent size.")
    g.add_argument(
        "--kernel-size",
        type=int,
        default=None,
        help="Override the preset's conv kernel (odd; the paper uses 5, 3 costs 2.8x fewer FLOPs).",
    )
    g.add_argument(
        "--enc-head-channels",
        type=int,
        default=None,
        help="Override the preset's encoder squeeze maps (16); with --init-from, a wider head is "
        "grown from the artifact's without changing its output (training.grow).",
    )
    g.add_argument(
        "--enc-res-blocks",
        type=int,
        default=None,
        help="Residual 3×3 blocks at the encoder's last resolution (preset: 0); new ones start as "
        "the identity, so --init-from can add them (training.grow).",
    )
    g.add_argument(
        "--image-size", type=int, default=None, help="Override the preset's image size (32/64/128)."
    )
    g.add_argument("--channels", type=int, default=None, help="Override: 1 (grey) or 3 (RGB).")
    g.add_argument("--crop", choices=CROP_MODES, default=None, help="Override the preset's input crop.")
    g.add_argument(
        "--upsample",
        choices=UPSAMPLE_MODES,
        default="nearest",
        help="Decoder upsampling: nearest ×2 + 3×3 conv (no checkerboard) or the paper's deconvs.",
    )
    g.add_argument(
        "--dis-norm",
        choices=DIS_NORMS,
        default="none",
        help="Discriminator normalisation: none (R1 alone keeps it in check), spectral, or the "
        "paper's batch norm.",
    )

    g = p.add_argument_group("objective (Larsen et al. 2015 + stabilisers)")
    g.add_argument(
        "--kl-weight",
        type=float,
        default=1e-4,
        help="β on L_prior; small because the likelihood terms are per-element means (and samples "
        "come from the fitted latent prior, not N(0, I)).",
    )
    g.add_argument(
        "--gamma",
        type=float,
        default=1.0,
        help="Paper's γ: weight of L_llike^Dis_l vs L_GAN for the decoder.",
    )
    g.add_argument(
        "--pixel-weight",
        type=float,
        default=10.0,
        help="Pixel MSE reconstruction weight (a deviation from the paper; 0 = paper). With β it "
        "sets the decoder's effective variance β/w; 10 with β 1e-4 keeps PSNR from being capped.",
    )
    g.add_argument(
        "--pixel-pool",
        type=int,
        default=4,
        help="Compare pixels after N×N average pooling (1 = every pixel); leaves detail to Dis_l/GAN "
        "(4 won the A/B in model_store/faces64/TRAINING.md on FID and sharpness, -0.4 dB PSNR).",
    )
    g.add_argument(
        "--dis-l-norm",
        choices=("channel", "none"),
        default="channel",
        help="Dis_l likelihood: each feature channel in units of its spread over real images, or raw.",
    )
    g.add_argument(
        "--gan-prior",
        choices=("fitted", "standard"),
        default="fitted",
        help="Where the GAN's prior samples z_p come from: a running Gaussian of the encoder means "
        "(what serving samples from) or the paper's N(0, I).",
    )
    g.add_argument("--gan-loss", choices=GAN_LOSSES, default="ns", help="GAN loss: non-saturating or hinge.")
    g.add_argument("--r1-gamma", type=float, default=0.05, help="R1 penalty weight on real images (0 = off).")
    g.add_argument("--r1-every", type=int, default=16, help="Lazy R1: apply every N steps.")
    g.add_argument(
        "--diffaugment",
        default="color,translation",
        help="DiffAugment ops for every image D sees: comma list of color,translation,cutout or 'none'.",
    )
    g.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the exported networks.")
    g.add_argument(
        "--ema-encoder",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Export an EMA of the encoder too (else its last weights).",
    )
    g.add_argument(
        "--latent-prior",
        choices=("fitted", "standard"),
        default="fitted",
        help="What exported samples draw z from: a Gaussian fitted to the training set's encoder means "
        "(ex-post density estimation) or the VAE's N(0, I).",
    )

    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--batch-size", type=int, default=64, help="Global batch size (split across torchrun ranks)."
    )
    g.add_argument("--max-steps", type=int, default=20000, help="Stop after this many steps.")
    g.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="Time budget: stop cleanly, checkpoint and export when reached (0 = none).",
    )
    g.add_argument("--lr-enc", type=float, default=2e-4, help="Adam learning rate of the encoder.")
    g.add_argument("--lr-dec", type=float, default=2e-4, help="Adam learning rate of the decoder.")
    g.add_argument("--lr-dis", type=float, default=2e-4, help="Adam learning rate of the discriminator.")
    g.add_argument("--beta1", type=float, default=0.5, help="Adam β1.")
    g.add_argument("--beta2", type=float, default=0.99, help="Adam β2.")
    g.add_argument(
        "--lr-decay",
        type=float,
        default=0.2,
        help="Decay every learning rate linearly to zero over this last share of the run "
        "(of --max-minutes when set, else of --max-steps); 0 = constant.",
    )
    g.add_argument(
        "--dis-warmup-steps",
        type=int,
        default=0,
        help="Train the discriminator alone for the first N steps (encoder and decoder held): for a "
        "warm start (--init-from), whose discriminator is new. 0 = off.",
    )
    g.add_argument(
        "--train-part",
        choices=("all", "encoder", "decoder"),
        default="all",
        help="all = the VAE-GAN (Larsen et al. 2015, Algorithm 1); encoder = the encoder alone against "
        "--init-from's frozen decoder, for reconstruction (training/encoder_step.py): samples and the "
        "latent prior stay the artifact's; decoder = the decoder alone fitted to --init-from's frozen "
        "encoder, for reconstruction, its samples held by --sample-anchor-weight "
        "(training/decoder_step.py): the encoder and the latent prior stay the artifact's.",
    )
    g.add_argument(
        "--sample-anchor-weight",
        type=float,
        default=SAMPLE_ANCHOR_WEIGHT,
        help="With --train-part decoder: weight of ||Dec(z_p) - Dec_0(z_p)||^2 on the prior's latents, "
        "which keeps the random faces the --init-from decoder's (Li & Hoiem 2016); 0 = off.",
    )
    g.add_argument(
        "--encoder-bn",
        choices=("batch", "frozen"),
        default="batch",
        help="With --train-part encoder: batch = the encoder's BatchNorm normalises by each batch's "
        "statistics, recomputed at export; frozen = by --init-from's running statistics, kept as they "
        "are (training/encoder_step.py, freeze_batchnorm).",
    )
    g.add_argument("--seed", type=int, default=0, help="Seed of weights, split, batches and noise.")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda.")
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto = bf16 autocast on CUDA and on CPUs with native bf16 (AMX/AVX512-BF16), else fp32.",
    )
    g.add_argument(
        "--memory-format",
        choices=("channels_last", "contiguous"),
        default="channels_last",
        help="Tensor layout of the networks and batches: channels_last (NHWC) is what bf16 and CUDA "
        "kernels take, and was faster in fp32 on CPU too (python -m bench.train_step); contiguous = NCHW.",
    )
    g.add_argument("--num-workers", type=int, default=0, help="Ignored: the data set is held in memory.")

    g = p.add_argument_group("logging and export")
    g.add_argument("--log-every", type=int, default=50, help="Steps between train_log.jsonl records.")
    g.add_argument(
        "--checkpoint-every", type=int, default=500, help="Steps between checkpoints (0 = only at the end)."
    )
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="Show a tqdm bar.")
    g.add_argument("--sample-seed", type=int, default=0, help="Seed of samples.png (face i from seed + i).")
    add_weights_dtype(g)
    g.add_argument("--sample-temperature", type=float, default=1.0, help="Temperature of samples.png.")
    return p


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training export",
        description="Export a training run's checkpoint to a model store.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="Run directory holding checkpoint.pt.")
    p.add_argument("--store", default="model_store", help="Model store directory.")
    p.add_argument("--name", default="facegen", help="Model name inside the store.")
    p.add_argument("--data", default=None, help="Data path for interpolation.png if it moved since training.")
    add_weights_dtype(p)
    p.add_argument(
        "--device", default="cpu", help="Where the passes over the training faces run (pictures: CPU)."
    )
    return p


DRY_RUN = dict(config="tiny", max_steps=4, batch_size=8, log_every=1, checkpoint_every=0, r1_every=2)


def _explicit_dests(argv: list[str] | None) -> set[str]:
    """The options given on the command line: parsed again with every default suppressed."""
    p = train_parser()
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def parse_train_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = train_parser()
    args = p.parse_args(argv)
    if args.dry_run:
        # The dry-run preset wins over the defaults but not over flags given explicitly, in
        # any spelling argparse accepts (--max-steps 9, --max-steps=9, --max-st 9).
        explicit = _explicit_dests(argv)
        for k, v in DRY_RUN.items():
            if k not in explicit:
                setattr(args, k, v)
    if args.run_dir is None:
        args.run_dir = str(Path("runs") / args.name)
    if args.resume:
        # A resumed run exports where the run was going to, unless told otherwise: the
        # parser's defaults once sent a resumed fine-tune into model_store/facegen.
        explicit = _explicit_dests(argv)
        saved = saved_args(Path(args.run_dir))
        for k in ("store", "name"):
            if k not in explicit and k in saved:
                setattr(args, k, saved[k])
    if args.batch_size < 1 or args.max_steps < 0:
        p.error("--batch-size must be >= 1 and --max-steps >= 0.")
    return args
