"""The client against a real `python -m service` on the tiny artifact: every operation's
result, sync and asyncio alike, and real error answers raised as their typed exceptions."""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from facegen_client import AsyncClient, Client, errors
from facegen_client._api import Call
from tests.conftest import MAX_UPLOAD_BYTES
from tests.service.live import LiveService, png_pixels, png_text

SIDE, LATENT_DIM = 32, 8  # ModelConfig.tiny()


def test_generate_gives_images_arrays_and_latents(fg: Client) -> None:
    faces = fg.generate(n=4, seed=42, temperature=0.8)
    assert (faces.model, faces.version, faces.seed, faces.seeds) == ("tiny", 1, 42, [42, 43, 44, 45])
    assert faces.latents.shape == (4, LATENT_DIM) and faces.latents.dtype == np.float32
    arrays = faces.arrays()
    assert arrays.shape == (4, SIDE, SIDE, 3) and arrays.dtype == np.uint8
    assert [img.size for img in faces.images] == [(SIDE, SIDE)] * 4
    assert png_text(faces.png[2])["facegen:seed"] == "44" and png_text(faces.png[2])["AI-Generated"] == "true"
    # Face i of a request is seed + i on its own, pixel for pixel.
    alone = fg.generate(seed=44, temperature=0.8)
    np.testing.assert_array_equal(alone.arrays()[0], arrays[2])
    assert arrays.std() > 1  # not a blank image


def test_decode_of_generated_latents_gives_the_same_faces(fg: Client) -> None:
    faces = fg.generate(n=3, seed=7)
    again = fg.decode(faces.latents)
    assert again.seed is None and again.seeds is None
    np.testing.assert_array_equal(again.arrays(), faces.arrays())
    np.testing.assert_allclose(again.latents, faces.latents)


def test_encode_and_reconstruct_photos_given_as_bytes_pil_arrays_and_paths(fg: Client, tmp_path) -> None:
    faces = fg.generate(n=3, seed=1)
    path = tmp_path / "face.png"
    path.write_bytes(faces.png[2])
    inputs = [faces.png[0], faces.images[1], path]
    enc = fg.encode(inputs, align=False)
    assert enc.mu.shape == (3, LATENT_DIM) and enc.logvar.shape == (3, LATENT_DIM) and enc.faces == [None] * 3
    enc_arr = fg.encode(faces.arrays()[0], align=False)  # one uint8 (H, W, 3) array alone
    np.testing.assert_allclose(enc_arr.mu[0], enc.mu[0], atol=1e-5)
    recon = fg.reconstruct(inputs, align=False)
    assert len(recon) == 3 and recon.arrays().shape == (3, SIDE, SIDE, 3)
    np.testing.assert_allclose(recon.latents, enc.mu, atol=1e-5)
    np.testing.assert_array_equal(recon.arrays(), fg.decode(enc.mu).arrays())


def test_refine_on_encode_reconstruct_and_edit(fg: Client) -> None:
    photo = fg.generate(seed=3).png[0]
    plain = fg.encode(photo, align=False)
    assert plain.refine == 0 and plain.refined is None and plain.latent is plain.mu
    enc = fg.encode(photo, align=False, refine=6)
    assert enc.refine == 6 and enc.refined is not None and enc.latent is enc.refined
    np.testing.assert_array_equal(enc.mu, plain.mu)  # mu stays the encoder's mean
    assert not np.array_equal(enc.latent, enc.mu)
    recon = fg.reconstruct(photo, align=False, refine=6)
    np.testing.assert_array_equal(recon.latents, enc.latent)
    np.testing.assert_array_equal(recon.arrays(), fg.decode(enc.latent).arrays())
    edited = fg.edit({}, image=photo, refine=6)
    np.testing.assert_array_equal(edited.latents, enc.latent)  # no attributes: the source latent


def test_interpolate_between_seeds_latents_and_photos(fg: Client) -> None:
    ends = fg.generate(n=2, seed=100)
    path = fg.interpolate(100, 101, steps=5)
    assert len(path) == 5 and path.latents.shape == (5, LATENT_DIM)
    np.testing.assert_array_equal(path.arrays()[0], ends.arrays()[0])
    np.testing.assert_array_equal(path.arrays()[-1], ends.arrays()[1])
    by_latent = fg.interpolate(ends.latents[0], ends.latents[1], steps=5, method="lerp")
    np.testing.assert_allclose(by_latent.latents[[0, -1]], ends.latents, atol=1e-5)
    photo = fg.interpolate(ends.png[0], 101, steps=3, align=False)  # multipart: a photo and a seed
    assert len(photo) == 3
    np.testing.assert_array_equal(photo.arrays()[-1], ends.arrays()[1])
    np.testing.assert_allclose(photo.latents[0], fg.encode(ends.png[0], align=False).mu[0], atol=1e-5)


def test_the_async_client_gives_the_same_faces(fg: Client, service: LiveService) -> None:
    async def run() -> tuple[np.ndarray, np.ndarray, dict]:
        async with AsyncClient(service.url) as afg:
            faces, models = await asyncio.gather(afg.generate(n=2, seed=9), afg.models())
            enc = await afg.encode(faces.png, align=False)
            return faces.arrays(), enc.mu, models

    arrays, mu, models = asyncio.run(run())
    np.testing.assert_array_equal(arrays, fg.generate(n=2, seed=9).arrays())
    assert mu.shape == (2, LATENT_DIM) and models["loaded"]["name"] == "tiny"


def _flat_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (120, 120), (128, 128, 128)).save(buf, format="JPEG")
    return buf.getvalue()


def test_real_error_answers_raise_typed_exceptions(fg: Client) -> None:
    with pytest.raises(errors.InvalidFieldError) as bad_n:
        fg.generate(n=65)
    assert (bad_n.value.status, bad_n.value.field, bad_n.value.type) == (422, "n", "/problems/invalid-field")
    assert bad_n.value.errors and bad_n.value.errors[0]["field"] == "n"
    with pytest.raises(errors.InvalidFieldError) as bad_latent:
        fg.decode(np.zeros((1, LATENT_DIM + 1)))
    assert bad_latent.value.field == "latents[0]" and str(LATENT_DIM) in bad_latent.value.detail
    with pytest.raises(errors.UnsupportedImageError) as not_image:
        fg.encode([fg.generate(seed=1).png[0], b"plain text, no image"], align=False)
    assert (not_image.value.status, not_image.value.field) == (415, "image[1]")
    with pytest.raises(errors.PayloadTooLargeError) as large:
        fg.encode(b"\xff\xd8" + bytes(MAX_UPLOAD_BYTES + 10), align=False)
    assert large.value.status == 413
    with pytest.raises(errors.NoFaceFoundError) as no_face:
        fg.encode(_flat_jpeg(), align=True)
    assert (no_face.value.status, no_face.value.field) == (422, "image")  # one file: no index
    with pytest.raises(errors.NotFoundError):
        fg.send(Call("GET", "/no-such-route"))
    with pytest.raises(errors.MethodNotAllowedError) as method:
        fg.send(Call("GET", "/generate"))
    assert "POST" in method.value.headers.get("allow", "")
    with pytest.raises(errors.UnsupportedMediaTypeError):
        fg.send(Call("POST", "/interpolate", content=b"x", headers={"content-type": "text/plain"}))
    with pytest.raises(errors.BadRequestError) as broken:
        broken_multipart = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nno end'
        fg.send(
            Call("POST", "/encode", content=broken_multipart, headers={"content-type": "multipart/form-data"})
        )
    assert broken.value.status == 400


def test_model_card_and_models(fg: Client) -> None:
    models = fg.models()
    assert models["loaded"]["state"] == "ready" and models["models"] == {"tiny": [1]}
    with pytest.raises(errors.NotFoundError) as no_card:  # the tiny test artifact has none
        fg.card("tiny")
    assert "training.model_card" in no_card.value.detail
    with pytest.raises(errors.NotFoundError):
        fg.card("nobody")


def test_api_key_is_sent_as_a_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"loaded": {}})

    with Client("http://facegen.test", api_key="k-123", transport=httpx.MockTransport(handler)) as c:
        c.models()
    assert seen[0].headers["authorization"] == "Bearer k-123"


def test_edit_sends_the_contracts_body_and_reads_the_edited_latent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"model": "m", "version": 2, "seed": 5, "latents": [[0.5, -1.0]]})

    with Client("http://facegen.test", transport=httpx.MockTransport(handler)) as c:
        out = c.edit({"Smiling": 1.0}, seed=5, temperature=0.7)
        with pytest.raises(ValueError, match="exactly one"):
            c.edit({"Smiling": 1.0}, seed=5, latent=[0.0, 0.0])
    body = json.loads(seen[0].content)
    assert body == {"attributes": {"Smiling": 1.0}, "temperature": 0.7, "seed": 5}
    assert seen[0].url.path == "/edit" and seen[0].headers["accept"] == "application/json"
    np.testing.assert_array_equal(out.latents, np.asarray([[0.5, -1.0]], np.float32))


def test_png_bytes_are_what_the_service_sent(fg: Client, service: LiveService) -> None:
    faces = fg.generate(n=2, seed=3)
    raw = httpx.post(service.url + "/generate", json={"seed": 4}, timeout=30)
    np.testing.assert_array_equal(png_pixels(raw.content), faces.arrays()[1])
