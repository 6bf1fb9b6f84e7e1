"""``python -m bench.refine`` end to end on a tiny model: a real server, real HTTP. No timing
assertions (the CPU is shared): every refine value was timed and both halves of part 2 ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import refine
from tests.service.live import tiny_artifact

pytestmark = pytest.mark.slow  # a real server: ~10 s


@pytest.mark.timeout(180)
def test_refine_bench_times_each_value_and_the_faces_beside_a_refinement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    tiny_artifact(store)
    out = tmp_path / "refine.json"
    args = ["--store", str(store), "--steps", "5", "20", "--repeats", "2", "--busy-steps", "300"]
    assert refine.main([*args, "--faces", "4", "--threads", "1", "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert [r["refine"] for r in m["reconstruct"]] == [0, 5, 20]
    assert m["reconstruct"][0]["ratio"] == 1.0 and m["reconstruct"][2]["ms_per_step"] is not None
    assert m["generate_idle_ms"]["p50"] > 0 and m["generate_during_refine_ms"]["p50"] > 0
    assert m["busy_refine_s"] is not None  # the long refinement finished at least once
    assert m["env"]["FACEGEN_MAX_REFINE_STEPS"] == "300"
    assert "while refine=300 of 1 face(s) runs" in capsys.readouterr().out
