"""``Client``: the synchronous facegen client (``AsyncClient`` in aio.py is the same, awaited).

from facegen_client import Client
with Client("http://127.0.0.1:8000") as fg:
    faces = fg.generate(n=4, seed=42)        # Faces: .images (PIL), .arrays(), .latents, .png
    faces.images[0].save("face.png")
    enc = fg.encode(["me.jpg"])              # Encoding: .mu (1, latent_dim), .logvar
    fg.decode(enc.mu).images[0]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import numpy as np

from facegen_client import _api
from facegen_client._api import Call, ClientCore, Encoding, End, Faces, ImageInput, RetryPolicy

T = TypeVar("T")
Images = Sequence[ImageInput] | ImageInput


class Client(ClientCore):
    """A facegen service at ``base_url`` (default ``$FACEGEN_URL`` or http://127.0.0.1:8000).

    ``api_key`` (default ``$FACEGEN_API_KEY``) is sent as ``Authorization: Bearer <key>``.
    ``timeout`` is per HTTP request; ``retry`` bounds the retries of 503/429 answers. Every error
    answer raises the typed exception of facegen_client.errors.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry)
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=self.headers, transport=transport
        )

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, call: Call) -> httpx.Response:
        """Send ``call``, retrying 503/429 within the retry policy; error answers raise."""
        started, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            r = self._http.request(**call.request_args())
            if (wait := self.wait_before_retry(r, attempt, started)) is None:
                return r
            time.sleep(wait)

    def _do(self, call: Call, parse: Callable[[httpx.Response], T]) -> T:
        return parse(self.send(call))

    # ------------------------------------------------------------------ operations

    def generate(
        self,
        n: int = 1,
        seed: int | None = None,
        temperature: float = 1.0,
        attributes: Mapping[str, float] | None = None,
    ) -> Faces:
        """``n`` (1-64) faces, face i from ``seed + i`` (the server picks a seed when None)."""
        return self._do(_api.generate_call(n, seed, temperature, attributes), _api.parse_faces)

    def decode(self, latents: Sequence[Sequence[float]] | np.ndarray) -> Faces:
        """One face per row of ``latents`` (n, latent_dim)."""
        return self._do(_api.decode_call(latents), _api.parse_faces)

    def encode(self, images: Images, align: bool | None = None, refine: int = 0) -> Encoding:
        """Photos (paths, bytes, PIL images or uint8 arrays; 1-64) to latents; ``refine``: steps
        of per-face refinement of each latent (the server's docs/refine.md), 0 for none."""
        return self._do(_api.encode_call(images, align, refine), _api.parse_encoding)

    def reconstruct(self, images: Images, align: bool | None = None, refine: int = 0) -> Faces:
        """Each photo encoded and decoded; ``latents`` are the photos' ``mu`` (refined for
        ``refine`` steps when > 0)."""
        return self._do(_api.reconstruct_call(images, align, refine), _api.parse_faces)

    def interpolate(
        self,
        start: End,
        end: End,
        steps: int = 8,
        method: str = "slerp",
        temperature: float = 1.0,
        align: bool | None = None,
    ) -> Faces:
        """``steps`` frames from ``start`` to ``end``: each a seed (int), a latent or a photo."""
        call = _api.interpolate_call(start, end, steps, method, temperature, align)
        return self._do(call, _api.parse_faces)

    def edit(
        self,
        attributes: Mapping[str, float],
        *,
        seed: int | None = None,
        latent: Sequence[float] | np.ndarray | None = None,
        image: ImageInput | None = None,
        temperature: float = 1.0,
        refine: int = 0,
    ) -> Faces:
        """A face (from a seed, a latent or a photo) moved along named attributes, e.g.
        ``{"Smiling": 1.0}`` (``models()`` lists each model's attributes); ``refine``: a photo's
        latent refined for this many steps first."""
        call = _api.edit_call(attributes, seed, latent, image, temperature, refine)
        return self._do(call, _api.parse_faces)

    def models(self) -> dict[str, Any]:
        """GET /models: the loaded model, its manifest, and the store's models and versions."""
        return self._do(Call("GET", "/models"), _api.parse_json)

    def card(self, name: str, version: int | None = None) -> str:
        """The model card (Markdown) of model ``name`` (its newest version by default)."""
        path = f"/models/{name}/card" + (f"?version={version}" if version is not None else "")
        return self._do(Call("GET", path), _api.parse_text)

    def ready(self) -> bool:
        """True when /readyz is 200 (no retries)."""
        try:
            return self._http.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False
