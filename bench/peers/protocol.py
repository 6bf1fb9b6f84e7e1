"""Each system's request for one face from a seed, and how to get the PNG out of its answer.

=============  ==========================================  ======================================
system         request                                      response body
=============  ==========================================  ======================================
facegen        POST /generate {"seed": s, "n": 1, ...}      the PNG
torchserve     POST /predictions/<model>, body "s"          the PNG (the handler returns bytes)
pytriton       POST /v2/models/<model>/infer (KServe v2),   JSON header + binary tensor data
               INT64 input "seed" [[s]], output "png"       (binary data extension): BYTES
               asked for as binary data                     elements, each a uint32 LE length
                                                            and its bytes
=============  ==========================================  ======================================
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import httpx

from bench.loadgen import RequestSpec

FACEGEN, TORCHSERVE, PYTRITON = "facegen", "torchserve", "pytriton"
SYSTEMS = (FACEGEN, TORCHSERVE, PYTRITON)
PEERS = (TORCHSERVE, PYTRITON)
# Variants served in the same run: facegen with batching off ((b) of python -m bench), and
# TorchServe with several single-thread workers (its per-core default, threads split).
FACEGEN_OFF, TORCHSERVE_WORKERS = "facegen-off", "torchserve-workers"
BASE = {FACEGEN_OFF: FACEGEN, TORCHSERVE_WORKERS: TORCHSERVE}
LABELS = {
    FACEGEN: "facegen",
    TORCHSERVE: "TorchServe",
    PYTRITON: "PyTriton",
    FACEGEN_OFF: "facegen, batching off",
    TORCHSERVE_WORKERS: "TorchServe, N workers",  # run.py names N
}


def base(system: str) -> str:
    """The system a variant is served by (its requests and answers are that system's)."""
    return BASE.get(system, system)


MODEL = "faces"  # the model name both peers serve
SEED_INPUT, PNG_OUTPUT = "seed", "png"
TRITON_HEADER_LENGTH = "Inference-Header-Content-Length"


def triton_body(seed: int) -> dict[str, Any]:
    """KServe v2 inference request: one INT64 seed of shape [1, 1] (batch of one, one element)."""
    return {
        "inputs": [{"name": SEED_INPUT, "shape": [1, 1], "datatype": "INT64", "data": [seed]}],
        "outputs": [{"name": PNG_OUTPUT, "parameters": {"binary_data": True}}],
    }


def spec(system: str) -> RequestSpec:
    """The load generator's request for ``system`` (fresh seeds per request)."""
    system = base(system)
    if system == FACEGEN:
        body = {"n": 1, "seed": 0, "temperature": 1.0, "format": "png"}  # bench/workloads.py gen1
        return RequestSpec("/generate", 1, body, ("seed",))
    if system == TORCHSERVE:
        return RequestSpec(f"/predictions/{MODEL}", 1, raw_seed=True)
    if system == PYTRITON:
        return RequestSpec(f"/v2/models/{MODEL}/infer", 1, triton_body(0), ("inputs.0.data.0",))
    raise ValueError(f"Unknown system {system!r}; use one of {', '.join(SYSTEMS)}.")


def parse_triton(body: bytes, headers: Mapping[str, str]) -> list[bytes]:
    """The ``png`` output's elements from a KServe v2 response with binary data."""
    if TRITON_HEADER_LENGTH.lower() not in {k.lower() for k in headers}:
        raise ValueError(f"The Triton response has no {TRITON_HEADER_LENGTH} header: {body[:200]!r}")
    n = int(next(v for k, v in headers.items() if k.lower() == TRITON_HEADER_LENGTH.lower()))
    header, data = json.loads(body[:n]), body[n:]
    offset = 0
    for out in header["outputs"]:
        size = int(out["parameters"]["binary_data_size"])
        if out["name"] == PNG_OUTPUT:
            if out["datatype"] != "BYTES":
                raise ValueError(f"Output {PNG_OUTPUT!r} is {out['datatype']}, not BYTES.")
            return _bytes_elements(data[offset : offset + size])
        offset += size
    raise ValueError(f"The Triton response has no output {PNG_OUTPUT!r}: {header}")


def _bytes_elements(blob: bytes) -> list[bytes]:
    """A BYTES tensor's binary form: per element, a uint32 little-endian length, then the bytes."""
    out, i = [], 0
    while i < len(blob):
        (k,) = struct.unpack_from("<I", blob, i)
        out.append(blob[i + 4 : i + 4 + k])
        i += 4 + k
    return out


def png_from(system: str, r: httpx.Response) -> bytes:
    """The PNG in a successful answer of ``system``; raises with the body on an error."""
    if r.status_code != 200:
        raise RuntimeError(f"{system} answered HTTP {r.status_code}: {r.text[:500]}")
    if system == PYTRITON:
        (png,) = parse_triton(r.content, r.headers)
        return png
    return r.content


async def fetch_png(client: httpx.AsyncClient, system: str, url: str, seed: int) -> bytes:
    """One face from ``seed`` through ``system`` at ``url`` (the load generator's request)."""
    s = spec(system)
    r = await client.request(s.method, url + s.path, **s.request_kwargs(seed))
    return png_from(system, r)
