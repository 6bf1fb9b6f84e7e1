"""Concurrent requests are batched together, and batching never changes a face's pixels."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np

from tests.service.live import metric_value, parse_histogram, png_pixels, tile

SIDE = 32
N_CONCURRENT = 40


async def burst(base_url: str, seeds: list[int]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(seeds))
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as c:
        return await asyncio.gather(*(c.post("/generate", json={"seed": s}) for s in seeds))


def decode_calls(metrics: str) -> tuple[float, float]:
    """(model calls, calls of exactly one row) of the decode op so far."""
    buckets = parse_histogram(metrics, "facegen_batch_size", 'op="decode"')
    return buckets["+Inf"], buckets["1.0"]


def test_concurrent_requests_share_model_calls_and_keep_their_pixels(
    live_client: httpx.Client, base_url: str
) -> None:
    """On the real server: 40 connections at once."""
    client = live_client
    seeds = [5000 + 7 * i for i in range(N_CONCURRENT)]
    alone = {s: png_pixels(client.post("/generate", json={"seed": s}).content) for s in seeds[:8]}
    before = client.get("/metrics").text

    responses = asyncio.run(burst(base_url, seeds))

    after = client.get("/metrics").text
    assert all(r.status_code == 200 for r in responses), [r.status_code for r in responses]
    assert [int(r.headers["x-seed"]) for r in responses] == seeds
    calls = decode_calls(after)[0] - decode_calls(before)[0]
    single = decode_calls(after)[1] - decode_calls(before)[1]
    rows = metric_value(after, "facegen_batch_size_sum", 'op="decode"') - metric_value(
        before, "facegen_batch_size_sum", 'op="decode"'
    )
    assert rows == N_CONCURRENT  # every request's row was computed exactly once
    assert calls < N_CONCURRENT and calls - single >= 1, (calls, single)  # some calls held > 1 row
    # Under load, in whatever batch it landed, each face is the face it is alone.
    for r, s in zip(responses, seeds, strict=True):
        if s in alone:
            np.testing.assert_array_equal(png_pixels(r.content), alone[s])
    for r, s in zip(responses, seeds, strict=True):  # and the other way round, after the burst
        if s not in alone and s % 3 == 0:
            np.testing.assert_array_equal(
                png_pixels(r.content), png_pixels(client.post("/generate", json={"seed": s}).content)
            )


def test_face_i_of_a_grid_is_seed_plus_i_alone(client: httpx.Client) -> None:
    grid = png_pixels(client.post("/generate", json={"n": 4, "seed": 77}).content)
    assert grid.shape == (2 * (SIDE + 2) + 2, 2 * (SIDE + 2) + 2, 3)
    for i in range(4):
        single = png_pixels(client.post("/generate", json={"n": 1, "seed": 77 + i}).content)
        np.testing.assert_array_equal(tile(grid, i, 2, SIDE), single)


def test_a_64_face_grid_matches_its_faces(client: httpx.Client) -> None:
    grid = png_pixels(client.post("/generate", json={"n": 64, "seed": 9000}).content)
    for i in (0, 9, 63):  # other chunks than the first, and the last
        single = png_pixels(client.post("/generate", json={"seed": 9000 + i}).content)
        np.testing.assert_array_equal(tile(grid, i, 8, SIDE), single)
