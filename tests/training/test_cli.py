"""The training command line: defaults, the --dry-run preset against explicit flags, and
--resume continuing a run exactly where an uninterrupted one would be."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training import checkpoint as ckpt
from training.cli import DRY_RUN, export_parser, parse_train_args
from training.train import train


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_defaults_write_into_the_repository_model_store() -> None:
    args = parse_train_args([])
    assert args.store == "model_store" and args.name == "facegen"
    assert args.run_dir == str(Path("runs") / "facegen")
    assert export_parser().parse_args(["--checkpoint", "runs/x"]).store == "model_store"


def test_dry_run_preset_fills_only_what_was_not_given() -> None:
    args = parse_train_args(["--dry-run"])
    assert {k: getattr(args, k) for k in DRY_RUN} == DRY_RUN
    for argv in (
        ["--dry-run", "--max-steps", "9", "--config", "small"],
        ["--dry-run", "--max-steps=9", "--config=small"],
        ["--max-st", "9", "--dry-run", "--conf", "small"],  # argparse's unique prefixes
    ):
        args = parse_train_args(argv)
        assert (args.max_steps, args.config) == (9, "small"), argv
        assert args.batch_size == DRY_RUN["batch_size"]  # not given: still the preset's


def test_bad_numbers_are_rejected() -> None:
    with pytest.raises(SystemExit):
        parse_train_args(["--batch-size", "0"])


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    s = ckpt.load_checkpoint(run_dir)
    return {
        f"{net}.{k}": v for net in ("encoder", "decoder", "discriminator", "ema") for k, v in s[net].items()
    }


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    common = ["--dry-run", "--no-progress", "--no-export", "--store", str(tmp_path / "store")]
    straight = tmp_path / "straight"
    train(parse_train_args([*common, "--run-dir", str(straight), "--max-steps", "4"]))

    resumed = tmp_path / "resumed"
    train(parse_train_args([*common, "--run-dir", str(resumed), "--max-steps", "2"]))
    assert ckpt.load_checkpoint(resumed)["step"] == 2
    train(parse_train_args([*common, "--run-dir", str(resumed), "--max-steps", "4", "--resume"]))

    a, b = _state(straight), _state(resumed)
    assert ckpt.load_checkpoint(resumed)["step"] == 4 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # The log holds each step once, with the same losses as the uninterrupted run.
    log_a, log_b = ckpt.read_log(straight), ckpt.read_log(resumed)
    assert [r["step"] for r in log_b] == [1, 2, 3, 4]
    for ra, rb in zip(log_a, log_b, strict=True):
        assert {k: v for k, v in ra.items() if k not in ("wall_time_s", "sec_per_step")} == {
            k: v for k, v in rb.items() if k not in ("wall_time_s", "sec_per_step")
        }


def test_a_resumed_run_exports_where_the_run_was_going(tmp_path: Path) -> None:
    """--resume without --store/--name keeps the checkpoint's (once it fell back to the
    parser's defaults, model_store/facegen); given explicitly, they still win."""
    import json

    from training.checkpoint import CHECKPOINT_JSON
    from training.cli import parse_train_args

    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT_JSON).write_text(
        json.dumps({"step": 5, "args": {"store": "runs/ft-store", "name": "faces64"}})
    )
    args = parse_train_args(["--resume", "--run-dir", str(run)])
    assert (args.store, args.name) == ("runs/ft-store", "faces64")
    args = parse_train_args(["--resume", "--run-dir", str(run), "--store", "elsewhere"])
    assert (args.store, args.name) == ("elsewhere", "faces64")
    fresh = parse_train_args(["--run-dir", str(run)])
    assert (fresh.store, fresh.name) == ("model_store", "facegen")
