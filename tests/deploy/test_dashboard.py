"""The Grafana dashboard and the alert rules query only what the service really exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.promql import exposed_series, metric_names, unknown_names
from tests.deploy.traffic import send_mixed_traffic

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "facegen.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# Series Prometheus makes itself for every target: not the service's to export.
PROMETHEUS_SYNTHETIC = {"up"}
# Exported only when the service runs on CUDA (torch.cuda.memory_allocated); a CPU test service
# cannot show it. The one metric the dashboard may use without a live service exporting it here.
CUDA_ONLY = {"facegen_gpu_memory_allocated_bytes"}
# The metric families the service promises (its /metrics contract); the dashboard is built on them.
SERVICE_FAMILIES = {
    "facegen_requests": "counter",
    "facegen_request_duration_seconds": "histogram",
    "facegen_batch_size": "histogram",
    "facegen_queue_wait_seconds": "histogram",
    "facegen_inference_duration_seconds": "histogram",
    "facegen_queue_depth": "gauge",
    "facegen_images": "counter",
    "facegen_rejected": "counter",
    "facegen_model_info": "gauge",
}


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "facegen-service" and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{p['title']!r} sticks out of the grid"
        area = {(g["x"] + i, g["y"] + j) for i in range(g["w"]) for j in range(g["h"])}
        assert not cells & area, f"{p['title']!r} overlaps another panel"
        cells |= area
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
        assert p["targets"] and p["description"], p["title"]
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip()


def test_dashboard_shows_what_operators_need() -> None:
    exprs = "\n".join(dashboard_exprs())
    for needle in [
        "sum by (endpoint, status) (rate(facegen_requests_total",  # rate by endpoint and status
        "histogram_quantile(0.5, sum by (le, endpoint) (rate(facegen_request_duration_seconds",
        "histogram_quantile(0.95, sum by (le, endpoint) (rate(facegen_request_duration_seconds",
        "histogram_quantile(0.99, sum by (le, endpoint) (rate(facegen_request_duration_seconds",
        "facegen_batch_size_bucket",  # distribution
        "facegen_queue_depth",
        "facegen_queue_wait_seconds_bucket",
        "rate(facegen_images_total",
        "facegen_gpu_memory_allocated_bytes",
    ]:
        assert needle in exprs, f"no panel queries {needle!r}"


def test_names_are_extracted_from_the_real_expressions() -> None:
    # Guards the check below against a tokenizer that finds nothing and so passes anything.
    names = set().union(*(metric_names(e) for e in dashboard_exprs() + alert_exprs()))
    assert {
        "facegen_requests_total",
        "facegen_request_duration_seconds_bucket",
        "facegen_batch_size_sum",
        "facegen_batch_size_count",
        "facegen_gpu_memory_allocated_bytes",
        "up",
    } <= names


@pytest.fixture(scope="module")
def live_metrics(live_service: str) -> str:
    send_mixed_traffic(live_service, rounds=2)
    response = httpx.get(f"{live_service}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


@pytest.mark.slow  # against the real service's /metrics (one server start per module)
def test_service_exports_the_promised_families(live_metrics: str) -> None:
    declared = {
        line.split()[2].removesuffix("_total"): line.split()[3]
        for line in live_metrics.splitlines()
        if line.startswith("# TYPE facegen_")
    }
    for family, kind in SERVICE_FAMILIES.items():
        assert declared.get(family) == kind, f"/metrics lacks {kind} {family}"


@pytest.mark.slow  # against the real service's /metrics (one server start per module)
def test_every_queried_metric_is_exported(live_metrics: str) -> None:
    known = set(exposed_series(live_metrics)) | PROMETHEUS_SYNTHETIC | CUDA_ONLY
    assert not unknown_names(dashboard_exprs(), known)
    assert not unknown_names(alert_exprs(), known)


@pytest.mark.slow  # against the real service's /metrics (one server start per module)
def test_cuda_only_exception_is_still_needed(live_metrics: str) -> None:
    # If a CPU service ever exports it, the exception above must go.
    assert not CUDA_ONLY & set(exposed_series(live_metrics))
