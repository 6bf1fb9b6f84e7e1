"""A real Prometheus, with the shipped scrape config, scrapes a live service under traffic; the
dashboard's own queries then answer through Prometheus's HTTP API.

The scrape config is derived from deploy/prometheus/prometheus.yml, changing only what cannot
work outside compose: the facegen job's DNS discovery becomes a static loopback target, and the
intervals shrink from 5 s to 1 s so that the test takes seconds. The alert rules are loaded too.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.conftest import free_port, stop, wait_until
from tests.deploy.traffic import send_mixed_traffic

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "facegen.json"
# What Grafana substitutes for $__rate_interval at a 1 s scrape interval, with room to spare.
RATE_WINDOW = "20s"
MODEL_ENDPOINTS = "/generate|/decode|/encode|/reconstruct|/interpolate"
# Queries that need something this CPU test service cannot produce.
NO_DATA_EXPECTED = {
    "facegen_gpu_memory_allocated_bytes": "exported on CUDA only",
    "facegen_rejected_total": "no request is refused under this light load",
}

pytestmark = [
    pytest.mark.slow,  # a real Prometheus scraping a real server until every query answers
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus is not installed (Debian package prometheus; scripts/system-deps.sh "
        "installs it when run as root, as `make test` does in CI)",
    ),
]


def derived_config(service_port: int, prometheus_port: int) -> dict[str, Any]:
    cfg = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    facegen = jobs["facegen"]
    assert set(facegen) >= {"dns_sd_configs", "scrape_interval", "metrics_path"}
    (sd,) = facegen.pop("dns_sd_configs")
    assert sd["port"] == 8000  # the container port the test's loopback port stands in for
    facegen.update(
        static_configs=[{"targets": [f"127.0.0.1:{service_port}"]}],
        scrape_interval="1s",
        scrape_timeout="1s",
    )
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    return cfg


@pytest.fixture(scope="module")
def prometheus(live_service: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    service_port = int(live_service.rsplit(":", 1)[1])
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(derived_config(service_port, port)))
    for rule_file in yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["rule_files"]:
        shutil.copy(PROM_DIR / rule_file, workdir / rule_file)
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, f"prometheus exited:\n{log_path.read_text()}"
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 20, "Prometheus to be ready")
        yield url
    finally:
        stop(proc)


def served_model_requests(service: str) -> float:
    """The service's own count of requests to the model endpoints, from its /metrics."""
    text = httpx.get(f"{service}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("facegen_requests_total{") and re.search(f'endpoint="({MODEL_ENDPOINTS})"', line)
    )


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body["status"] == "success", f"{expr}: {body.get('error')}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(r["value"][1]) for r in result]


def dashboard_queries() -> dict[str, list[str]]:
    """{panel title: its expressions, with Grafana's $__rate_interval filled in}."""
    panels = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]
    return {
        p["title"]: [t["expr"].replace("$__rate_interval", RATE_WINDOW) for t in p["targets"]] for p in panels
    }


def test_dashboard_queries_answer_through_prometheus(prometheus: str, live_service: str) -> None:
    # The service target is scraped and healthy.
    def target_up() -> bool:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]
        return any(t["labels"]["job"] == "facegen" and t["health"] == "up" for t in targets["activeTargets"])

    wait_until(target_up, 15, "Prometheus to scrape the service")

    # Traffic for a few seconds, several clients at once so that rows share batches.
    before = served_model_requests(live_service)
    sent = send_mixed_traffic(live_service, rounds=3, clients=4)

    # Prometheus has seen all of it: its counter reaches exactly what the service counted.
    expected = before + sent
    counted = f'sum(facegen_requests_total{{endpoint=~"{MODEL_ENDPOINTS}"}})'

    def all_counted() -> bool:
        result = query(prometheus, counted)
        return bool(result) and values(result)[0] >= expected

    wait_until(all_counted, 10, f"Prometheus to count the {sent} requests sent")
    assert values(query(prometheus, counted)) == [expected]

    queries = dashboard_queries()
    results = {expr: query(prometheus, expr) for exprs in queries.values() for expr in exprs}
    for expr, result in results.items():
        if any(name in expr for name in NO_DATA_EXPECTED):
            continue
        assert result, f"dashboard query returned no data: {expr}"
        assert any(math.isfinite(v) for v in values(result)), f"only NaN/Inf from {expr}"

    (request_rate,) = queries["Request rate by endpoint and status"]
    rates = values(results[request_rate])
    assert all(math.isfinite(r) and r >= 0 for r in rates) and max(rates) > 0

    latencies = [
        v
        for expr in queries["Request latency by endpoint (p50 / p95 / p99)"]
        for v in values(results[expr])
        if math.isfinite(v)  # NaN for an endpoint with no request in the window
    ]
    assert latencies and all(0 < v < 5 for v in latencies), latencies

    (batch_size,) = queries["Mean batch size by op"]
    sizes = [v for v in values(results[batch_size]) if math.isfinite(v)]
    assert sizes and all(v >= 1 for v in sizes), sizes
    print(
        f"\n{sent} requests; peak request rate {max(rates):.2f}/s; latency quantiles "
        f"{min(latencies):.3f}-{max(latencies):.3f} s; mean batch size by op {sizes}"
    )


def test_alert_rules_evaluate_cleanly(prometheus: str) -> None:
    def evaluated() -> bool:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return bool(rules) and all(r.get("lastEvaluation", "").startswith("2") for r in rules)

    wait_until(evaluated, 10, "Prometheus to evaluate the alert rules")
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 6
    bad = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not bad
    # A healthy service under light load raises no alert.
    firing = [r["name"] for r in rules if r["state"] == "firing"]
    assert not firing
