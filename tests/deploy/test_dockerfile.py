"""The image recipe, checked without a Docker engine: stages, user, settings, healthcheck, context."""

from __future__ import annotations

import http.server
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.deploy.dockerfiles import DockerIgnore, Stage, parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
RUNTIME_TARGETS = ("cpu", "cuda")
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"

GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE)


def test_targets_and_bases() -> None:
    assert set(RUNTIME_TARGETS) <= set(STAGES), f"stages are {sorted(STAGES)}"
    torch_version = GLOBAL_ARGS["TORCH_VERSION"]
    # The image's torch is the one the tests ran with here.
    assert torch.__version__.split("+")[0] == torch_version
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", STAGES["cpu"].base)
    assert STAGES["cuda"].base.startswith(f"pytorch/pytorch:{torch_version}-cuda12.")
    assert STAGES["cuda"].base.endswith("-runtime")
    (install,) = [a for a in STAGES["cpu"].all("RUN") if "torch==" in a]
    assert "${TORCH_PIP_ARGS}" in install and '"torch==${TORCH_VERSION}"' in install
    assert GLOBAL_ARGS["TORCH_PIP_ARGS"].strip('"') == CPU_INDEX
    assert not any("torch" in a for a in STAGES["cuda"].all("RUN")), "the CUDA base brings torch"


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_runtime_stage(target: str) -> None:
    stage = STAGES[target]
    env = stage.env()
    assert env["FACEGEN_HOST"] == "0.0.0.0" and env["FACEGEN_PORT"] == "8000"
    assert env["FACEGEN_DEVICE"] == target
    store = env["FACEGEN_MODEL_STORE"]
    assert f"model_store/ {store}/" in stage.all("COPY")
    (user,) = stage.all("USER")
    assert user not in {"root", "0"}
    (useradd,) = [a for a in stage.all("RUN") if "useradd" in a]
    uid = re.search(r"--uid (\d+)", useradd)
    assert useradd.endswith(f" {user}") and uid and int(uid[1]) >= 1000
    assert stage.all("EXPOSE") == ["8000"]
    assert shlex.split(stage.all("CMD")[-1].replace(",", " ").strip("[]")) == ["python", "-m", "service"]
    (health,) = stage.all("HEALTHCHECK")
    assert "--start-period=" in health
    assert health.endswith('CMD ["python", "/opt/facegen/healthcheck.py"]')
    assert "docker/healthcheck.py /opt/facegen/healthcheck.py" in stage.all("COPY")
    # USER comes after every RUN, so nothing at run time has root rights.
    kinds = [kw for kw, _ in stage.instructions]
    assert kinds.index("USER") > max(i for i, kw in enumerate(kinds) if kw == "RUN")


def _portable(stage: Stage) -> list[tuple[str, str]]:
    """The stage without what legitimately differs between CPU and CUDA."""
    out = []
    for kw, args in stage.instructions:
        if kw == "ARG" or (kw == "RUN" and "torch==" in args) or kw == "ENV":
            continue
        out.append((kw, args))
    return out


def test_cpu_and_cuda_stages_stay_in_step() -> None:
    cpu, cuda = STAGES["cpu"], STAGES["cuda"]
    assert _portable(cpu) == _portable(cuda)
    differ = {"FACEGEN_DEVICE", "PIP_BREAK_SYSTEM_PACKAGES"}
    strip = lambda env: {k: v for k, v in env.items() if k not in differ}  # noqa: E731
    assert strip(cpu.env()) == strip(cuda.env())


def test_dockerignore_keeps_the_context_small() -> None:
    ignore = DockerIgnore(ROOT / ".dockerignore")
    for path in [
        ".git/HEAD",
        ".venv/bin/python",
        "runs/exp1/ckpt.pt",
        "data_cache/celeba/x.npy",
        "tests/deploy/test_compose.py",
        "training/cli.py",
        "bench/load.py",
        "celeba-10k.zip",
        "model_store/faces.zip",
        "facegen_core/__pycache__/config.cpython-311.pyc",
        "service/app.pyc",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        "Makefile",
        "docker/Dockerfile",
        "deploy/grafana/dashboards/facegen.json",
    ]:
        assert ignore.excluded(path), f"{path} would be sent to the Docker build"
    for path in [
        "pyproject.toml",
        "README.md",
        "facegen_core/networks.py",
        "service/__main__.py",
        "docker/healthcheck.py",
        "model_store/faces/1/model.safetensors",
        "model_store/store.json",
    ]:
        assert not ignore.excluded(path), f"{path} is needed by the build but ignored"


def test_every_copy_source_is_in_the_context() -> None:
    ignore = DockerIgnore(ROOT / ".dockerignore")
    for stage in STAGES.values():
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _dest = args.split()
            for src in sources:
                if src == "model_store/":  # filled by training; empty in a fresh clone
                    assert not ignore.excluded("model_store/x/1/config.json")
                    continue
                path = ROOT / src
                assert path.exists(), f"COPY {src}: no such file in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
                assert files, f"COPY {src} copies nothing"
                for f in files:
                    rel = f.relative_to(ROOT).as_posix()
                    if "__pycache__" not in rel:
                        assert not ignore.excluded(rel), f"{rel} is copied but .dockerignore drops it"


# --- docker/healthcheck.py, against real HTTP servers ------------------------------------------


def _probe(url: str) -> subprocess.CompletedProcess[str]:
    env = {"FACEGEN_HEALTHCHECK_URL": url, "FACEGEN_HEALTHCHECK_TIMEOUT": "2", "PATH": ""}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], env=env, capture_output=True, text=True, timeout=20
    )


@pytest.fixture()
def fixed_status_server() -> Iterator[tuple[str, list[int]]]:
    status = [503]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/readyz", status
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_follows_the_readiness_status(
    fixed_status_server: tuple[str, list[int]],
) -> None:
    url, status = fixed_status_server
    loading = _probe(url)
    assert loading.returncode == 1 and "HTTP 503" in loading.stderr
    status[0] = 200
    assert _probe(url).returncode == 0


def test_healthcheck_fails_when_nothing_listens(
    fixed_status_server: tuple[str, list[int]],
) -> None:
    url, _ = fixed_status_server
    closed = url.rsplit(":", 1)[0] + ":1/readyz"
    result = _probe(closed)
    assert result.returncode == 1 and "not ready" in result.stderr


@pytest.mark.slow  # starts the real service (tests/deploy/conftest.py)
def test_healthcheck_against_the_live_service(live_service: str) -> None:
    assert _probe(f"{live_service}/readyz").returncode == 0
