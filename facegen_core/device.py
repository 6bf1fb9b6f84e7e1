"""Device and precision handling, in one place: nothing else calls ``.cuda()``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# How a network's 4-D weights and activations lie in memory: NCHW ("contiguous") or NHWC
# ("channels_last"). Convolutions pick their kernels by it (oneDNN, cuDNN), so it sets speed, and
# the floats too: a face's output is reproducible only within one layout.
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
# The decoder's layout for serving, by device type: what the service's FACEGEN_DECODER_MEMORY_FORMAT
# "auto" picks and the benches' ceilings and peers run. Channels-last measured 1.05-1.3× faster
# on a 2-core AVX2 CPU (python -m bench.layout; docs/bench.md, "Memory layout"). CUDA keeps NCHW,
# where the CUDA graphs and the pixel determinism were measured; channels-last is unmeasured there.
SERVING_DECODER_MEMORY_FORMAT = {"cpu": "channels_last"}


def resolve_device(preference: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("Device 'cuda' was asked for, but torch sees no CUDA GPU; use 'auto' or 'cpu'.")
    return torch.device(preference)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str = "fp32", cpu: bool = False) -> Iterator[None]:
    """Mixed precision on CUDA; a no-op for fp32, and on CPU unless ``cpu`` (training asks for
    bf16 there, measured 2.5-2.9× faster per step on AMX-BF16 CPUs; the service's CPU path
    stays fp32, where its pixel-determinism guarantee was measured)."""
    if precision == "fp32" or (device.type != "cuda" and not (cpu and device.type == "cpu")):
        yield
        return
    with torch.autocast(device_type=device.type, dtype=PRECISIONS[precision]):
        yield


def set_memory_format(*modules: torch.nn.Module, memory_format: str) -> None:
    """Lay out every 4-D weight of ``modules`` in ``memory_format`` (a key of MEMORY_FORMATS), in
    place. A convolution whose weight is channels-last returns channels-last activations, so
    the layout then carries through the network from its first convolution on."""
    fmt = MEMORY_FORMATS[memory_format]
    for m in modules:
        m.to(memory_format=fmt)  # type: ignore[call-overload]


def serving_decoder_memory_format(device_type: str) -> str:
    """SERVING_DECODER_MEMORY_FORMAT for ``device_type``; NCHW on any device not measured."""
    return SERVING_DECODER_MEMORY_FORMAT.get(device_type, "contiguous")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags
