"""`refine` on /encode, /reconstruct and /edit: per-face latent refinement (facegen_core.refine)
run by the service as sliced, batched model calls (service/refining.py), on the tiny model in
this process."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from facegen_core.artifact import load_artifact
from facegen_core.refine import refine_latents
from service.uploads import decode_upload
from tests.service import corpus
from tests.service.inproc import in_process
from tests.service.live import assert_problem, metric_value, png_pixels, tiny_artifact

SIDE = 32  # the tiny model's image size
MAX_STEPS = 20
PNG = corpus.sample_images()["png_rgb"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("refine_store")
    tiny_artifact(store)
    return store


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[httpx.Client]:
    with in_process(store, max_refine_steps=MAX_STEPS, chunk_rows=4, max_delay_ms=20) as c:
        yield c


def _photos(n: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """n different uploads: the corpus pattern, each shifted."""
    out = []
    for i in range(n):
        img = Image.fromarray(np.roll(corpus.pattern(), 5 * i, axis=1))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        out.append(("image", (f"{i}.png", buf.getvalue(), "image/png")))
    return out


def _encode(c: httpx.Client, files: list, refine: int) -> dict:
    r = c.post("/encode", files=files, data={"refine": str(refine)})
    assert r.status_code == 200, r.text
    return r.json()


def _mse(c: httpx.Client, latent: list[float], crop: np.ndarray) -> float:
    r = c.post("/decode", json={"latents": [latent]})
    assert r.status_code == 200, r.text
    return float(((png_pixels(r.content).astype(np.float64) - crop) ** 2).mean())


def test_encode_refines_the_latent_towards_the_photo(client: httpx.Client, store: Path) -> None:
    files = [("image", ("a.png", PNG, "image/png"))]
    plain = _encode(client, files, 0)
    assert plain["refine"] == 0 and plain["items"][0]["latent"] == plain["items"][0]["mu"]
    body = _encode(client, files, MAX_STEPS)
    item = body["items"][0]
    assert body["refine"] == MAX_STEPS
    assert client.get("/models").json()["loaded"]["max_refine_steps"] == MAX_STEPS
    assert item["mu"] == plain["items"][0]["mu"]  # mu stays the encoder's mean
    crop = decode_upload(PNG, max_pixels=10**7, image_size=SIDE, channels=3, crop="celeba")
    assert _mse(client, item["latent"], crop) < _mse(client, item["mu"], crop)
    # The service computes what facegen_core.refine computes in one batch (to rounding).
    art = load_artifact(next(store.glob("tiny/*")))
    x = torch.from_numpy(crop.copy()).permute(2, 0, 1)[None]  # (1, C, H, W)
    want = refine_latents(art.decoder.eval(), x, torch.tensor([item["mu"]]), MAX_STEPS)
    np.testing.assert_allclose(item["latent"], want[0].numpy(), rtol=1e-4, atol=1e-5)


def test_a_refined_latent_does_not_depend_on_its_batch_or_on_slicing(
    client: httpx.Client, store: Path
) -> None:
    together = _encode(client, _photos(3), 7)["items"]
    alone = _encode(client, _photos(3)[1:2], 7)["items"][0]
    assert together[1]["latent"] == alone["latent"]
    # A server that gives refinement a tiny slice (one step per model call) gets the same floats.
    with in_process(store, max_refine_steps=MAX_STEPS, chunk_rows=4, refine_slice_ms=0.001) as sliced:
        again = _encode(sliced, _photos(3), 7)["items"]
        text = sliced.get("/metrics").text
    assert [it["latent"] for it in again] == [it["latent"] for it in together]
    # 7 steps, one per call: 7 refine batches (3 rows each, or fewer when split).
    assert metric_value(text, "facegen_batch_size_count", 'op="refine"') >= 7


def test_reconstruct_and_edit_use_the_refined_latent(client: httpx.Client) -> None:
    files = [("image", ("a.png", PNG, "image/png"))]
    latent = _encode(client, files, 5)["items"][0]["latent"]
    r = client.post("/reconstruct", files=files, data={"refine": "5", "format": "json"})
    assert r.status_code == 200, r.text
    assert r.json()["latents"] == [latent] and r.json()["refine"] == 5
    png = client.post("/reconstruct", files=files, data={"refine": "5"})
    decoded = client.post("/decode", json={"latents": [latent]})
    np.testing.assert_array_equal(png_pixels(png.content), png_pixels(decoded.content))
    e = client.post(
        "/edit",
        files={"image": ("a.png", PNG, "image/png")},
        data={"refine": "5", "attributes": json.dumps({})},
        headers={"Accept": "application/json"},
    )
    assert e.status_code == 200, e.text
    assert e.json()["source_latent"] == latent


@pytest.mark.parametrize("route", ["/encode", "/reconstruct", "/edit"])
@pytest.mark.parametrize("value", [str(MAX_STEPS + 1), "-1", "many", "1.5"])
def test_a_bad_refine_is_a_422_naming_the_field(client: httpx.Client, route: str, value: str) -> None:
    r = client.post(route, files={"image": ("a.png", PNG, "image/png")}, data={"refine": value})
    body = assert_problem(r, 422)
    assert "refine" in json.dumps(body)
    if value == str(MAX_STEPS + 1):
        assert body.get("field") == "refine" and "FACEGEN_MAX_REFINE_STEPS" in body["detail"]


def test_a_server_with_refinement_off_says_so(store: Path) -> None:
    with in_process(store, max_refine_steps=0) as c:
        r = c.post("/encode", files={"image": ("a.png", PNG, "image/png")}, data={"refine": "1"})
        body = assert_problem(r, 422, "refine")
        assert "turned off" in body["detail"]
        assert _encode(c, [("image", ("a.png", PNG, "image/png"))], 0)["refine"] == 0


def test_interpolate_from_a_photo_starts_at_its_refined_latent(client: httpx.Client) -> None:
    latent = _encode(client, [("image", ("a.png", PNG, "image/png"))], 4)["items"][0]["latent"]
    form = {"end_seed": "3", "steps": "3", "format": "json", "refine": "4"}
    r = client.post("/interpolate", files={"start_image": ("a.png", PNG, "image/png")}, data=form)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["latents"][0], latent, rtol=1e-6)  # slerp's t = 0 end
    bad = client.post(
        "/interpolate",
        files={"start_image": ("a.png", PNG, "image/png")},
        data={**form, "refine": str(MAX_STEPS + 1)},
    )
    assert_problem(bad, 422, "refine")


def test_a_refinement_past_its_deadline_is_a_504_and_the_model_moves_on(store: Path) -> None:
    with in_process(store, max_refine_steps=10_000, request_timeout_s=1.0, refine_slice_ms=20) as c:
        t = time.perf_counter()
        r = c.post("/encode", files=_photos(4), data={"refine": "10000"})
        took = time.perf_counter() - t
        body = assert_problem(r, 504)
        assert body["type"] == "/problems/deadline-exceeded"
        assert took < 5.0  # stopped at a slice after the deadline, not after 40,000 row-steps
        assert _encode(c, _photos(1), 3)["refine"] == 3  # the model is free again
