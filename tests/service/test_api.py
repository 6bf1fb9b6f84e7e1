"""End to end against the real server: every endpoint in every format, every output decoded."""

from __future__ import annotations

import base64
import re

import httpx
import numpy as np

from facegen_core.latent import noise_for_seed, noise_for_seeds
from service.uploads import decode_upload
from tests.service import corpus
from tests.service.live import (
    apng_frames,
    assert_ai_labelled,
    gif_frames,
    metric_value,
    png_pixels,
    png_text,
    tile,
    tiny_prior,
    zip_pngs,
)

SIDE, DIM = 32, 8  # the tiny model
TIMING = re.compile(r"^queue;dur=\d+\.\d, inference;dur=\d+\.\d(, upload;dur=\d+\.\d)?, encode;dur=\d+\.\d$")


def generate(client: httpx.Client, **body: object) -> httpx.Response:
    r = client.post("/generate", json=body)
    assert r.status_code == 200, r.text
    return r


def face(client: httpx.Client, seed: int, temperature: float = 1.0) -> np.ndarray:
    return png_pixels(generate(client, seed=seed, temperature=temperature).content)


def b64png(s: str) -> bytes:
    return base64.b64decode(s, validate=True)


def test_health_ready_and_models(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").json() == {"status": "ready", "model": "tiny", "version": 1}
    m = client.get("/models").json()
    loaded = m["loaded"]
    assert loaded["state"] == "ready" and (loaded["name"], loaded["version"]) == ("tiny", 1)
    assert (loaded["latent_dim"], loaded["image_size"], loaded["channels"], loaded["device"]) == (
        DIM,
        SIDE,
        3,
        "cpu",
    )
    assert loaded["manifest"]["files"]["model.safetensors"]["sha256"]
    assert loaded["decoder_memory_format"] == "channels_last" and loaded["cuda_graphs"] is False  # CPU
    assert m["models"] == {"tiny": [1]} and m["default"] == "tiny"


def test_generate_one_png(client: httpx.Client) -> None:
    r = generate(client, seed=7)
    assert r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "7"
    assert TIMING.match(r.headers["server-timing"]), r.headers["server-timing"]
    assert float(r.headers["server-timing"].split("inference;dur=")[1].split(",")[0]) > 0
    img = png_pixels(r.content)
    assert img.shape == (SIDE, SIDE, 3) and img.std() > 1
    text = assert_ai_labelled(r.content)
    assert text["facegen:seed"] == "7" and text["facegen:temperature"] == "1"
    assert "trainedAlgorithmicMedia" in text["DigitalSourceType"]


def test_generate_grid_tiles_are_the_single_faces(client: httpx.Client) -> None:
    r = generate(client, n=5, seed=100)
    grid = png_pixels(r.content)
    assert grid.shape == (2 * (SIDE + 2) + 2, 3 * (SIDE + 2) + 2, 3)  # ceil(√5) = 3 columns, 2 rows
    assert png_text(r.content)["facegen:seed"] == "100"
    for i in range(5):
        np.testing.assert_array_equal(tile(grid, i, 3, SIDE), face(client, 100 + i))
    assert not np.array_equal(tile(grid, 0, 3, SIDE), tile(grid, 1, 3, SIDE))


def test_generate_without_seed_picks_one_and_says_which(client: httpx.Client) -> None:
    r = generate(client)
    seed = int(r.headers["x-seed"])
    assert 0 <= seed < 2**31 and png_text(r.content)["facegen:seed"] == str(seed)
    np.testing.assert_array_equal(png_pixels(r.content), face(client, seed))
    assert int(generate(client).headers["x-seed"]) != seed  # 1 in 2³¹ chance of a false failure


def test_generate_json(client: httpx.Client) -> None:
    r = generate(client, n=3, seed=5, temperature=0.5, format="json")
    body = r.json()
    assert r.headers["x-seed"] == "5"
    assert (body["model"], body["version"], body["seed"]) == ("tiny", 1, 5)
    want = tiny_prior(DIM).from_noise(noise_for_seeds(5, 3, DIM, 0.5)).numpy()  # z = mean + L·ε
    np.testing.assert_array_equal(np.asarray(body["latents"], np.float32), want)  # exact through JSON
    assert len(body["images"]) == 3
    for i, s in enumerate(body["images"]):
        png = b64png(s)
        assert assert_ai_labelled(png)["facegen:seed"] == str(5 + i)
        np.testing.assert_array_equal(png_pixels(png), face(client, 5 + i, 0.5))


def test_temperature_scales_the_latent(client: httpx.Client) -> None:
    cold = generate(client, seed=9, temperature=0.1, format="json").json()["latents"][0]
    hot = generate(client, seed=9, temperature=2.0, format="json").json()["latents"][0]
    # Temperature scales the noise ε around the prior's mean: z - mean scales 20×.
    mean = tiny_prior(DIM).mean
    assert mean is not None
    m = mean.numpy()
    np.testing.assert_allclose(np.asarray(hot) - m, 20 * (np.asarray(cold) - m), rtol=1e-5, atol=1e-5)
    assert not np.array_equal(face(client, 9, 0.1), face(client, 9, 2.0))


def test_decode_matches_generate(client: httpx.Client) -> None:
    gen = generate(client, n=4, seed=31, format="json").json()
    r = client.post("/decode", json={"latents": gen["latents"]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and "x-seed" not in r.headers
    assert_ai_labelled(r.content)
    grid = png_pixels(r.content)
    for i in range(4):
        np.testing.assert_array_equal(tile(grid, i, 2, SIDE), face(client, 31 + i))
    j = client.post("/decode", json={"latents": gen["latents"][:1], "format": "json"}).json()
    assert j["seed"] is None and j["latents"] == gen["latents"][:1]
    np.testing.assert_array_equal(png_pixels(b64png(j["images"][0])), face(client, 31))


def test_encode_every_accepted_format(client: httpx.Client) -> None:
    samples = corpus.sample_images()
    files = [("image", (f"{name}.bin", data, "application/octet-stream")) for name, data in samples.items()]
    r = client.post("/encode", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["version"], body["latent_dim"]) == ("tiny", 1, DIM)
    assert len(body["items"]) == len(samples)
    mus = np.asarray([it["mu"] for it in body["items"]])
    logvars = np.asarray([it["logvar"] for it in body["items"]])
    assert mus.shape == logvars.shape == (len(samples), DIM) and np.isfinite(mus).all()
    names = list(samples)
    # Lossless RGB samples are the same pixels, so the same latent; a batch of 17 gives each
    # the latent it gets alone.
    png, bmp = names.index("png_rgb"), names.index("bmp")
    np.testing.assert_array_equal(mus[png], mus[bmp])
    alone = client.post("/encode", files={"image": ("a.png", samples["png_rgb"], "image/png")}).json()
    assert alone["items"][0]["mu"] == body["items"][png]["mu"]


def test_reconstruct_png_pair_and_json(client: httpx.Client) -> None:
    png = corpus.sample_images()["png_rgb"]
    crop = decode_upload(png, max_pixels=10**7, image_size=SIDE, channels=3, crop="celeba")
    one = client.post("/reconstruct", files={"image": ("a.png", png, "image/png")})
    assert one.status_code == 200 and one.headers["content-type"] == "image/png"
    assert_ai_labelled(one.content)
    recon = png_pixels(one.content)
    assert recon.shape == (SIDE, SIDE, 3)
    # reconstruct = decode(mu of encode), exactly (mu survives JSON as float32)
    mu = client.post("/encode", files={"image": ("a.png", png, "image/png")}).json()["items"][0]["mu"]
    decoded = client.post("/decode", json={"latents": [mu]})
    np.testing.assert_array_equal(png_pixels(decoded.content), recon)

    pair = client.post("/reconstruct", files={"image": ("a.png", png, "image/png")}, data={"pair": "true"})
    grid = png_pixels(pair.content)
    assert grid.shape == (SIDE + 4, 2 * SIDE + 6, 3)
    np.testing.assert_array_equal(tile(grid, 0, 2, SIDE), crop)  # the model's input crop
    np.testing.assert_array_equal(tile(grid, 1, 2, SIDE), recon)

    files = [("image", (f"{i}.png", png, "image/png")) for i in range(3)]
    several = client.post("/reconstruct", files=files, data={"pair": "true"})
    assert png_pixels(several.content).shape == (
        3 * (SIDE + 2) + 2,
        2 * (SIDE + 2) + 2,
        3,
    )  # one row per file
    j = client.post("/reconstruct", files=files, data={"pair": "true", "format": "json"}).json()
    assert len(j["images"]) == len(j["inputs"]) == len(j["latents"]) == 3
    np.testing.assert_array_equal(png_pixels(b64png(j["images"][2])), recon)
    crop_png = b64png(j["inputs"][0])
    np.testing.assert_array_equal(png_pixels(crop_png), crop)
    assert "AI-Generated" not in png_text(crop_png)  # the client's own photo is not labelled AI
    assert np.asarray(j["latents"][0], np.float32).tolist() == mu
    grid4 = png_pixels(client.post("/reconstruct", files=files + files[:1]).content)
    assert grid4.shape == (2 * (SIDE + 2) + 2, 2 * (SIDE + 2) + 2, 3)


def test_interpolate_every_format(client: httpx.Client) -> None:
    base = {"start": {"seed": 1}, "end": {"seed": 2}, "steps": 6}
    first, last = face(client, 1), face(client, 2)

    apng = client.post("/interpolate", json=base)
    assert apng.status_code == 200 and apng.headers["content-type"] == "image/png"
    frames = apng_frames(apng.content)
    assert len(frames) == 6 and frames[0].shape == (SIDE, SIDE, 3)
    np.testing.assert_array_equal(frames[0], first)  # both ends included, exactly
    np.testing.assert_array_equal(frames[-1], last)
    text = assert_ai_labelled(apng.content)
    assert text["facegen:start"] == "seed 1" and text["facegen:method"] == "slerp"

    gif = client.post("/interpolate", json={**base, "format": "gif"})
    assert gif.headers["content-type"] == "image/gif"
    gframes, comment = gif_frames(gif.content)
    assert len(gframes) == 6 and b"AI-generated" in comment
    assert np.abs(gframes[0].astype(int) - first.astype(int)).mean() < 8  # 256-colour palette

    strip = client.post("/interpolate", json={**base, "format": "strip"})
    s = png_pixels(strip.content)
    assert strip.headers["content-type"] == "image/png" and s.shape == (SIDE + 4, 6 * (SIDE + 2) + 2, 3)
    for i in range(6):
        np.testing.assert_array_equal(tile(s, i, 6, SIDE), frames[i])

    z = client.post("/interpolate", json={**base, "format": "zip"})
    assert z.headers["content-type"] == "application/zip"
    members = zip_pngs(z.content)
    assert list(members) == [f"frame_{i:03d}.png" for i in range(6)]
    for i, data in enumerate(members.values()):
        assert assert_ai_labelled(data)["facegen:frame"] == str(i)
        np.testing.assert_array_equal(png_pixels(data), frames[i])

    j = client.post("/interpolate", json={**base, "format": "json"}).json()
    assert len(j["images"]) == len(j["latents"]) == 6
    want = tiny_prior(DIM).from_noise(noise_for_seed(1, DIM)[None])[0].numpy()  # the seed's z, not its ε
    np.testing.assert_array_equal(np.asarray(j["latents"][0], np.float32), want)
    np.testing.assert_array_equal(png_pixels(b64png(j["images"][3])), frames[3])

    lerp = client.post("/interpolate", json={**base, "method": "lerp", "format": "json"}).json()
    assert lerp["latents"][0] == j["latents"][0] and lerp["latents"][3] != j["latents"][3]


def test_interpolate_from_a_latent_and_default_steps(client: httpx.Client) -> None:
    latent = generate(client, seed=3, format="json").json()["latents"][0]
    r = client.post("/interpolate", json={"start": {"latent": latent}, "end": {"seed": 4}})
    frames = apng_frames(r.content)
    assert len(frames) == 8
    np.testing.assert_array_equal(frames[0], face(client, 3))


def test_interpolate_multipart_images(client: httpx.Client) -> None:
    samples = corpus.sample_images()
    a, b = samples["png_rgb"], samples["jpeg_grey"]
    files = {"start_image": ("a.png", a, "image/png"), "end_image": ("b.jpg", b, "image/jpeg")}
    r = client.post("/interpolate", files=files, data={"steps": "4", "format": "strip"})
    assert r.status_code == 200, r.text
    strip = png_pixels(r.content)
    assert strip.shape == (SIDE + 4, 4 * (SIDE + 2) + 2, 3)
    recon_a = png_pixels(client.post("/reconstruct", files={"image": ("a.png", a, "image/png")}).content)
    np.testing.assert_array_equal(tile(strip, 0, 4, SIDE), recon_a)  # start = decode(mu(a))
    assert png_text(r.content)["facegen:start"] == "image"

    mixed = client.post(
        "/interpolate",
        files={"start_image": ("a.png", a, "image/png")},
        data={"end_seed": "4", "steps": "3", "format": "json"},
    ).json()
    assert len(mixed["images"]) == 3
    np.testing.assert_array_equal(
        np.asarray(mixed["latents"][-1], np.float32),
        tiny_prior(DIM).from_noise(noise_for_seed(4, DIM)[None])[0].numpy(),
    )


def test_openapi_and_docs(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/generate",
        "/decode",
        "/encode",
        "/reconstruct",
        "/interpolate",
        "/models",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"], path
    schemas = spec["components"]["schemas"]
    assert schemas["GenerateRequest"]["examples"] and schemas["InterpolateRequest"]["examples"]
    body = spec["paths"]["/interpolate"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    gen = spec["paths"]["/generate"]["post"]["responses"]
    assert "image/png" in gen["200"]["content"] and "application/problem+json" in gen["422"]["content"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_metrics_count_requests_images_and_model(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    generate(client, n=3, seed=1)
    client.post("/generate", json={"n": 0})
    after = client.get("/metrics").text
    for family in (
        "facegen_requests_total",
        "facegen_request_duration_seconds",
        "facegen_batch_size",
        "facegen_queue_wait_seconds",
        "facegen_inference_duration_seconds",
        "facegen_queue_depth",
        "facegen_images_total",
        "facegen_rejected_total",
        "facegen_model_info",
    ):
        assert re.search(rf"^# TYPE {family}(_total)? ", after, re.M), family
    assert "facegen_gpu_memory_allocated_bytes" not in after  # CPU server

    def delta(name: str, labels: str) -> float:
        return metric_value(after, name, labels) - metric_value(before, name, labels)

    assert delta("facegen_requests_total", 'endpoint="/generate",status="200"') == 1
    assert delta("facegen_requests_total", 'endpoint="/generate",status="422"') == 1
    assert delta("facegen_images_total", 'endpoint="/generate"') == 3
    assert delta("facegen_rejected_total", 'reason="invalid_field"') == 1
    assert delta("facegen_request_duration_seconds_count", 'endpoint="/generate"') == 2
    assert metric_value(after, "facegen_model_info", 'name="tiny",precision="fp32",sha256=') == 1
    assert 'device="cpu"' in next(x for x in after.splitlines() if x.startswith("facegen_model_info{"))
    assert 'le="64.0"' in after and 'le="32.0"' in after  # batch-size buckets 1, 2, 4, … 64
    client.get("/no/such/path")
    assert 'endpoint="other",status="404"' in client.get("/metrics").text
