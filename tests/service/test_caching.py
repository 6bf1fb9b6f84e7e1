"""ETag, Cache-Control and 304 for outputs the request fully determines (service.api.caching)."""

from __future__ import annotations

import httpx
import pytest

from tests.service.live import metric_value, parse_histogram

LATENT = [0.1, -0.4, 0.3, 0.0, 1.2, -0.7, 0.5, 0.9]  # the tiny model's 8 dims


def decode_rows(client: httpx.Client) -> float:
    """Rows the decoder has computed so far (every /generate and /decode row goes through it)."""
    return metric_value(client.get("/metrics").text, "facegen_batch_size_sum", 'op="decode"')


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", {"seed": 31, "n": 4, "temperature": 0.7}),
        ("/generate", {"seed": 31, "format": "json"}),
        ("/decode", {"latents": [LATENT, LATENT]}),
        ("/interpolate", {"start": {"seed": 1}, "end": {"latent": LATENT}, "steps": 4, "format": "zip"}),
        ("/interpolate", {"start": {"seed": 1}, "end": {"seed": 2}, "steps": 3, "format": "gif"}),
    ],
)
def test_a_determined_request_gets_an_etag_and_a_304_without_the_model(
    client: httpx.Client, path: str, body: dict[str, object]
) -> None:
    first = client.post(path, json=body)
    assert first.status_code == 200
    tag = first.headers["etag"]
    assert tag.startswith('"') and tag.endswith('"') and len(tag) > 20
    cache_control = first.headers["cache-control"]
    assert cache_control.startswith("public, max-age=") and cache_control.endswith(", immutable")
    assert int(cache_control.split("max-age=")[1].split(",")[0]) > 0
    assert first.headers["x-model-version"] == "tiny/1"

    again = client.post(path, json=body)  # the same request: the same tag and bytes
    assert again.headers["etag"] == tag and again.content == first.content

    rows = decode_rows(client)
    metrics_before = client.get("/metrics").text
    for header in (tag, f"W/{tag}", f'"nope", {tag}', "*"):
        cached = client.post(path, json=body, headers={"If-None-Match": header})
        assert cached.status_code == 304, header
        assert cached.content == b"" and cached.headers["etag"] == tag
        assert cached.headers["cache-control"] == cache_control
    assert decode_rows(client) == rows  # the model ran for none of them
    metrics_after = client.get("/metrics").text
    assert (
        metric_value(metrics_after, "facegen_not_modified_total", f'endpoint="{path}"')
        == metric_value(metrics_before, "facegen_not_modified_total", f'endpoint="{path}"') + 4
    )
    assert parse_histogram(metrics_after, "facegen_batch_size", 'op="decode"') == parse_histogram(
        metrics_before, "facegen_batch_size", 'op="decode"'
    )

    stale = client.post(path, json=body, headers={"If-None-Match": '"another"'})
    assert stale.status_code == 200 and stale.content == first.content


def test_the_tag_follows_everything_that_changes_the_output(client: httpx.Client) -> None:
    def tag(body: dict[str, object], **headers: str) -> str:
        r = client.post("/generate", json=body, headers=headers)
        assert r.status_code == 200
        return str(r.headers["etag"])

    base = tag({"seed": 5, "n": 2})
    assert tag({"n": 2, "seed": 5}) == base  # key order is not part of the request's meaning
    assert tag({"seed": 5, "n": 2, "temperature": 1.0}) == base  # nor is spelling out a default
    others = [
        tag({"seed": 6, "n": 2}),
        tag({"seed": 5, "n": 3}),
        tag({"seed": 5, "n": 2, "temperature": 0.5}),
        tag({"seed": 5, "n": 2, "format": "json"}),
        tag({"seed": 5, "n": 2}, accept="application/json"),
    ]
    assert len({base, *others}) == 1 + len(others)


def test_a_server_picked_seed_is_not_cacheable(client: httpx.Client) -> None:
    r = client.post("/generate", json={"n": 1})
    assert r.status_code == 200 and "x-seed" in r.headers
    assert "etag" not in r.headers and "cache-control" not in r.headers
    # If-None-Match: * must not turn an undetermined request into a 304 either.
    r = client.post("/generate", json={"n": 1}, headers={"If-None-Match": "*"})
    assert r.status_code == 200 and r.content


def test_errors_are_not_cached(client: httpx.Client) -> None:
    r = client.post("/decode", json={"latents": [[0.0] * 3]})
    assert r.status_code == 422 and "etag" not in r.headers
    bad_end = {"start": {"seed": 1}, "end": {"latent": [0.0] * 3}}
    r = client.post("/interpolate", json=bad_end, headers={"If-None-Match": "*"})
    assert r.status_code == 422 and "etag" not in r.headers
