"""Issue 12's regression corpus: every input the outside evaluation reported, with its
documented status and problem type (none may be a 5xx; every error is problem+json)."""

from __future__ import annotations

import httpx
import pytest

from tests.service import corpus
from tests.service.live import assert_problem

GOOD = corpus.sample_images()["png_rgb"]
JSON = {"content-type": "application/json"}
INVALID = "/problems/invalid-field"


def png(name: str = "a.png") -> tuple[str, bytes, str]:
    return (name, GOOD, "image/png")


# Malformed JSON is one answer on every JSON route: 422 invalid-field, field "body".
MALFORMED_JSON = {
    "invalid_utf8": b'{"seed": "\xff\xfe"}',
    "deep_nesting": b"[" * 10_000 + b"]" * 10_000,
    "5000_digit_integer": b'{"seed": ' + b"9" * 5000 + b"}",
    "truncated": b'{"seed": ',
    "not_json": b"seed=1",
}


@pytest.mark.parametrize("route", ["/generate", "/decode", "/interpolate"])
@pytest.mark.parametrize("case", sorted(MALFORMED_JSON))
def test_malformed_json_is_always_422_body(client: httpx.Client, route: str, case: str) -> None:
    r = client.post(route, content=MALFORMED_JSON[case], headers=JSON)
    problem = assert_problem(r, 422, "body")
    assert problem["type"] == INVALID and "not valid JSON" in problem["detail"]


@pytest.mark.parametrize("seed", ["²", "¹²", "9" * 5000, "-1", "1.0", " 1", str(2**63)])
def test_interpolate_form_seeds_that_were_500s(client: httpx.Client, seed: str) -> None:
    r = client.post("/interpolate", files={"start_image": png()}, data={"end_seed": seed})
    assert assert_problem(r, 422, "end_seed")["type"] == INVALID


@pytest.mark.parametrize(
    ("route", "files", "data", "field"),
    [
        ("/encode", [("image", png())], {"bogus": "1"}, "bogus"),
        ("/reconstruct", [("image", png())], {"bogus": "1"}, "bogus"),
        ("/interpolate", [("start_image", png()), ("end_image", png())], {"bogus": "1"}, "bogus"),
        ("/encode", [("image", png()), ("bogus", png())], {}, "bogus"),
        ("/encode", [("image", png())], {"align": ["true", "false"]}, "align"),
        ("/reconstruct", [("image", png())], {"format": ["png", "json"]}, "format"),
        ("/reconstruct", [("image", png())], {"pair": ["true", "true"]}, "pair"),
        ("/interpolate", [("start_image", png()), ("end_image", png())], {"steps": ["4", "5"]}, "steps"),
        (
            "/interpolate",
            [("start_image", png()), ("start_image", png("b.png")), ("end_image", png())],
            {},
            "start_image",
        ),
        ("/interpolate", [("start_image", png()), ("end_image", png())], {"start_seed": "3"}, "start_seed"),
        ("/interpolate", [("end_image", png())], {"start_seed": ["3", "4"]}, "start_seed"),
    ],
)
def test_unknown_and_repeated_multipart_fields_are_422_everywhere(
    client: httpx.Client, route: str, files: list, data: dict, field: str
) -> None:
    r = client.post(route, files=files, data=data)
    assert assert_problem(r, 422, field)["type"] == INVALID


@pytest.mark.parametrize("route", ["/encode", "/reconstruct", "/interpolate"])
def test_too_many_form_fields_is_422_not_400(client: httpx.Client, route: str) -> None:
    field = "start_image" if route == "/interpolate" else "image"
    r = client.post(route, files={field: png()}, data={f"x{i}": "1" for i in range(20)})
    assert assert_problem(r, 422, "body")["type"] == INVALID


def test_head_probes(client: httpx.Client) -> None:
    for path in ("/readyz", "/healthz"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)


def test_decode_example_from_the_openapi_document_works(client: httpx.Client) -> None:
    """The examples come from the served model (its latent_dim), so "Try it out" succeeds."""
    spec = client.get("/openapi.json").json()
    body = spec["components"]["schemas"]["DecodeRequest"]["examples"][0]
    assert len(body["latents"][0]) == client.get("/models").json()["loaded"]["latent_dim"]
    assert client.post("/decode", json=body).status_code == 200
    interp = spec["paths"]["/interpolate"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    for example in interp.values():
        r = client.post("/interpolate", json=example["value"])
        assert r.status_code == 200, r.text[:300]


def test_integral_json_numbers_are_integers(client: httpx.Client) -> None:
    """JSON Schema's "integer" (what the OpenAPI document says) includes 2.0."""
    r = client.post("/generate", json={"n": 2.0, "seed": 5.0, "format": "json"})
    assert r.status_code == 200 and len(r.json()["images"]) == 2 and r.json()["seed"] == 5


@pytest.mark.parametrize("value", ["yes", "1", "null"])
def test_form_booleans_are_true_or_false_only(client: httpx.Client, value: str) -> None:
    for route, field in (("/encode", "align"), ("/reconstruct", "pair")):
        r = client.post(route, files={"image": png()}, data={field: value})
        assert assert_problem(r, 422, field)["type"] == INVALID
    r = client.post("/interpolate", files={"start_image": png(), "end_image": png()}, data={"align": value})
    assert_problem(r, 422, "align")
