"""The CPU image built and run under podman with Prometheus (scripts/podman_stack.py), for real.

Slow (minutes: a Debian base with mmdebstrap, then the image build) and opt-in: ``pytest -m slow
tests/deploy/test_podman_stack.py``. Needs podman, runc and mmdebstrap (Debian packages) and
the package registries; skips without the tools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("podman", "runc", "mmdebstrap")),
        reason="needs podman, runc and mmdebstrap (apt-get install podman runc mmdebstrap)",
    ),
]


def test_image_builds_and_the_stack_runs_healthy(tiny_store: Path) -> None:
    # The container runs as uid 10001: the store it mounts must be world-readable.
    store = Path(tempfile.mkdtemp(prefix="facegen-store-"))
    try:
        shutil.copytree(tiny_store, store, dirs_exist_ok=True)
        for path in [store, *store.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        out = store / "report.json"
        proc = subprocess.run(
            [sys.executable, "scripts/podman_stack.py", "--model-store", str(store), "--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3000,
        )
        assert out.exists(), proc.stderr[-4000:]
        report = json.loads(out.read_text())
        assert report["ok"] and proc.returncode == 0, report
        assert report["generate"] == {
            "status": 200,
            "type": "image/png",
            "bytes": report["generate"]["bytes"],
        }
        assert report["model"]["model"] == "tiny" and report["prometheus_model_info"]["name"] == "tiny"
        assert (
            report["prometheus_alert_rules"] >= 1 and report["drained"] and report["service_exit_code"] == 0
        )
    finally:
        shutil.rmtree(store, ignore_errors=True)
