"""scripts/select_torch.py: which torch build `make serve`/`make test` install, with the GPU
probe and the index probe replaced by stubs (and the real script run once end to end)."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "select_torch.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("select_torch", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


st = _load()
CPU = ["--index-url", st.CPU_INDEX]


def probes(gpu: bool, reachable: bool) -> dict[str, object]:
    calls: list[str] = []

    def reach(url: str) -> bool:
        calls.append(url)
        return reachable

    return {"gpu": lambda: gpu, "reachable": reach, "calls": calls}


@pytest.mark.parametrize(
    ("choice", "gpu", "reachable", "expected", "says"),
    [
        ("auto", False, True, CPU, "CPU build"),
        ("auto", False, False, [], "unreachable"),
        ("auto", True, True, [], "CUDA build"),
        ("auto", True, False, [], "CUDA build"),
        ("", False, True, CPU, "CPU build"),  # unset behaves as auto
        ("cpu", True, True, CPU, "FACEGEN_TORCH=cpu"),  # the override wins over the GPU
        ("cpu", True, False, [], "unreachable"),
        ("cuda", False, True, [], "CUDA build"),  # and over its absence
        ("default", False, True, [], "default index"),
        ("CPU", False, True, CPU, "CPU build"),
    ],
)
def test_choice(choice: str, gpu: bool, reachable: bool, expected: list[str], says: str) -> None:
    p = probes(gpu, reachable)
    args, why = st.select(choice, gpu=p["gpu"], reachable=p["reachable"])
    assert args == expected and says in why, (args, why)
    # The index is probed exactly when the CPU build is wanted.
    wants_cpu = choice.lower() == "cpu" or (choice.lower() in ("auto", "") and not gpu)
    assert p["calls"] == ([st.CPU_INDEX] if wants_cpu else [])


def test_cuda_and_default_never_probe_the_index() -> None:
    for choice in ("cuda", "default"):
        p = probes(False, True)
        st.select(choice, gpu=p["gpu"], reachable=p["reachable"])
        assert p["calls"] == []


def test_unknown_choice_is_refused_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="auto, cpu, cuda, default"):
        st.select("rocm")


def test_gpu_probe_reads_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-123)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert st.has_nvidia_gpu() is True
    fake.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    monkeypatch.setattr(st, "Path", lambda _p: tmp_path / "no-such-dir")
    assert st.has_nvidia_gpu() is False


def test_index_probe_asks_for_torchs_page(tmp_path: Path) -> None:
    # A real HTTP server standing in for the index (no network): reachable when it serves
    # /whl/cpu/torch/, unreachable for a 404 and for a port nothing listens on.
    (tmp_path / "whl" / "cpu" / "torch").mkdir(parents=True)
    (tmp_path / "whl" / "cpu" / "torch" / "index.html").write_text("<a>torch-2.13.0+cpu</a>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert st.index_reachable(f"{url}/whl/cpu", timeout_s=5) is True
        assert st.index_reachable(f"{url}/whl/cu126", timeout_s=5) is False
        server.shutdown()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert st.index_reachable(f"http://127.0.0.1:{port}/whl/cpu", timeout_s=2) is False


def test_makefile_installs_torch_from_the_selected_index() -> None:
    makefile = (ROOT / "Makefile").read_text()
    line = 'index="$$(python3 scripts/select_torch.py)" && $(PY) -m pip install -q $$index torch=='
    assert line in makefile


def test_script_prints_only_pip_arguments_on_stdout() -> None:
    env = {**os.environ, "FACEGEN_TORCH": "default"}
    out = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "" and "FACEGEN_TORCH=default" in out.stderr
    bad = subprocess.run(
        [sys.executable, str(SCRIPT)], env={**env, "FACEGEN_TORCH": "rocm"}, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "rocm" in bad.stderr and bad.stdout == ""
