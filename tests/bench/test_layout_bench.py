"""``python -m bench.layout``: the service's passes in both layouts, timed and compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench import layout
from facegen_core.artifact import load_artifact
from tests.service.live import tiny_artifact


def test_prints_each_pass_in_both_layouts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny_artifact(tmp_path)
    out = tmp_path / "layout.json"
    argv = ["--model-store", str(tmp_path), "--rows", "1", "3", "--rounds", "1", "--min-seconds", "0"]
    assert layout.main([*argv, "--threads", "1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("facegen bench.layout: tiny v1")
    table = json.loads(out.read_text())["table"]
    assert [(r["pass"], r["rows"]) for r in table] == [
        (p, n) for p in ("decode", "encode", "refine") for n in (1, 3)
    ]
    for r in table:
        assert r["contiguous_ms_per_row"] > 0 and r["channels_last_ms_per_row"] > 0
        assert r["max_abs_diff"] < 1e-3  # the same networks: the layouts differ by rounding only
    printed = [line.split() for line in lines[2:8]]  # pass, rows, ms, ms, ratio, diff, pixels
    assert [(r[0], int(r[1])) for r in printed] == [(r["pass"], r["rows"]) for r in table]
    assert all(r[4].endswith("x") and float(r[4][:-1]) > 0 for r in printed)


def test_each_layout_runs_its_own_kernels(tmp_path: Path) -> None:
    """The copies the bench times are laid out as named, and the originals are left as loaded."""
    art = load_artifact(tiny_artifact(tmp_path))
    for fmt, want in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        fns = layout.passes(art, fmt)
        dec = fns["decode"]
        assert isinstance(dec, torch.nn.Module)
        assert dec.to_image.weight.is_contiguous(memory_format=want)
    assert art.decoder.to_image.weight.is_contiguous()
