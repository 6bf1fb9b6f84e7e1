"""Pixel identity: the same seeds from facegen and from each peer, PNGs decoded and compared.

Seeds 0-15, ``n=1`` each, all sent at once so that a peer batches them. In peer mode
``per-row`` any differing pixel stops the run (the comparison would not be of the same work);
in ``batched`` mode the max absolute difference is only reported.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.peers import protocol
from bench.peers.protocol import LABELS
from bench.peers.server import System

IDENTITY_SEEDS = range(16)


async def fetch_faces(system: System, seeds: range) -> list[tuple[bytes, np.ndarray]]:
    """(PNG, decoded pixels) per seed, all requests at once (so a peer batches them)."""
    async with httpx.AsyncClient(timeout=120.0) as client:
        pngs = await asyncio.gather(*[protocol.fetch_png(client, system.name, system.url, s) for s in seeds])
    return [(png, np.asarray(Image.open(io.BytesIO(png)))) for png in pngs]


async def check_identity(systems: list[System], mode: str) -> dict[str, dict[str, Any]]:
    """Per peer: max |pixel difference| from facegen, seeds that differ, identical bytes."""
    ours = await fetch_faces(systems[0], IDENTITY_SEEDS)
    out: dict[str, dict[str, Any]] = {}
    for peer in systems[1:]:
        theirs = await fetch_faces(peer, IDENTITY_SEEDS)
        diffs = [
            int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) if a.shape == b.shape else 255
            for (_, a), (_, b) in zip(ours, theirs, strict=True)
        ]
        out[peer.name] = {
            "seeds": [IDENTITY_SEEDS.start, IDENTITY_SEEDS.stop - 1],
            "max_abs_diff": max(diffs),
            "seeds_differing": [s for s, d in zip(IDENTITY_SEEDS, diffs, strict=True) if d],
            "png_bytes_identical": all(x == y for (x, _), (y, _) in zip(ours, theirs, strict=True)),
        }
        if mode == "per-row" and max(diffs):
            raise SystemExit(
                f"Pixel identity FAILED: {LABELS[peer.name]} (peer mode per-row) gave different pixels "
                f"from facegen for seeds {out[peer.name]['seeds_differing']} (max |diff| {max(diffs)}); "
                f"the comparison would not be of the same work. Nothing was timed."
            )
    return out
