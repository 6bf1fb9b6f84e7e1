"""What the sync and async clients share: configuration, request building, response parsing,
and what to do after each answer (``ClientCore``).

Each operation is a ``Call`` (method, path, body) built by a function below and a parser for
its answer, so ``Client`` and ``AsyncClient`` differ only in how they send and wait: their
operation methods are one-line typed twins, their ``send`` loops three lines each.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from facegen_client.errors import APIError, error_for, parse_retry_after

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = (429, 503)
ImageInput = str | os.PathLike[str] | bytes | Image.Image | np.ndarray
# An end of /interpolate: a seed, a latent (latent_dim numbers), or a photo.
End = int | Sequence[float] | np.ndarray | ImageInput


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of 503 (busy, loading) and 429 (rate limited) answers.

    The wait is the answer's Retry-After when it has one, else ``backoff_s`` doubling up to
    ``max_backoff_s``; the client gives up (raising the last answer's typed error) when the next
    wait would take it past ``max_retry_s`` since the first attempt. ``max_retry_s=0``: no retries.
    """

    max_retry_s: float = 60.0
    backoff_s: float = 0.25
    max_backoff_s: float = 5.0

    def wait_s(self, err: APIError, attempt: int) -> float:
        after = parse_after(err)
        return after if after is not None else min(self.max_backoff_s, self.backoff_s * 2**attempt)


def parse_after(err: APIError) -> float | None:
    return parse_retry_after(err.headers.get("retry-after"))


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    data: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request_args(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.request`` (and of the async client's)."""
        return {
            "method": self.method,
            "url": self.path,
            "json": self.json,
            "data": self.data,
            "files": self.files,
            "content": self.content,
            "headers": self.headers,
        }


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class ClientCore:
    """The state ``Client`` and ``AsyncClient`` share: the service's URL (default
    ``$FACEGEN_URL`` or http://127.0.0.1:8000), the key's header (``api_key``, default
    ``$FACEGEN_API_KEY``), the retry policy and the count of retries so far."""

    def __init__(self, base_url: str | None, api_key: str | None, retry: RetryPolicy | None) -> None:
        self.base_url = base_url or os.environ.get("FACEGEN_URL") or DEFAULT_URL
        self.retry = retry or RetryPolicy()
        self.retries = 0  # 503/429 answers retried so far (all requests)
        key = api_key if api_key is not None else os.environ.get("FACEGEN_API_KEY")
        self.headers = auth_headers(key)

    def wait_before_retry(self, response: httpx.Response, attempt: int, started: float) -> float | None:
        """After attempt number ``attempt`` (1, 2, ...) of a call first sent at ``started``
        (time.monotonic()): None when ``response`` is the answer (an error answer raises its typed
        error), else the seconds to wait before sending again (a 503/429 within the policy)."""
        if response.status_code not in RETRY_STATUSES:
            check(response)
            return None
        err = error_for(response)
        err.attempts = attempt
        wait = self.retry.wait_s(err, attempt - 1)
        if time.monotonic() - started + wait > self.retry.max_retry_s:
            raise err
        self.retries += 1
        return wait


def check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise error_for(response)
    return response


# ------------------------------------------------------------------ results


@dataclass
class Faces:
    """Faces the service made: one PNG per face (with its AI-generated metadata), and latents.

    ``png[i]`` are the exact bytes the service sent; ``images`` decodes them to PIL images,
    ``arrays()`` to one uint8 array (n, H, W, 3); ``latents`` is float32 (n, latent_dim).
    """

    model: str
    version: int
    png: list[bytes]
    latents: np.ndarray
    seed: int | None = None

    @property
    def seeds(self) -> list[int] | None:
        """The seed of each face (face i comes from seed + i), or None for latents and photos."""
        return None if self.seed is None else [self.seed + i for i in range(len(self.png))]

    @property
    def images(self) -> list[Image.Image]:
        out: list[Image.Image] = []
        for data in self.png:
            img = Image.open(io.BytesIO(data))
            img.load()
            out.append(img)
        return out

    def arrays(self) -> np.ndarray:
        """uint8 (n, H, W, 3)."""
        return np.stack([np.asarray(img.convert("RGB")) for img in self.images])

    def __len__(self) -> int:
        return len(self.png)


@dataclass
class Encoding:
    """``mu`` (n, latent_dim) float32 is each photo's encoder mean; ``logvar`` the encoder's
    uncertainty; ``latent`` the latent to decode (``mu``, or ``mu`` refined for ``refine`` steps);
    ``faces[i]`` the face box and landmarks the photo was aligned by (None when not aligned)."""

    model: str
    version: int
    mu: np.ndarray
    logvar: np.ndarray
    faces: list[dict[str, Any] | None]
    refined: np.ndarray | None = None  # (n, latent_dim) with refine > 0
    refine: int = 0

    @property
    def latent(self) -> np.ndarray:
        """(n, latent_dim) float32: what to decode, ``refined`` when refinement ran, else ``mu``."""
        return self.mu if self.refined is None else self.refined


def parse_faces(response: httpx.Response) -> Faces:
    body = check(response).json()
    latents = body.get("latents")
    if latents is None and "latent" in body:  # a single edited latent
        latents = [body["latent"]]
    images = body.get("images")
    if images is None and "image" in body:
        images = [body["image"]]
    return Faces(
        model=str(body["model"]),
        version=int(body["version"]),
        png=[base64.b64decode(s) for s in images or []],
        latents=np.asarray(latents or [], np.float32),
        seed=body.get("seed"),
    )


def parse_encoding(response: httpx.Response) -> Encoding:
    body = check(response).json()
    items = body["items"]
    return Encoding(
        model=str(body["model"]),
        version=int(body["version"]),
        mu=np.asarray([it["mu"] for it in items], np.float32),
        logvar=np.asarray([it["logvar"] for it in items], np.float32),
        faces=[it.get("face") for it in items],
        refined=np.asarray([it["latent"] for it in items], np.float32) if body.get("refine") else None,
        refine=int(body.get("refine", 0)),
    )


def parse_json(response: httpx.Response) -> Any:
    return check(response).json()


def parse_text(response: httpx.Response) -> str:
    return check(response).text


# ------------------------------------------------------------------ inputs


def image_file(img: ImageInput, name: str = "image") -> tuple[str, bytes, str]:
    """(filename, bytes, content type) of a path, raw bytes, PIL image or uint8 (H, W, 3) array."""
    if isinstance(img, bytes):
        return (name, img, "application/octet-stream")
    if isinstance(img, (str, os.PathLike)):
        p = Path(img)
        return (p.name, p.read_bytes(), "application/octet-stream")
    if isinstance(img, np.ndarray):
        img = Image.fromarray(np.asarray(img, np.uint8))
    if isinstance(img, Image.Image):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return (f"{name}.png", buf.getvalue(), "image/png")
    kind = type(img).__name__
    raise TypeError(f"An image must be a path, bytes, a PIL image or a uint8 array, not {kind}.")


def latent_rows(latents: Sequence[Sequence[float]] | np.ndarray) -> list[list[float]]:
    arr = np.asarray(latents, np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"latents must be (n, latent_dim) numbers, not an array of shape {arr.shape}.")
    return arr.tolist()


def _is_photo(end: Any) -> bool:
    return isinstance(end, (str, os.PathLike, bytes, Image.Image)) or (
        isinstance(end, np.ndarray) and end.ndim == 3
    )


def _json_end(end: Any) -> dict[str, Any]:
    if isinstance(end, (int, np.integer)) and not isinstance(end, bool):
        return {"seed": int(end)}
    return {"latent": latent_rows(end)[0]}


# ------------------------------------------------------------------ calls


def generate_call(
    n: int, seed: int | None, temperature: float, attributes: Mapping[str, float] | None
) -> Call:
    body: dict[str, Any] = {"n": n, "temperature": temperature, "format": "json"}
    if seed is not None:
        body["seed"] = seed
    if attributes:  # only when given: a server without attribute editing refuses the key
        body["attributes"] = dict(attributes)
    return Call("POST", "/generate", json=body)


def decode_call(latents: Sequence[Sequence[float]] | np.ndarray) -> Call:
    return Call("POST", "/decode", json={"latents": latent_rows(latents), "format": "json"})


def _upload_call(path: str, images: Sequence[ImageInput] | ImageInput, data: dict[str, Any]) -> Call:
    if isinstance(images, (str, os.PathLike, bytes, Image.Image, np.ndarray)) and not (
        isinstance(images, np.ndarray) and images.ndim == 4
    ):
        images = [images]  # one image given alone
    files = [("image", image_file(img, f"image{i}")) for i, img in enumerate(images)]
    return Call("POST", path, data=data, files=files)


def _align(align: bool | None, refine: int = 0) -> dict[str, Any]:
    """The upload routes' form options; ``refine`` is sent only when asked for (older servers)."""
    out = {} if align is None else {"align": "true" if align else "false"}
    return out | ({"refine": str(int(refine))} if refine else {})


def encode_call(images: Sequence[ImageInput] | ImageInput, align: bool | None, refine: int = 0) -> Call:
    return _upload_call("/encode", images, _align(align, refine))


def reconstruct_call(images: Sequence[ImageInput] | ImageInput, align: bool | None, refine: int = 0) -> Call:
    return _upload_call("/reconstruct", images, {"format": "json", **_align(align, refine)})


def interpolate_call(
    start: End, end: End, steps: int, method: str, temperature: float, align: bool | None
) -> Call:
    if _is_photo(start) or _is_photo(end):
        data: dict[str, Any] = {
            "steps": str(steps),
            "method": method,
            "format": "json",
            "temperature": str(temperature),
            **_align(align),
        }
        files = []
        for side, e in (("start", start), ("end", end)):
            if _is_photo(e):
                files.append((f"{side}_image", image_file(e, f"{side}")))  # type: ignore[arg-type]
            elif isinstance(e, (int, np.integer)):
                data[f"{side}_seed"] = str(int(e))
            else:
                raise ValueError("A multipart /interpolate takes photos or seeds at its ends, not latents.")
        return Call("POST", "/interpolate", data=data, files=files)
    body = {
        "start": _json_end(start),
        "end": _json_end(end),
        "steps": steps,
        "method": method,
        "format": "json",
        "temperature": temperature,
    }
    return Call("POST", "/interpolate", json=body)


def edit_call(
    attributes: Mapping[str, float],
    seed: int | None,
    latent: Sequence[float] | np.ndarray | None,
    image: ImageInput | None,
    temperature: float,
    refine: int = 0,
) -> Call:
    if sum(x is not None for x in (seed, latent, image)) != 1:
        raise ValueError("edit takes exactly one of seed, latent or image.")
    accept = {"Accept": "application/json"}
    if image is not None:
        return Call(
            "POST",
            "/edit",
            data={"attributes": json.dumps(dict(attributes)), **_align(None, refine)},
            files=[("image", image_file(image))],
            headers=accept,
        )
    body: dict[str, Any] = {"attributes": dict(attributes), "temperature": temperature}
    body |= {"seed": int(seed)} if seed is not None else {"latent": latent_rows(latent)[0]}  # type: ignore[arg-type]
    return Call("POST", "/edit", json=body, headers=accept)
