"""The Prometheus files, checked by Prometheus's own promtool (Debian package `prometheus`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROM_DIR / "alerts.yml"
EXPECTED_ALERTS = {
    "FacegenDown",
    "FacegenAbsent",
    "FacegenHighLatencyP99",
    "FacegenHighErrorRate",
    "FacegenQueueSaturated",
    "FacegenQueueWaitHigh",
}

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package prometheus; scripts/system-deps.sh "
    "installs it when run as root, as `make test` does in CI)",
)


def promtool(*args: str) -> str:
    result = subprocess.run(["promtool", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout + result.stderr


@needs_promtool
def test_config_is_valid_and_loads_the_rules() -> None:
    out = promtool("check", "config", str(PROM_DIR / "prometheus.yml"))
    assert "SUCCESS: 1 rule files found" in out


@needs_promtool
def test_rules_are_valid() -> None:
    out = promtool("check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in out


@needs_promtool
def test_alerts_fire_when_they_should() -> None:
    assert "SUCCESS" in promtool("test", "rules", str(Path(__file__).with_name("alerts_test.yml")))


def test_every_alert_is_documented_and_unit_tested() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    tests = yaml.safe_load(Path(__file__).with_name("alerts_test.yml").read_text())["tests"]
    firing = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    assert firing == EXPECTED_ALERTS, "every alert needs a promtool case where it fires"
    for r in rules:
        assert r["labels"]["severity"] in {"warning", "critical"}
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        assert r.get("for"), f"{r['alert']}: a `for:` delay keeps one bad scrape from paging"
