"""Device and precision handling, in one place: nothing else calls ``.cuda()``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(preference: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("Device 'cuda' was asked for, but torch sees no CUDA GPU; use 'auto' or 'cpu'.")
    return torch.device(preference)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "fp32") -> Iterator[None]:
    """Mixed precision on CUDA; a no-op for fp32 and on CPU (CPU runs in fp32 here)."""
    if precision == "fp32" or device.type != "cuda":
        yield
        return
    with torch.autocast(device_type="cuda", dtype=PRECISIONS[precision]):
        yield
