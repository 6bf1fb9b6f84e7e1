"""Model versions without a restart (service.versions): swap under load, a failed swap, the
store watch; every response names the version that made it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.errors import SwapInProgressError
from service.metrics import Metrics
from service.settings import Settings
from service.versions import ModelVersions, SwapOutcome
from tests.service.live import LiveService, assert_problem, metric_value, png_pixels, png_text, tiny_artifact

ADMIN = "admin-key-0123456789abcdef"
USER = "user-key-0123456789abcdef"
N_CLIENTS = 32
SEEDS = list(range(300, 308))
AFTER_SWAP = 3  # requests each client sends after the swap has answered


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveService]]:
    tmp = tmp_path_factory.mktemp("versions")
    store = tmp / "store"
    for seed in (0, 1, 2):  # tiny/1, tiny/2 (other weights), tiny/3 (corrupted below)
        tiny_artifact(store, seed=seed)
    weights = store / "tiny" / "3" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    weights.write_bytes(bytes(data))
    watched = tmp / "watched"
    tiny_artifact(watched, seed=0)
    specs = {
        "keyed": (
            store,
            tmp / "keyed.log",
            {
                "FACEGEN_MODEL_VERSION": "1",
                "FACEGEN_API_KEYS_ENABLED": "true",
                "FACEGEN_API_KEYS": f"ops admin {ADMIN}; app user {USER}",
                "FACEGEN_API_KEY_RATE_PER_S": "0",
                "FACEGEN_MAX_DELAY_MS": "5",
            },
        ),
        "watched": (
            watched,
            tmp / "watched.log",
            # A short deadline, so the replaced version is retired within the test.
            {
                "FACEGEN_WATCH_STORE_S": "0.3",
                "FACEGEN_ADMIN_WITHOUT_KEYS": "true",
                "FACEGEN_REQUEST_TIMEOUT_S": "2",
            },
        ),
    }
    with contextlib.ExitStack() as stack:  # every one stopped at the end, whatever happened
        services = {name: stack.enter_context(LiveService(*spec)) for name, spec in specs.items()}
        for s in services.values():
            s.wait_ready(timeout_s=120)
        yield services


@pytest.fixture(scope="module")
def keyed(servers: dict[str, LiveService]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers["keyed"].url, timeout=60, headers={"X-API-Key": USER}) as c:
        yield c


def admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {ADMIN}"})


def face(client: httpx.Client, seed: int) -> tuple[str, np.ndarray]:
    r = client.post("/generate", json={"seed": seed})
    assert r.status_code == 200, r.text
    version = r.headers["x-model-version"]
    assert png_text(r.content)["facegen:version"] == version.split("/")[1]  # header and pixels agree
    return version, png_pixels(r.content)


def test_a_failed_swap_leaves_the_old_version_serving(
    keyed: httpx.Client, servers: dict[str, LiveService]
) -> None:
    before = {s: face(keyed, s) for s in SEEDS[:2]}
    assert all(v == "tiny/1" for v, _ in before.values())
    with admin(servers["keyed"].url) as a:
        body = assert_problem(a.post("/admin/swap", json={"version": 3}), 422)
        assert body["type"] == "/problems/model-load-failed" and body["serving"] == "tiny/1"
        assert "model.safetensors" in body["detail"] and "sha256" in body["detail"].lower(), body
        body = assert_problem(a.post("/admin/swap", json={"version": 9}), 422)
        assert "no version 9" in body["detail"] and "tiny/1 keeps serving" in body["detail"]
        assert_problem(
            a.post("/admin/swap", json={"name": "../tiny"}), 422, field="name"
        )  # never leaves the store
        state = a.get("/admin/models").json()
        assert state["serving"] == "tiny/1" and state["last_swap"]["outcome"] == "failed"
        assert "no version 9" in state["last_swap"]["reason"]
    for s, (_, pixels) in before.items():
        version, again = face(keyed, s)
        assert version == "tiny/1"
        np.testing.assert_array_equal(again, pixels)
    assert keyed.get("/readyz").status_code == 200
    assert metric_value(keyed.get("/metrics").text, "facegen_model_swaps_total", 'outcome="failed"') == 2


async def _load(
    url: str, start_swap: asyncio.Event, swapped: asyncio.Event
) -> list[tuple[float, int, httpx.Response]]:
    """32 clients generating until each has sent AFTER_SWAP requests after the swap answered;
    (start time, seed, response) of every request."""
    results: list[tuple[float, int, httpx.Response]] = []
    limits = httpx.Limits(max_connections=N_CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits, headers={"X-API-Key": USER}) as c:

        async def client(i: int) -> None:
            after, k = 0, 0
            while after < AFTER_SWAP:
                seed = SEEDS[(i + k) % len(SEEDS)]
                k += 1
                was_swapped = swapped.is_set()
                t0 = time.monotonic()
                results.append((t0, seed, await c.post("/generate", json={"seed": seed})))
                if k == 2:
                    start_swap.set()  # every client is busy by now
                after += was_swapped

        await asyncio.gather(*(client(i) for i in range(N_CLIENTS)))
    return results


def test_swap_under_load_fails_no_request_and_labels_each_response(
    keyed: httpx.Client, servers: dict[str, LiveService]
) -> None:
    url = servers["keyed"].url
    v1 = {s: face(keyed, s) for s in SEEDS}
    assert all(v == "tiny/1" for v, _ in v1.values())

    async def scenario() -> tuple[list[tuple[float, int, httpx.Response]], httpx.Response, float]:
        start_swap, swapped = asyncio.Event(), asyncio.Event()
        load = asyncio.ensure_future(_load(url, start_swap, swapped))
        await start_swap.wait()
        async with httpx.AsyncClient(base_url=url, timeout=120, headers={"X-API-Key": ADMIN}) as a:
            r = await a.post("/admin/swap", json={"version": 2})
        done_at = time.monotonic()
        swapped.set()
        return await load, r, done_at

    results, swap, swapped_at = asyncio.run(scenario())
    assert swap.status_code == 200, swap.text
    assert swap.json()["previous"] == "tiny/1" and swap.json()["serving"] == "tiny/2"

    assert [r.status_code for _, _, r in results].count(200) == len(results), "a request failed"
    v2 = {s: face(keyed, s) for s in SEEDS}
    assert all(v == "tiny/2" for v, _ in v2.values())
    assert any(not np.array_equal(v1[s][1], v2[s][1]) for s in SEEDS)  # two different models
    seen = {"tiny/1": 0, "tiny/2": 0}
    for started, seed, r in results:
        version = r.headers["x-model-version"]
        seen[version] += 1
        assert png_text(r.content)["facegen:version"] == version.split("/")[1]
        # Labelled with the version that made it: its pixels are that version's for this seed.
        reference = (v1 if version == "tiny/1" else v2)[seed][1]
        np.testing.assert_array_equal(png_pixels(r.content), reference)
        if started > swapped_at:
            assert version == "tiny/2"  # once the swap has answered, new requests get the new one
    print(f"swap under load: {len(results)} requests, by version {seen}, swap {swap.json()['seconds']} s")
    assert seen["tiny/1"] > 0 and seen["tiny/2"] >= N_CLIENTS * AFTER_SWAP, seen

    metrics = keyed.get("/metrics").text
    assert metric_value(metrics, "facegen_model_info", 'version="2"') == 1
    assert metric_value(metrics, "facegen_model_info", 'version="1"') == 0
    assert metric_value(metrics, "facegen_model_swaps_total", 'outcome="ok"') == 1
    for version, count in seen.items():
        assert metric_value(metrics, "facegen_model_requests_total", f'model_version="{version}"') >= count
    models = keyed.get("/models").json()
    assert models["loaded"]["version"] == 2 and models["loaded"]["state"] == "ready"
    assert keyed.get("/readyz").json()["version"] == 2


def test_the_store_watch_swaps_to_a_new_version(servers: dict[str, LiveService], tmp_path: Path) -> None:
    service = servers["watched"]
    with httpx.Client(base_url=service.url, timeout=30) as c:
        assert c.post("/generate", json={"seed": 1}).headers["x-model-version"] == "tiny/1"
        assert c.get("/admin/models").json()["serving"] == "tiny/1"  # FACEGEN_ADMIN_WITHOUT_KEYS
        store = Path(service.env["FACEGEN_MODEL_STORE"])
        # A broken new version is refused (and not retried); then a good one is taken.
        staged = tiny_artifact(tmp_path / "staging", seed=2)
        (staged / "model.safetensors").write_bytes(b"not weights")
        shutil.copytree(staged, store / "tiny" / "2")
        deadline = time.monotonic() + 60
        while c.get("/admin/models").json()["last_swap"] is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.get("/admin/models").json()["last_swap"]["outcome"] == "failed"
        assert c.post("/generate", json={"seed": 1}).headers["x-model-version"] == "tiny/1"
        tiny_artifact(store, seed=1)  # tiny/3
        while time.monotonic() < deadline:
            r = c.post("/generate", json={"seed": 1})
            assert r.status_code == 200
            if r.headers["x-model-version"] == "tiny/3":
                break
            time.sleep(0.2)
        assert r.headers["x-model-version"] == "tiny/3", service.log()[-3000:]
        state = c.get("/admin/models").json()
        assert state["last_swap"]["previous"] == "tiny/1" and state["last_swap"]["serving"] == "tiny/3"
        # Retired once no request bound to it can still be running (deadline 2 s + margin).
        while c.get("/admin/models").json()["retiring"] and time.monotonic() < deadline + 30:
            time.sleep(0.2)
        assert c.get("/admin/models").json()["retiring"] == []
        assert "Retired tiny/1." in service.log()
        assert c.post("/generate", json={"seed": 1}).headers["x-model-version"] == "tiny/3"


# ------------------------------------------------------------------ in process (service.versions)


def _versions(store: Path, **settings: object) -> ModelVersions:
    s = Settings(
        model_store=store,
        device="cpu",
        torch_threads=1,
        warmup_batch_sizes=(1,),
        max_delay_ms=1.0,
        **settings,
    )
    return ModelVersions(s, Metrics(s.max_batch_size))


def test_one_swap_at_a_time(tmp_path: Path) -> None:
    for seed in (0, 1):
        tiny_artifact(tmp_path, seed=seed)

    async def scenario() -> list[object]:
        models = _versions(tmp_path, model_version=1)
        await models.start()
        try:
            return await asyncio.gather(
                models.swap(version=2), models.swap(version=1), return_exceptions=True
            )
        finally:
            await models.stop()

    first, second = asyncio.run(scenario())
    assert isinstance(first, SwapOutcome) and first.serving == "tiny/2"
    assert isinstance(second, SwapInProgressError) and second.status == 409


def test_a_swap_replaces_a_version_that_failed_to_load(tmp_path: Path) -> None:
    tiny_artifact(tmp_path, seed=0)

    async def scenario() -> tuple[str, str, np.ndarray]:
        models = _versions(tmp_path, model_version=7)  # no such version: the start fails
        await models.start()
        try:
            failed = models.current.runner.state
            outcome = await models.swap(version=1)
            served = models.current
            latents = np.zeros((2, served.runner.info.latent_dim), np.float32)  # type: ignore[union-attr]
            faces = (await served.batcher.run("decode", latents, deadline=time.monotonic() + 30)).output
            return failed, outcome.serving, faces
        finally:
            await models.stop()

    failed, serving, faces = asyncio.run(scenario())
    assert failed == "failed" and serving == "tiny/1"
    assert faces.shape == (2, 32, 32, 3) and faces.dtype == np.uint8
