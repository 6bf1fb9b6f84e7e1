#!/usr/bin/env python3
"""Which PyTorch build `make serve` / `make test` install: prints pip's index arguments.

    python3 scripts/select_torch.py        # e.g. "--index-url https://download.pytorch.org/whl/cpu"
    FACEGEN_TORCH=cuda python3 scripts/select_torch.py

Why: on Linux, `pip install torch` from PyPI resolves the CUDA build (a ~500 MB wheel plus
~2 GB of CUDA libraries), which a machine without an NVIDIA GPU cannot use. So:

* ``FACEGEN_TORCH=auto`` (the default): ``cuda`` when an NVIDIA GPU is found (``nvidia-smi -L``
  lists one, or the driver shows one under /proc/driver/nvidia/gpus), else ``cpu``.
* ``cpu``: PyTorch's CPU wheel index, when it answers; when it does not (an offline mirror, a
  firewall), the default index, with a warning that pip may then pick the CUDA build.
* ``cuda`` and ``default``: the default index (pip's own configuration), whose Linux torch wheel
  is the CUDA build.

Standard library only: it runs before the venv exists. The explanation goes to stderr; stdout
holds only the arguments, so the Makefile can splice them into the pip command.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CHOICES = ("auto", "cpu", "cuda", "default")
PROBE_TIMEOUT_S = 5.0


def has_nvidia_gpu() -> bool:
    """True when the NVIDIA driver reports at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and "GPU" in out.stdout:
                return True
        except (OSError, subprocess.SubprocessError):
            pass
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def index_reachable(url: str = CPU_INDEX, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when the index answers a request for torch's page within ``timeout_s``."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/torch/", timeout=timeout_s) as r:
            return bool(200 <= r.status < 400)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def select(
    choice: str,
    gpu: Callable[[], bool] = has_nvidia_gpu,
    reachable: Callable[[str], bool] = index_reachable,
) -> tuple[list[str], str]:
    """(pip index arguments, a sentence saying what was chosen and why) for ``choice``."""
    choice = (choice or "auto").strip().lower()
    if choice not in CHOICES:
        raise ValueError(f"FACEGEN_TORCH={choice!r} is not one of {', '.join(CHOICES)}.")
    if choice == "auto":
        if gpu():
            return [], "an NVIDIA GPU was found: the CUDA build of torch from the default index."
        choice, why = "cpu", "no NVIDIA GPU was found"
    else:
        why = f"FACEGEN_TORCH={choice}"
    if choice == "cpu":
        if reachable(CPU_INDEX):
            return ["--index-url", CPU_INDEX], f"{why}: the CPU build of torch from {CPU_INDEX}."
        return [], (
            f"{why}, but {CPU_INDEX} is unreachable: torch from the default index (pip's configuration). "
            "On Linux, PyPI's torch is the CUDA build; point pip at a CPU wheel (PIP_FIND_LINKS) to avoid it."
        )
    if choice == "cuda":
        return [], f"{why}: the CUDA build of torch from the default index."
    return [], f"{why}: torch from the default index, as pip is configured."


def main() -> int:
    try:
        args, why = select(os.environ.get("FACEGEN_TORCH", "auto"))
    except ValueError as e:
        print(f"select_torch: {e}", file=sys.stderr)
        return 2
    print(f"select_torch: {why}", file=sys.stderr)
    print(" ".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
