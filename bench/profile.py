"""Sample the server with py-spy during one cell, and say where its time went.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``); each
stack is put in the category of its innermost frame that matches one (the first in the
order below, for a frame matching several), so a torch call made from a worker thread
counts as the model, and Pillow's generic frames count as whatever called them.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (category, substrings of a frame "function (file:line)"), highest priority first.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "model forward (torch)",
        ("torch/nn/", "facegen_core/networks.py", "torch/_tensor.py", "model_to_uint8", "uint8_to_model"),
    ),
    ("PNG/APNG/GIF encode (Pillow + zlib)", ("service/imaging.py", "PngImagePlugin", "GifImagePlugin")),
    (
        "upload decode + crop/resize",
        ("facegen_core/preprocess.py", "service/uploads.py", "JpegImagePlugin", "multipart"),
    ),
    ("latent sampling", ("facegen_core/latent.py",)),
    ("JSON / base64", ("json/", "base64", "jsonable_encoder")),
    ("request validation (pydantic)", ("pydantic",)),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("HTTP server (uvicorn, h11/httptools)", ("uvicorn/", "h11/", "httptools")),
    ("framework (starlette/fastapi)", ("starlette/", "fastapi/")),
    (
        "thread hand-off (anyio, futures, threading)",
        ("anyio/", "concurrent/futures", "threading.py", "queue.py"),
    ),
    # With uvloop the loop itself is C: its time (I/O, epoll, callback glue) shows as
    # asyncio's Runner.run with no Python frame below it.
    ("event loop (uvloop/asyncio)", ("asyncio/",)),
    ("batcher (service/batcher.py)", ("service/batcher.py",)),
    ("service code (other)", ("service/",)),
]
# The event loop's stacks start in ``python -m service``; worker threads in threading.py.
MAIN_THREAD_ROOT = "service/__main__.py"


def py_spy_path() -> str | None:
    """The venv's py-spy (beside this interpreter), else one on PATH."""
    venv = Path(sys.executable).parent / "py-spy"
    return str(venv) if venv.is_file() else shutil.which("py-spy")


class PySpy:
    """``start`` attaches to ``pid``; ``stop`` interrupts py-spy, which then writes ``out``."""

    def __init__(self, pid: int, out: Path, rate: int = 200, gil: bool = False) -> None:
        exe = py_spy_path()
        if exe is None:
            raise RuntimeError(
                "py-spy is not installed; `pip install py-spy` into the venv to use --profile."
            )
        self.out = out
        self.cmd = [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--duration",
            "3600",
        ]
        if gil:
            self.cmd.append("--gil")  # only the thread holding the GIL: what serialises Python
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.is_file():
            raise RuntimeError(f"py-spy wrote no profile ({self.cmd}): {err.decode(errors='replace')[-500:]}")


def read_collapsed(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def categorise(frames: list[str]) -> str:
    """The category of the innermost frame that has one (frames run root first, leaf last)."""
    for frame in reversed(frames):
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def summarize(path: Path, top: int = 15) -> str:
    """Share of samples per category (all threads, then the event-loop thread alone), then
    the hottest leaf frames. On a machine with more runnable threads than cores, a thread
    waiting for a core is sampled as busy: prefer the per-thread CPU table for shares."""
    stacks = read_collapsed(path)
    total = sum(c for _, c in stacks)
    if total == 0:
        return f"{path}: no samples."
    by_cat: Counter[str] = Counter()
    main_cat: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for frames, count in stacks:
        cat = categorise(frames)
        by_cat[cat] += count
        by_leaf[frames[-1]] += count
        if any(MAIN_THREAD_ROOT in f for f in frames[:3]):
            main_cat[cat] += count
    lines = [f"{total} samples in {path.name}", "  share  category (all threads)"]
    lines += [f"  {c / total:5.1%}  {name}" for name, c in by_cat.most_common()]
    main_total = sum(main_cat.values())
    if main_total:
        lines += ["", f"  share  category (event-loop thread only, {main_total} samples)"]
        lines += [f"  {c / main_total:5.1%}  {name}" for name, c in main_cat.most_common()]
    lines += ["", "  share  hottest leaf frames (self time)"]
    lines += [f"  {c / total:5.1%}  {leaf}" for leaf, c in by_leaf.most_common(top)]
    return "\n".join(lines)
