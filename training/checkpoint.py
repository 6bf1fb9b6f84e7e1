"""Training checkpoints: one ``checkpoint.pt`` of plain tensors and primitives (loaded with
``torch.load(weights_only=True)``, so no pickle code runs) plus a human-readable
``checkpoint.json`` with step and args, both in the run directory; ``capture`` and
``restore`` turn the networks, optimisers and RNG into that state and back, and
``resume_args`` rebuilds a run's flags from it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from training.step import Nets, unwrap

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_JSON = "checkpoint.json"
LOG_FILE = "train_log.jsonl"
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


class CheckpointError(Exception):
    """A run directory holds no usable checkpoint."""


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename): a crash mid-save keeps the previous checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CHECKPOINT_FILE
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    summary = {
        k: state[k] for k in ("step", "images_seen", "wall_time_s", "args", "model_config") if k in state
    }
    (run_dir / CHECKPOINT_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    return path


def load_checkpoint(run_dir: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint at {path}; train first (python -m training --run-dir {run_dir} ...) "
            f"or point --run-dir/--checkpoint at a directory holding {CHECKPOINT_FILE}."
        )
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a facegen training checkpoint.")
    return state


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_log(run_dir: Path, step: int) -> None:
    """On resume, drop records written after the checkpoint (a crash between checkpoint and
    exit leaves some); the resumed run logs those steps again."""
    path = Path(run_dir) / LOG_FILE
    if path.is_file():
        kept = [r for r in read_log(run_dir) if int(r.get("step", 0)) <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def capture(nets: Nets, device: torch.device, record: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint state: ``record`` (step, images_seen, wall time, args, model config,
    data set: what the run chose, in plain values) plus the state of every network, EMA,
    optimiser and the RNG, so that a resumed run continues bit for bit."""
    return {
        **record,
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
    """Load ``capture``'s state into freshly built ``nets`` and set the RNG where it was."""
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


def saved_args(run_dir: Path) -> dict[str, Any]:
    """The flags a run's last checkpoint was saved with ({} when it has none)."""
    try:
        return dict(json.loads((run_dir / CHECKPOINT_JSON).read_text())["args"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def resume_args(args: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, Any]]:
    """(the run's flags: the checkpoint's, but ``RESUME_OVERRIDES`` from ``args``; its state)."""
    state = load_checkpoint(Path(args.run_dir))
    merged = dict(state["args"])
    for k in RESUME_OVERRIDES:
        merged[k] = getattr(args, k)
    return argparse.Namespace(**merged), state
