"""Training checkpoints: one ``checkpoint.pt`` of plain tensors and primitives (loaded with
``torch.load(weights_only=True)``, so no pickle code runs) plus a human-readable
``checkpoint.json`` with step and args, both in the run directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_JSON = "checkpoint.json"
LOG_FILE = "train_log.jsonl"


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
