"""Realistic client traffic for the live deploy tests: every model endpoint, several clients."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image


def _png(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _one_round(client: httpx.Client, k: int) -> int:
    """One request to each model endpoint; returns how many requests it made."""
    calls = [
        ("/generate", {"json": {"n": 4, "seed": k, "temperature": 0.8}}),
        ("/generate", {"json": {"n": 1, "seed": 1000 + k, "format": "json"}}),
        ("/interpolate", {"json": {"start": {"seed": k}, "end": {"seed": k + 1}, "steps": 4}}),
        ("/encode", {"files": [("image", ("a.png", _png(k), "image/png"))]}),
        (
            "/reconstruct",
            {"files": [("image", (f"{i}.png", _png(k + i), "image/png")) for i in range(2)]},
        ),
    ]
    latent_dim = None
    for path, kwargs in calls:
        response = client.post(path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, f"POST {path}: {response.status_code} {response.text}"
        if path == "/encode":
            latent_dim = len(response.json()["items"][0]["mu"])
    assert latent_dim
    latents = np.random.default_rng(k).standard_normal((3, latent_dim)).round(4).tolist()
    response = client.post("/decode", json={"latents": latents})
    assert response.status_code == 200, f"POST /decode: {response.status_code} {response.text}"
    return len(calls) + 1


def send_mixed_traffic(base_url: str, rounds: int = 2, clients: int = 1) -> int:
    """`clients` concurrent clients each run `rounds` rounds; returns the requests made (all 200)."""

    def client_loop(c: int) -> int:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            return sum(_one_round(client, 100 * c + r) for r in range(rounds))

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client_loop, range(clients)))
