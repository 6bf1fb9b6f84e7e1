"""The compose stack's images built and run for real with podman, where no registry is reachable.

    python scripts/podman_stack.py [--out report.json] [--keep]

Where there is no Docker engine and base images cannot be pulled (this machine, CI):

1. a base image from Debian packages: ``mmdebstrap`` (python3, pip, CA certificates) into a
   tar, then ``podman import`` as localhost/facegen-base:bookworm (skipped when present);
2. the CPU image from docker/Dockerfile (target ``cpu``) with
   ``--build-arg PYTHON_IMAGE=localhost/facegen-base:bookworm``; torch from a local CPU wheel
   directory when there is one (``--torch-wheels``, /opt/wheels here), else PyTorch's CPU index;
3. Prometheus from Debian's package (deploy/podman/prometheus.Containerfile), standing in for
   prom/prometheus;
4. the service started the way deploy/kubernetes runs it: uid 10001, read-only root filesystem,
   a tmpfs /tmp and the repository's model_store mounted read-only at /models; Prometheus with
   deploy/prometheus's config and alert rules (the facegen job's DNS discovery replaced by the
   service's loopback address: the containers share the host's network namespace, as
   podman's bridge networks need a DNS plugin this machine lacks);
5. checks: the image's own health check passes, one seeded /generate answers a PNG, Prometheus
   scrapes the target (health "up") and has facegen_model_info, the alert rules loaded; then
   ``podman stop`` (SIGTERM) drains and the container exits 0 within the grace period.

Grafana is not run: its image cannot be pulled and no package registry reachable here ships
it (docs/deploy.md says what ran). Every podman call uses ``--runtime runc
--cgroup-manager=cgroupfs`` and explicit ulimits (this machine's hard limits are lower than
podman's defaults). Prints a JSON report; exit 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/facegen-base:bookworm"
IMAGE = "localhost/facegen:cpu"
PROM_IMAGE = "localhost/facegen-prometheus:bookworm"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
BASE_PACKAGES = "python3,python3-pip,python-is-python3,ca-certificates,passwd"
DEBIAN = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # the host's, proxy CAs included


def podman(
    *args: str, check: bool = True, timeout: float = 1800, quiet: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = [*PODMAN, *args]
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not quiet and proc.returncode != 0:
        print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {args[0]} failed with {proc.returncode}: {proc.stderr[-1500:]}")
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False, quiet=True).returncode == 0


def build_base(workdir: Path) -> None:
    tar = workdir / "base.tar"
    cmd = ["mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(tar), *DEBIAN]
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, capture_output=True, timeout=1800)
    podman("import", "--change", 'CMD ["python3"]', str(tar), BASE_IMAGE)
    tar.unlink()


def build_args(torch_wheels: Path | None) -> list[str]:
    args = ["--pull=never", "--network", "host", *ULIMITS]
    if CA_BUNDLE.exists():  # a TLS-intercepting proxy's CA must be trusted inside the build too
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    if torch_wheels is not None:
        args += [
            "-v",
            f"{torch_wheels}:/torch-wheels:ro",
            "--build-arg",
            "TORCH_PIP_ARGS=--find-links /torch-wheels",
        ]
    return args


def prometheus_config(service_port: int, prometheus_port: int) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with loopback targets instead of compose's DNS names."""
    cfg = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval="2s", evaluation_interval="2s")
    for job in cfg["scrape_configs"]:
        if job["job_name"] == "facegen":
            job.pop("dns_sd_configs")
            job["static_configs"] = [{"targets": [f"127.0.0.1:{service_port}"]}]
        else:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    return cfg


def wait(predicate: Any, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            if predicate():
                return round(time.monotonic() - start, 1)
        except (httpx.HTTPError, KeyError, ValueError, IndexError):
            pass
        time.sleep(1)
    raise RuntimeError(f"Timed out after {timeout_s:.0f} s waiting for {what}.")


def run_stack(args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
    svc_port, prom_port = free_port(), free_port()
    svc, prom = f"facegen-stack-{svc_port}", f"facegen-prom-{prom_port}"
    url, prom_url = f"http://127.0.0.1:{svc_port}", f"http://127.0.0.1:{prom_port}"
    prom_dir = workdir / "prometheus"
    prom_dir.mkdir()
    (prom_dir / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(svc_port, prom_port)))
    shutil.copy(ROOT / "deploy" / "prometheus" / "alerts.yml", prom_dir / "alerts.yml")
    os.chmod(prom_dir, 0o755)
    try:
        podman(
            "run", "-d", "--name", svc, "--network", "host", *ULIMITS,
            "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001",
            "-v", f"{args.model_store}:/models:ro",
            "-e", "FACEGEN_MODEL_STORE=/models", "-e", "FACEGEN_HOST=127.0.0.1",
            "-e", f"FACEGEN_PORT={svc_port}", "-e", "FACEGEN_DRAIN_DELAY_S=2",
            "-e", "FACEGEN_TORCH_THREADS=1", "-e", "FACEGEN_WARMUP_BATCH_SIZES=[1]",
            IMAGE,
        )  # fmt: skip
        podman(
            "run", "-d", "--name", prom, "--network", "host", *ULIMITS, "--tmpfs", "/prometheus:rw,mode=1777",
            "-v", f"{prom_dir}:/etc/prometheus:ro", PROM_IMAGE,
            "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        )  # fmt: skip
        report["service_ready_s"] = wait(
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, args.timeout, "/readyz 200"
        )
        health = podman("exec", svc, "python", "/opt/facegen/healthcheck.py", check=False)
        report["image_healthcheck_rc"] = health.returncode
        r = httpx.post(f"{url}/generate", json={"n": 4, "seed": 7}, timeout=60)
        report["generate"] = {
            "status": r.status_code,
            "type": r.headers.get("content-type"),
            "bytes": len(r.content),
        }
        report["model"] = httpx.get(f"{url}/readyz", timeout=5).json()

        def scraped() -> bool:
            targets = httpx.get(f"{prom_url}/api/v1/targets", timeout=3).json()["data"]["activeTargets"]
            report["prometheus_targets"] = {t["labels"]["job"]: t["health"] for t in targets}
            return report["prometheus_targets"].get("facegen") == "up"

        report["prometheus_scrape_up_s"] = wait(scraped, 120, "Prometheus to scrape facegen")

        def model_info() -> bool:
            q = httpx.get(
                f"{prom_url}/api/v1/query", params={"query": "facegen_model_info"}, timeout=3
            ).json()
            report["prometheus_model_info"] = q["data"]["result"][0]["metric"]
            return True

        wait(model_info, 60, "facegen_model_info in Prometheus")
        rules = httpx.get(f"{prom_url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        report["prometheus_alert_rules"] = sum(len(g["rules"]) for g in rules)
        start = time.monotonic()
        podman("stop", "-t", "45", svc)
        report["stop_s"] = round(time.monotonic() - start, 1)
        state = podman("inspect", svc, "--format", "{{.State.ExitCode}}").stdout.strip()
        report["service_exit_code"] = int(state)
        logs = podman("logs", svc, check=False, quiet=True)
        report["drained"] = "draining" in (logs.stdout + logs.stderr)
    finally:
        for name in (svc, prom):
            if args.keep:
                continue
            podman("rm", "-f", name, check=False, quiet=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument(
        "--model-store", type=Path, default=ROOT / "model_store", help="mounted read-only at /models"
    )
    p.add_argument(
        "--torch-wheels",
        type=Path,
        default=Path("/opt/wheels"),
        help="dir with a CPU torch wheel (if it exists)",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the base image even when present")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds the service may take to be ready")
    p.add_argument("--keep", action="store_true", help="leave the containers running")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = p.parse_args(argv)
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not installed (apt-get install podman runc mmdebstrap).")
    args.model_store = args.model_store.resolve()
    torch_wheels = (
        args.torch_wheels
        if args.torch_wheels.is_dir() and any(args.torch_wheels.glob("torch-*+cpu-*.whl"))
        else None
    )
    report: dict[str, Any] = {
        "podman": podman("--version").stdout.strip(),
        "grafana": "not run: no image or package reachable",
    }
    workdir = Path(tempfile.mkdtemp(prefix="facegen-podman-"))
    try:
        t = time.monotonic()
        if args.rebuild or not image_exists(BASE_IMAGE):
            build_base(workdir)
        report["base_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        podman(
            "build", *build_args(torch_wheels), "-f", "docker/Dockerfile", "--target", "cpu",
            "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}", "-t", IMAGE, str(ROOT),
        )  # fmt: skip
        report["build_cpu_image_s"] = round(time.monotonic() - t, 1)
        podman(
            "build", *build_args(None), "-f", str(ROOT / "deploy" / "podman" / "prometheus.Containerfile"),
            "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "-t", PROM_IMAGE, str(ROOT / "deploy" / "podman"),
        )  # fmt: skip
        size = podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip()
        report["cpu_image_mb"] = round(int(size) / 1e6)
        run_stack(args, workdir, report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = (
        report.get("image_healthcheck_rc") == 0
        and report.get("generate", {}).get("status") == 200
        and report.get("prometheus_targets", {}).get("facegen") == "up"
        and report.get("service_exit_code") == 0
        and report.get("drained") is True
    )
    report["ok"] = ok
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
