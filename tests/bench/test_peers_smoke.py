"""``python -m bench --peers --smoke`` end to end: facegen, TorchServe and PyTriton on the tiny
model, real HTTP. Needs the `peers` extra and Java (skipped without them). No timing
assertions (the CPU is shared): every system served every cell without errors, the peers'
pixels and PNG bytes equal facegen's, and the JSON carries the counters and the ratios."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MISSING = [m for m in ("ts", "model_archiver", "pytriton") if importlib.util.find_spec(m) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.peers,
    pytest.mark.skipif(bool(MISSING), reason=f"the peers extra is not installed (no {', '.join(MISSING)})"),
    pytest.mark.skipif(
        shutil.which("java") is None, reason="TorchServe needs Java (openjdk-17-jre-headless)"
    ),
]


@pytest.mark.timeout(600)
def test_peers_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "peers.json"
    cmd = [sys.executable, "-m", "bench", "--peers", "--smoke", "--random-model", "tiny", "--rounds", "1"]
    cmd += ["--concurrency", "1,4", "--torch-threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Ratios facegen / peer" in proc.stdout

    result = json.loads(out.read_text())
    for peer in ("torchserve", "pytriton"):
        same = result["identity"][peer]
        assert same["max_abs_diff"] == 0 and same["png_bytes_identical"], same
    cells = result["cells"]
    assert {(c["system"], c["concurrency"]) for c in cells} == {
        (s, c) for s in ("facegen", "torchserve", "pytriton") for c in (1, 4)
    }
    for c in cells:
        assert c["requests"] > 0 and c["errors"] == 0, c
        assert c["rows_per_call"] is not None and c["rows_per_call"] >= 1.0, c
        assert c["server_cpu_ms_per_request"] > 0 and c["rss_mib"] > 0, c
    assert set(result["ratios_facegen_over_peer"]) == {"torchserve", "pytriton"}
