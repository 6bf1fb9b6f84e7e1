"""``python -m bench --smoke`` end to end: two real servers on a tiny model, real HTTP.

No timing assertions (the CPU is shared); only that every workload was measured on both
servers, that batching off really sent one row per model call, and that the JSON carries
the ratios and the target checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = {"gen1", "gen16", "recon", "interp16"}

pytestmark = [
    pytest.mark.slow,  # two servers under load for every workload: ~30 s
    pytest.mark.skipif(
        not (ROOT / "service" / "__main__.py").is_file(),
        reason="the service (python -m service) is not written yet",
    ),
]


@pytest.mark.timeout(120)
def test_smoke_run_measures_every_workload_on_both_servers(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--random-model",
            "tiny",
            "--torch-threads",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "share this machine's CPU" in proc.stdout and "Targets" in proc.stdout

    result = json.loads(out.read_text())
    assert result["meta"]["mode"] == "smoke"
    for server in ("off", "on"):
        cells = [c for c in result["cells"] if c["server"] == server]
        assert {c["workload"] for c in cells} == WORKLOADS
        for c in cells:
            assert c["stats"]["requests"] > 0 and c["stats"]["errors"] == 0, c
            assert c["stats"]["images_per_s"] > 0 and c["stats"]["p99_ms"] >= c["stats"]["p50_ms"]
    for c in (c for c in result["cells"] if c["server"] == "off"):
        # max_batch_size=1: every model call holds exactly one row.
        assert c["rows_per_call"][c["op"]] == pytest.approx(1.0), c

    ratios = {(r["workload"], r["concurrency"]): r for r in result["ratios"]}
    assert {w for w, _ in ratios} == WORKLOADS
    for r in ratios.values():
        assert r["on_over_off"] > 0 and r["on_over_ceiling"] > 0
    ceiling = result["ceiling"]
    assert ceiling["batch_1"]["batch_size"] == 1 and ceiling["batch_max"]["batch_size"] == 64
    assert ceiling["raw_gain"] == pytest.approx(
        ceiling["batch_max"]["images_per_s"] / ceiling["batch_1"]["images_per_s"]
    )
    names = [t["name"] for t in result["targets"]]
    assert len(names) == 3 and [n[:2] for n in names] == ["T1", "T2", "T3"]
    t3 = result["targets"][2]
    assert t3["passed"] in (True, False) and t3["threshold"] == pytest.approx(
        2 * ceiling["batch_1"]["batch_p50_ms"]
    )
