"""schemathesis, a real OpenAPI fuzzer, against a live service: 0 failures on every check.

It reads /openapi.json from the running server and sends schema-valid and schema-violating
requests to every operation (examples, coverage and fuzzing phases), checking that nothing is a
5xx, that every status, content type, header and body is the documented one, that valid data is
accepted and invalid data refused. The model has a 16-number latent (not the tiny default 8),
so examples that ignored the served model's latent_dim would fail. Bounded: 25 examples per
operation and a fixed seed (about a minute here). Settings: tests/service/schemathesis.toml.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.service.live import ROOT, LiveService, tiny_artifact

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_finds_no_failures(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    tiny_artifact(store, latent_dim=16)
    with LiveService(store, tmp_path / "service.log", {"FACEGEN_WARMUP_BATCH_SIZES": "[1]"}) as live:
        live.wait_ready()
        cmd = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
            "run", f"{live.url}/openapi.json",
            "--checks", "all", "--max-examples", "25", "--seed", "12",
            "--generation-database", "none", "--request-timeout", "60", "--continue-on-failure",
            "--no-color",
        ]  # fmt: skip
        run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
        report = run.stdout[-6000:] + run.stderr[-2000:]
        print(report)
        # Every generated case passed. (Admin routes answer their documented 403 with keys off, the
        # default, which schemathesis reports as an "authentication failed" warning, so the
        # summary is not "No issues found"; they are tested with keys on in test_auth.py.)
        passed = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
        assert run.returncode == 0 and passed and passed[1] == passed[2], report
        assert live.proc.poll() is None
