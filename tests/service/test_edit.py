"""POST /edit, attributes on /generate and GET /models, on a tiny model with random directions
(its own app, in this process), plus the answers of a model without directions (the suite's
shared app)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from facegen_core.artifact import add_file, load_artifact
from facegen_core.attributes import ATTRIBUTES_FILE, AttributeDirections
from tests.service.corpus import pattern
from tests.service.inproc import in_process
from tests.service.live import (
    apng_frames,
    assert_ai_labelled,
    assert_problem,
    png_pixels,
    tile,
    tiny_artifact,
)

NAMES = ["Smiling", "Male", "Eyeglasses"]
SIDE = 32  # the tiny model's image size


@pytest.fixture(scope="module")
def edit_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("edit_store")
    path = tiny_artifact(store)
    g = torch.Generator().manual_seed(3)
    # Large directions, so a unit of strength visibly changes the tiny model's pixels.
    attrs = AttributeDirections(NAMES, 2.0 * torch.randn(3, 8, generator=g), torch.ones(3))
    add_file(path, ATTRIBUTES_FILE, attrs.to_bytes(), {"attributes": {"names": NAMES}})
    return store


@pytest.fixture(scope="module")
def directions(edit_store: Path) -> AttributeDirections:
    attrs = load_artifact(edit_store / "tiny" / "1").attributes
    assert attrs is not None
    return attrs


@pytest.fixture(scope="module")
def edit_client(edit_store: Path) -> Iterator[httpx.Client]:
    """The app on the store with directions, in this process."""
    with in_process(edit_store) as c:
        yield c


JSON = {"Accept": "application/json"}


def seed_latent(c: httpx.Client, seed: int) -> list[float]:
    r = c.post("/generate", json={"seed": seed, "format": "json"})
    assert r.status_code == 200, r.text
    latent: list[float] = r.json()["latents"][0]
    return latent


def decoded(c: httpx.Client, latent: list[float]) -> np.ndarray:
    r = c.post("/decode", json={"latents": [latent]})
    assert r.status_code == 200, r.text
    return png_pixels(r.content)


def test_models_lists_the_attributes(edit_client: httpx.Client) -> None:
    body = edit_client.get("/models").json()
    assert body["loaded"]["attributes"] == NAMES
    assert body["attributes"] == {"tiny": NAMES}


def test_an_edit_moves_the_seed_latent_by_strength_times_direction(
    edit_client: httpx.Client, directions: AttributeDirections
) -> None:
    edit = {"Smiling": 1.5, "Eyeglasses": -0.5}
    r = edit_client.post("/edit", json={"seed": 5, "attributes": edit}, headers=JSON)
    assert r.status_code == 200, r.text
    body = r.json()
    source = np.array(seed_latent(edit_client, 5))
    np.testing.assert_allclose(body["source_latent"], source, rtol=0, atol=1e-6)
    want = source + 1.5 * directions.directions[0].numpy() - 0.5 * directions.directions[2].numpy()
    np.testing.assert_allclose(body["latents"][0], want, rtol=0, atol=1e-5)
    assert body["attributes"] == edit and body["seed"] == 5 and len(body["images"]) == 1


def test_the_png_of_an_edit_is_the_decoded_edited_latent(edit_client: httpx.Client) -> None:
    req = {"seed": 9, "attributes": {"Male": 2.0}, "temperature": 0.7}
    latent = edit_client.post("/edit", json=req, headers=JSON).json()["latents"][0]
    r = edit_client.post("/edit", json=req)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "9"
    assert json.loads(assert_ai_labelled(r.content)["facegen:attributes"]) == {"Male": 2.0}
    got = png_pixels(r.content)
    np.testing.assert_array_equal(got, decoded(edit_client, latent))
    unedited = png_pixels(edit_client.post("/generate", json={"seed": 9, "temperature": 0.7}).content)
    assert (got != unedited).any()  # the edit changed the face (the random tiny model reacts little)


def test_a_latent_can_be_edited_and_zero_strength_is_no_edit(edit_client: httpx.Client) -> None:
    latent = seed_latent(edit_client, 11)
    r = edit_client.post("/edit", json={"latent": latent, "attributes": {"Smiling": 0.0}}, headers=JSON)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["latents"][0], latent, rtol=0, atol=1e-6)
    assert r.json()["seed"] is None


def test_generate_accepts_attributes(edit_client: httpx.Client, directions: AttributeDirections) -> None:
    r = edit_client.post(
        "/generate", json={"seed": 20, "n": 2, "format": "json", "attributes": {"Male": -1.0}}
    )
    assert r.status_code == 200, r.text
    plain = edit_client.post("/generate", json={"seed": 20, "n": 2, "format": "json"}).json()["latents"]
    want = np.array(plain) - directions.directions[1].numpy()[None]
    np.testing.assert_allclose(r.json()["latents"], want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/edit", {"seed": 1, "attributes": {"Smilling": 1.0}}),
        ("/generate", {"seed": 1, "attributes": {"Smilling": 1.0}}),
        ("/edit", {"seed": 1, "sweep": {"attribute": "Smilling"}}),
    ],
)
def test_unknown_attributes_are_a_422_naming_the_valid_ones(
    edit_client: httpx.Client, path: str, body: dict[str, object]
) -> None:
    problem = assert_problem(edit_client.post(path, json=body), 422)
    assert "'Smilling'" in problem["detail"] and "Smiling, Male, Eyeglasses" in problem["detail"]
    assert problem["valid"] == NAMES


@pytest.mark.parametrize(
    "body",
    [
        {"attributes": {"Smiling": 1.0}},  # neither seed nor latent
        {"seed": 1, "latent": [0.0] * 8},  # both
        {"seed": 1, "attributes": {"Smiling": 11.0}},  # beyond ±10 sd
        {"seed": 1, "attributes": {"Smiling": "1"}},  # not a number
        {"latent": [0.0] * 7},  # the wrong latent size
        {"seed": 1, "sweep": {"attribute": "Male", "steps": 1}},
    ],
)
def test_bad_edit_bodies_are_422(edit_client: httpx.Client, body: dict[str, object]) -> None:
    assert_problem(edit_client.post("/edit", json=body), 422)


def test_a_sweep_strip_holds_one_frame_per_strength(
    edit_client: httpx.Client, directions: AttributeDirections
) -> None:
    sweep = {"attribute": "Smiling", "start": -2.0, "stop": 2.0, "steps": 5}
    body = edit_client.post("/edit", json={"seed": 3, "sweep": sweep}, headers=JSON).json()
    assert body["sweep"] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    lat = np.array(body["latents"])
    np.testing.assert_allclose(lat[2], body["source_latent"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(lat[4] - lat[0], 4.0 * directions.directions[0].numpy(), rtol=0, atol=1e-5)
    strip = png_pixels(edit_client.post("/edit", json={"seed": 3, "sweep": sweep}).content)
    assert strip.shape[:2] == (SIDE + 4, 5 * (SIDE + 2) + 2)  # one row, 2 px padding
    np.testing.assert_array_equal(tile(strip, 0, 5, SIDE), decoded(edit_client, body["latents"][0]))
    r = edit_client.post("/edit", json={"seed": 3, "sweep": {**sweep, "format": "apng"}})
    frames = apng_frames(r.content)
    assert len(frames) == 5
    np.testing.assert_array_equal(frames[-1], decoded(edit_client, body["latents"][-1]))


def _photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pattern()).save(buf, "PNG")
    return buf.getvalue()


def test_a_photo_is_encoded_then_edited(edit_client: httpx.Client, directions: AttributeDirections) -> None:
    files = {"image": ("face.png", _photo(), "image/png")}
    mu = edit_client.post("/encode", files=files).json()["items"][0]["mu"]
    data = {"attributes": json.dumps({"Eyeglasses": 2.0})}
    r = edit_client.post("/edit", files=files, data=data, headers=JSON)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["source_latent"], mu, rtol=0, atol=1e-5)
    want = np.array(mu) + 2.0 * directions.directions[2].numpy()
    np.testing.assert_allclose(r.json()["latents"][0], want, rtol=0, atol=1e-4)
    png = edit_client.post("/edit", files=files, data=data)
    assert png.headers["content-type"] == "image/png" and png_pixels(png.content).shape[:2] == (SIDE, SIDE)


@pytest.mark.parametrize(
    ("data", "field"),
    [({"attributes": "{not json"}, "attributes"), ({"attributes": '{"Bald": 1}'}, "attributes.Bald")],
)
def test_bad_multipart_edits_are_422(edit_client: httpx.Client, data: dict[str, str], field: str) -> None:
    files = {"image": ("face.png", _photo(), "image/png")}
    assert_problem(edit_client.post("/edit", files=files, data=data), 422, field)


def test_a_model_without_directions_lists_none_and_refuses_edits(client: httpx.Client) -> None:
    body = client.get("/models").json()
    assert body["loaded"]["attributes"] == [] and body["attributes"] == {"tiny": []}
    problem = assert_problem(client.post("/edit", json={"seed": 1, "attributes": {"Smiling": 1.0}}), 422)
    assert "no attribute directions" in problem["detail"] and problem["valid"] == []
    assert client.post("/edit", json={"seed": 1}).status_code == 200  # no edit: the face itself


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": [1, 2]}, 422),
        ({"content": b"seed=1", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 422),
        ({"json": {"seed": 1, "attributes": {"x" * 5000: 1.0}}}, 422),
        ({"json": {"seed": 1, "attributes": {f"a{i}": 1.0 for i in range(65)}}}, 422),
        ({"data": {"attributes": "{}"}, "files": {"other": ("a.png", b"x", "image/png")}}, 422),
        ({"data": {"image": "not a file"}, "files": {"other": ("a.png", b"x", "image/png")}}, 422),
    ],
)
def test_odd_requests_get_a_problem_not_a_500(
    edit_client: httpx.Client, kwargs: dict[str, object], status: int
) -> None:
    problem = assert_problem(edit_client.post("/edit", **kwargs), status)  # type: ignore[arg-type]
    assert len(problem["detail"]) < 1000


def test_a_photo_can_be_swept(edit_client: httpx.Client) -> None:
    files = {"image": ("face.png", _photo(), "image/png")}
    data = {"sweep": json.dumps({"attribute": "Male", "start": -1, "stop": 1, "steps": 3})}
    r = edit_client.post("/edit", files=files, data=data, headers=JSON)
    assert r.status_code == 200, r.text
    assert r.json()["sweep"] == [-1.0, 0.0, 1.0] and len(r.json()["images"]) == 3
    np.testing.assert_allclose(r.json()["latents"][1], r.json()["source_latent"], rtol=0, atol=1e-6)


def test_openapi_documents_edit(edit_client: httpx.Client) -> None:
    spec = edit_client.get("/openapi.json").json()
    op = spec["paths"]["/edit"]["post"]
    body = op["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)
    schemas = spec["components"]["schemas"]
    ref = body["application/json"]["schema"]["$ref"].split("/")[-1]
    assert ref == "EditRequest" and schemas[ref]["examples"]
    assert {"seed", "latent", "attributes", "sweep"} <= set(schemas[ref]["properties"])
    assert "Sweep" in schemas and "EditResponse" in schemas
    assert "attributes" in schemas["GenerateRequest"]["properties"]
