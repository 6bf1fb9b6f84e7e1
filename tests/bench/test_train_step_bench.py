"""``python -m bench.train_step``: one row per part, layout and native precision, each step run."""

from __future__ import annotations

import pytest
import torch

from bench import train_step


def test_prints_every_variant_and_runs_their_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert train_step.main(["--config", "tiny", "--batch-size", "4", "--steps", "1", "--device", "cpu"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    precs = train_step.precisions(torch.device("cpu"))
    assert len(rows) == 2 * 2 * len(precs)  # parts × layouts × precisions
    layouts = {(r[-4], r[-3]) for r in rows}
    assert layouts == {(fmt, p) for fmt in ("NCHW", "channels_last") for p in precs}
    for r in rows:
        assert float(r[-2]) > 0.0 and r[-1].endswith("×")


def test_the_layout_flag_reaches_the_networks_and_the_batch() -> None:
    """--memory-format contiguous trains NCHW; the default converts the networks to NHWC."""
    for fmt, want in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        nets, scfg = train_step.build("VAE-GAN", "tiny", 4, "cpu", fmt, "fp32")
        assert scfg.torch_memory_format == want
        convs = [m.weight for m in nets.decoder.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(w.is_contiguous(memory_format=want) for w in convs)
        if fmt == "channels_last":
            assert not convs[0].is_contiguous()
