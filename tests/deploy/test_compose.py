"""docker-compose.yml and its CPU variant.

Validated by docker-compose itself where installed (Debian's docker-compose 1.29: it knows
device reservations and profiles), and checked against the Dockerfile, the Prometheus and
Grafana files they mount, and the service's settings: mistakes no engine would report before
`docker compose up` fails at run time.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings
from tests.deploy.dockerfiles import parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]
GPU_FILE, CPU_FILE = "docker-compose.yml", "docker-compose.cpu.yml"
GPU_RESERVATION = {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}

needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose is not installed (Debian package docker-compose; "
    "scripts/system-deps.sh installs it when run as root, as `make test` does in CI)",
)


def raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def compose_config(name: str) -> tuple[str, dict[str, Any]]:
    """`docker-compose -f NAME config`, with none of the variables the files read set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FACEGEN_", "GRAFANA_", "PROMETHEUS_", "COMPOSE_"))
    }
    result = subprocess.run(
        ["docker-compose", "--project-directory", str(ROOT), "-f", str(ROOT / name), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"docker-compose rejects {name}:\n{result.stderr}"
    return result.stdout, yaml.safe_load(result.stdout)


@needs_compose
def test_gpu_file_validates_with_gpu_reservation_and_healthcheck() -> None:
    text, cfg = compose_config(GPU_FILE)
    assert "driver: nvidia" in text and "- gpu" in text and "healthcheck.py" in text
    svc = cfg["services"]["facegen"]
    assert svc["deploy"]["resources"]["reservations"]["devices"] == [GPU_RESERVATION]
    assert svc["healthcheck"]["test"] == ["CMD", "python", "/opt/facegen/healthcheck.py"]
    assert svc["build"]["target"] == "cuda" and svc["environment"]["FACEGEN_DEVICE"] == "cuda"
    published = {s: {p["published"] for p in c["ports"]} for s, c in cfg["services"].items()}
    assert published == {"facegen": {8000}, "prometheus": {9090}, "grafana": {3000}}
    assert {"model_store", "prometheus_data"} <= set(cfg["volumes"])
    for name in ("prometheus", "grafana"):
        assert "healthcheck" in cfg["services"][name]


@needs_compose
def test_cpu_file_is_the_gpu_stack_without_the_gpu() -> None:
    _, gpu = compose_config(GPU_FILE)
    text, cpu = compose_config(CPU_FILE)
    assert "nvidia" not in text
    g, c = copy.deepcopy(gpu["services"]), copy.deepcopy(cpu["services"])
    assert "deploy" not in c["facegen"]
    assert c["facegen"]["build"]["target"] == "cpu"
    assert c["facegen"]["environment"]["FACEGEN_DEVICE"] == "cpu"
    for svc, want in ((g["facegen"], "cuda"), (c["facegen"], "cpu")):
        svc.pop("deploy", None)
        assert svc["build"].pop("target") == want
        assert svc["environment"].pop("FACEGEN_DEVICE") == want
        assert svc.pop("image") == f"facegen:{want}"
    for services in (g, c):
        for svc in services.values():
            svc["volumes"] = sorted(svc.get("volumes", []))
    assert g == c
    assert gpu["volumes"] == cpu["volumes"]


@needs_compose
def test_settings_and_ports_come_from_the_environment() -> None:
    env = {
        **os.environ,
        "FACEGEN_PUBLISH": "8000-8003",
        "FACEGEN_MAX_BATCH_SIZE": "32",
        "GRAFANA_ADMIN_PASSWORD": "s3cret",
    }
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / GPU_FILE), "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    services = yaml.safe_load(result.stdout)["services"]
    assert services["facegen"]["ports"][0]["published"] == "8000-8003"  # room for replicas
    assert services["facegen"]["environment"]["FACEGEN_MAX_BATCH_SIZE"] == "32"
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


# --- cross-file consistency: what `docker compose up` would only find out at run time ---------


def test_images_are_pinned() -> None:
    for name in ("prometheus", "grafana"):
        image = raw(GPU_FILE)["services"][name]["image"]
        _repo, _, tag = image.partition(":")
        assert tag and tag != "latest" and tag[-1].isdigit(), f"{name}: pin {image!r}"


def test_compose_matches_the_dockerfile() -> None:
    _, stages = parse_dockerfile(ROOT / "docker" / "Dockerfile")
    for name in (GPU_FILE, CPU_FILE):
        svc = raw(name)["services"]["facegen"]
        assert (ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        stage = stages[svc["build"]["target"]]
        env = stage.env()
        (store_mount,) = svc["volumes"]
        assert store_mount == f"model_store:{env['FACEGEN_MODEL_STORE']}"
        assert svc["ports"] == ["${FACEGEN_PUBLISH:-8000}:" + env["FACEGEN_PORT"]]
        assert svc["healthcheck"]["test"][1:] == ["python", "/opt/facegen/healthcheck.py"]


def test_every_facegen_variable_is_a_service_setting() -> None:
    # A misspelt variable would be ignored silently by the service (extra="ignore").
    fields = {f"FACEGEN_{name.upper()}" for name in Settings.model_fields}
    _, stages = parse_dockerfile(ROOT / "docker" / "Dockerfile")
    names = {k for stage in stages.values() for k in stage.env() if k.startswith("FACEGEN_")}
    for name in (GPU_FILE, CPU_FILE):
        for entry in raw(name)["services"]["facegen"]["environment"]:
            names.add(entry.split("=", 1)[0])
    assert len(names) > 8 and names <= fields, sorted(names - fields)


def test_monitoring_mounts_point_at_the_shipped_files() -> None:
    services = raw(GPU_FILE)["services"]
    mounts = {
        svc: {m.split(":")[1]: m.split(":")[0] for m in services[svc]["volumes"]}
        for svc in ("prometheus", "grafana")
    }
    prom_dir = ROOT / mounts["prometheus"]["/etc/prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    prom = yaml.safe_load((prom_dir / "prometheus.yml").read_text())
    for rule_file in prom["rule_files"]:
        assert (prom_dir / rule_file).is_file()
    # Prometheus finds the facegen replicas by the compose service name, on the container port.
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "facegen"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["facegen"] and sd["port"] == 8000 and "facegen" in services

    provisioning = ROOT / mounts["grafana"]["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "facegen.yml").read_text())["providers"]
    dashboards_host = ROOT / mounts["grafana"][provider["options"]["path"]]
    assert (dashboards_host / "facegen.json").is_file()
    home = [e for e in services["grafana"]["environment"] if "HOME_DASHBOARD_PATH" in e]
    assert home == [f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH={provider['options']['path']}/facegen.json"]
