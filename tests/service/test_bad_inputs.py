"""Bad input gets its documented 4xx as problem+json, never a 500, and the server goes on serving."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import MAX_REQUEST_BYTES, MAX_UPLOAD_BYTES
from tests.service import corpus
from tests.service.live import assert_problem

UPLOAD_ROUTES = [
    ("/encode", "image"),
    ("/reconstruct", "image"),
    ("/interpolate", "start_image"),
    ("/edit", "image"),
]
GOOD = corpus.sample_images()["png_rgb"]


@pytest.fixture(autouse=True)
def still_serving(client: httpx.Client) -> Any:
    """After every bad request, a generate works."""
    yield
    r = client.post("/generate", json={"seed": 1})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def upload(client: httpx.Client, route: str, field: str, data: bytes) -> httpx.Response:
    files = {field: ("upload.bin", data, "application/octet-stream")}
    if route == "/interpolate":
        files["end_image"] = ("good.png", GOOD, "image/png")
    return client.post(route, files=files)


@pytest.mark.parametrize(("route", "field"), UPLOAD_ROUTES)
@pytest.mark.parametrize("case", sorted(corpus.bad_inputs()))
def test_bad_uploads(client: httpx.Client, route: str, field: str, case: str) -> None:
    data, status = corpus.bad_inputs()[case]
    body = assert_problem(upload(client, route, field, data), status, field)
    assert body["type"] == ("/problems/payload-too-large" if status == 413 else "/problems/unsupported-image")


@pytest.mark.parametrize(("route", "field"), UPLOAD_ROUTES)
def test_a_file_over_the_byte_limit_is_413(client: httpx.Client, route: str, field: str) -> None:
    body = assert_problem(
        upload(client, route, field, corpus.oversized_upload(MAX_UPLOAD_BYTES + 1)), 413, field
    )
    assert "FACEGEN_MAX_UPLOAD_BYTES" in body["detail"]


def test_the_bad_file_among_several_is_named(client: httpx.Client) -> None:
    files = [("image", ("a.png", GOOD, "image/png")), ("image", ("b.txt", corpus.text_file(), "text/plain"))]
    assert_problem(client.post("/encode", files=files), 415, "image[1]")


def test_a_body_over_the_request_limit_is_413(client: httpx.Client) -> None:
    files = {"image": ("big.png", corpus.oversized_upload(MAX_REQUEST_BYTES + 1024), "image/png")}
    body = assert_problem(client.post("/encode", files=files), 413)
    assert "FACEGEN_MAX_REQUEST_BYTES" in body["detail"]


@pytest.mark.parametrize("route", ["/encode", "/interpolate"])
def test_a_chunked_body_over_the_request_limit_is_413(client: httpx.Client, route: str) -> None:
    """No Content-Length: the limit is enforced while the body streams in."""
    boundary = "facegen-test-boundary"
    field = "image" if route == "/encode" else "start_image"

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="a.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        for _ in range(MAX_REQUEST_BYTES // 65536 + 2):
            yield bytes(65536)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post(
        route, content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "transfer-encoding" in r.request.headers and "content-length" not in r.request.headers
    assert "FACEGEN_MAX_REQUEST_BYTES" in assert_problem(r, 413)["detail"]


def test_more_than_64_files_is_413(client: httpx.Client) -> None:
    tiny_png = corpus.sample_images()["png_grey"]
    files = [("image", (f"{i}.png", tiny_png, "image/png")) for i in range(65)]
    body = assert_problem(client.post("/encode", files=files), 413)
    assert "at most 64" in body["detail"]
    ok = client.post("/encode", files=files[:64])
    assert ok.status_code == 200 and len(ok.json()["items"]) == 64


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/generate", {"n": 0}, "n"),
        ("/generate", {"n": 65}, "n"),
        ("/generate", {"n": "3"}, "n"),
        ("/generate", {"n": 2.5}, "n"),  # 2.0 is the integer 2 (JSON Schema), accepted
        ("/generate", {"n": True}, "n"),
        ("/generate", {"seed": -1}, "seed"),
        ("/generate", {"seed": "abc"}, "seed"),
        ("/generate", {"seed": 2**64}, "seed"),
        ("/generate", {"temperature": 0}, "temperature"),
        ("/generate", {"temperature": 2.5}, "temperature"),
        ("/generate", {"temperature": "hot"}, "temperature"),
        ("/generate", {"format": "bmp"}, "format"),
        ("/generate", {"temp": 1.0}, "temp"),
        ("/generate", [1, 2], "body"),
        ("/decode", {"latents": [[0.0] * 7]}, "latents[0]"),
        ("/decode", {"latents": [[0.0] * 8, [0.0] * 9]}, "latents[1]"),
        ("/decode", {"latents": []}, "latents"),
        ("/decode", {"latents": [[0.0] * 8] * 65}, "latents"),
        ("/decode", {"latents": [[0.0] * 7 + [1e6]]}, "latents[0][7]"),
        ("/decode", {"latents": [[0.0] * 7 + ["x"]]}, "latents[0][7]"),
        ("/decode", {}, "latents"),
        ("/interpolate", {"start": {"seed": 1}, "end": {"seed": 2}, "steps": 1}, "steps"),
        ("/interpolate", {"start": {"seed": 1}, "end": {"seed": 2}, "steps": 65}, "steps"),
        ("/interpolate", {"start": {"seed": 1}, "end": {"seed": 2}, "method": "cubic"}, "method"),
        ("/interpolate", {"start": {"seed": 1}, "end": {"seed": 2}, "format": "mp4"}, "format"),
        ("/interpolate", {"start": {"seed": 1}}, "end"),
        ("/interpolate", {"start": {"seed": 1}, "end": {"latent": [0.0] * 3}}, "end.latent"),
        ("/interpolate", {"start": {"seed": 1}, "end": {"seed": -5}}, "end.seed"),
    ],
)
def test_invalid_json_fields_are_422_naming_the_field(
    client: httpx.Client, route: str, body: object, field: str
) -> None:
    problem = assert_problem(client.post(route, json=body), 422, field)
    assert problem["type"] == "/problems/invalid-field" and f"'{field}'" in problem["detail"]


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_latents_are_422(client: httpx.Client, bad: str) -> None:
    raw = '{"latents": [[0, 0, 0, 0, 0, 0, 0, BAD]]}'.replace("BAD", bad)
    r = client.post("/decode", content=raw, headers={"content-type": "application/json"})
    assert_problem(r, 422, "latents[0][7]")
    raw = '{"start": {"latent": [BAD, 0, 0, 0, 0, 0, 0, 0]}, "end": {"seed": 1}}'.replace("BAD", bad)
    r = client.post("/interpolate", content=raw, headers={"content-type": "application/json"})
    assert_problem(r, 422, "start.latent[0]")


def test_malformed_json_and_wrong_content_types(client: httpx.Client) -> None:
    r = client.post("/generate", content=b"{bad", headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_problem(r, 422, "body")["detail"]
    assert_problem(client.post("/generate", content=b"n=1", headers={"content-type": "text/plain"}), 422)
    assert_problem(client.post("/interpolate", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_problem(client.post("/encode", json={"image": "x"}), 422, "image")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"steps": "many"}, "steps"),
        ({"steps": "1"}, "steps"),
        ({"format": "mp4"}, "format"),
        ({"colour": "red"}, "colour"),
        ({"end_seed": "-3"}, "end_seed"),
        # str.isdigit() accepts these; int() does not (they were 500s; issue 12).
        ({"end_seed": "²"}, "end_seed"),
        ({"end_seed": "¹²"}, "end_seed"),
        ({"end_seed": "٣"}, "end_seed"),  # Arabic-Indic three: int() takes it, the API does not
        ({"end_seed": "9" * 5000}, "end_seed"),  # past int()'s 4,300-digit limit
        ({"end_seed": str(2**63)}, "end_seed"),
    ],
)
def test_interpolate_form_fields(client: httpx.Client, data: dict[str, str], field: str) -> None:
    files = {"start_image": ("a.png", GOOD, "image/png")}
    if "end_seed" not in data:
        files["end_image"] = ("b.png", GOOD, "image/png")
    assert_problem(client.post("/interpolate", files=files, data=data), 422, field)


def test_interpolate_form_without_an_end_is_422(client: httpx.Client) -> None:
    r = client.post("/interpolate", files={"start_image": ("a.png", GOOD, "image/png")})
    assert_problem(r, 422, "end_image")


def test_reconstruct_form_fields(client: httpx.Client) -> None:
    files = {"image": ("a.png", GOOD, "image/png")}
    assert_problem(client.post("/reconstruct", files=files, data={"format": "gif"}), 422, "format")
    assert_problem(client.post("/reconstruct", files=files, data={"pair": "maybe"}), 422, "pair")
    assert_problem(client.post("/reconstruct", data={"pair": "true"}), 422, "image")


def test_unknown_route_and_wrong_method(client: httpx.Client) -> None:
    assert assert_problem(client.get("/nope"), 404)["type"] == "/problems/not-found"
    r = client.get("/generate")
    assert assert_problem(r, 405)["type"] == "/problems/method-not-allowed" and r.headers["allow"] == "POST"
