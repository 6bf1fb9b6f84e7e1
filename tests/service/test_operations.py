"""Readiness, a corrupt artifact, overload (503 + Retry-After) and deadlines (504), each on a
server of its own; the three start in parallel. Slow (``-m slow``): three real servers, one
of them held in warm-up on purpose. No assertion here reads a clock: where timing matters,
the settings make the outcomes tell the orders of events apart."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.live import LiveService, assert_problem, metric_value, parse_histogram

pytestmark = pytest.mark.slow

WARMUP_DELAY_S = 3.0
# Longer than the client waits for a 504 (DEADLINE_CLIENT_TIMEOUT_S): a 504 that arrives at
# all came from the request's 0.3 s deadline, not from a batch formed after the fill wait.
FILL_WAIT_MS = 10_000
DEADLINE_CLIENT_TIMEOUT_S = 8.0


@pytest.fixture(scope="module")
def servers(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveService]]:
    tmp = tmp_path_factory.mktemp("operations")
    corrupt_store = tmp / "corrupt_store"
    shutil.copytree(tiny_store, corrupt_store)
    weights = corrupt_store / "tiny" / "1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    weights.write_bytes(bytes(data))
    specs = {
        # Warm-up held for a while; then a deadline far shorter than the batch-fill wait.
        "slow": (
            tiny_store,
            {
                "FACEGEN_WARMUP_DELAY_S": str(WARMUP_DELAY_S),
                "FACEGEN_REQUEST_TIMEOUT_S": "0.3",
                "FACEGEN_MAX_DELAY_MS": str(FILL_WAIT_MS),
            },
        ),
        "corrupt": (corrupt_store, {}),
        # A queue of 4 rows that waits 300 ms for a batch to fill: a burst overflows it.
        "small_queue": (tiny_store, {"FACEGEN_MAX_QUEUE_ROWS": "4", "FACEGEN_MAX_DELAY_MS": "300"}),
    }
    with contextlib.ExitStack() as stack:  # every one stopped at the end, whatever happened
        yield {
            name: stack.enter_context(LiveService(store, tmp / f"{name}.log", env))
            for name, (store, env) in specs.items()
        }


def test_readyz_is_503_until_warm_up_ends(servers: dict[str, LiveService]) -> None:
    slow = servers["slow"]
    slow.wait_listening()
    assert httpx.get(slow.url + "/healthz").status_code == 200  # alive while loading
    body = assert_problem(httpx.get(slow.url + "/readyz"), 503)
    assert body["type"] == "/problems/not-ready" and body["state"] in ("loading", "warming_up")
    r = httpx.post(slow.url + "/generate", json={"seed": 1})
    assert assert_problem(r, 503)["type"] == "/problems/not-ready" and r.headers["retry-after"]
    # Readiness only ever goes from not ready to ready, so all of the above happened before it.
    assert httpx.get(slow.url + "/readyz").status_code == 503
    slow.wait_ready()
    assert httpx.get(slow.url + "/readyz").json()["status"] == "ready"
    assert httpx.get(slow.url + "/models").json()["loaded"]["state"] == "ready"


def test_a_request_past_its_deadline_is_504_and_its_rows_never_run(servers: dict[str, LiveService]) -> None:
    slow = servers["slow"]
    slow.wait_ready()
    # Answered before the client gives up, so at its 0.3 s deadline and not after the 10 s
    # fill wait (a ReadTimeout here would mean the deadline did not end the request).
    r = httpx.post(slow.url + "/generate", json={"seed": 1}, timeout=DEADLINE_CLIENT_TIMEOUT_S)
    assert assert_problem(r, 504)["type"] == "/problems/deadline-exceeded"
    # Its row left the queue with the 504 (depth 0) and no batch has run: it never will.
    metrics = httpx.get(slow.url + "/metrics").text
    assert parse_histogram(metrics, "facegen_batch_size", 'op="decode"').get("+Inf", 0.0) == 0.0
    assert metric_value(metrics, "facegen_rejected_total", 'reason="deadline_exceeded"') == 1
    assert metric_value(metrics, "facegen_queue_depth", 'op="decode"') == 0


def test_a_corrupt_artifact_keeps_readyz_503_with_the_reason(servers: dict[str, LiveService]) -> None:
    bad = servers["corrupt"]
    bad.wait_loaded()
    assert httpx.get(bad.url + "/models").json()["loaded"]["state"] == "failed"
    body = assert_problem(httpx.get(bad.url + "/readyz"), 503)
    assert "Checksum mismatch" in body["detail"] and "model.safetensors" in body["detail"]
    models = httpx.get(bad.url + "/models").json()
    assert models["loaded"]["state"] == "failed" and "Checksum mismatch" in models["loaded"]["reason"]
    assert models["loaded"]["manifest"]["name"] == "tiny"  # what it tried to load
    assert "Checksum mismatch" in bad.log() and "model.safetensors" in bad.log()
    assert httpx.get(bad.url + "/healthz").status_code == 200  # the process keeps running
    assert_problem(httpx.post(bad.url + "/generate", json={"seed": 1}), 503)
    time.sleep(0.5)
    assert httpx.get(bad.url + "/readyz").status_code == 503 and bad.proc.poll() is None
    assert "facegen_model_info{" not in httpx.get(bad.url + "/metrics").text


async def _burst(url: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=n)) as c:
        return await asyncio.gather(*(c.post("/generate", json={"seed": i}) for i in range(n)))


def test_overload_gives_503_with_retry_after_and_serves_the_rest(servers: dict[str, LiveService]) -> None:
    srv = servers["small_queue"]
    srv.wait_ready()
    responses = asyncio.run(_burst(srv.url, 40))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503}, codes
    refused = [r for r in responses if r.status_code == 503]
    assert refused and codes.count(200) >= 4, codes
    for r in refused:
        body = assert_problem(r, 503)
        assert body["type"] == "/problems/queue-full" and int(r.headers["retry-after"]) >= 1
    for r, seed in zip(responses, range(40), strict=True):
        if r.status_code == 200:
            assert r.headers["content-type"] == "image/png" and r.headers["x-seed"] == str(seed)
    metrics = httpx.get(srv.url + "/metrics").text
    assert metric_value(metrics, "facegen_rejected_total", 'reason="queue_full"') == len(refused)
    assert metric_value(metrics, "facegen_requests_total", 'endpoint="/generate",status="503"') == len(
        refused
    )
    assert metric_value(metrics, "facegen_queue_depth", 'op="decode"') == 0
    assert httpx.post(srv.url + "/generate", json={"seed": 1}).status_code == 200  # still serving


def test_rows_of_a_client_that_hung_up_are_dropped(servers: dict[str, LiveService]) -> None:
    srv = servers["small_queue"]  # waits 300 ms for a batch to fill; the client leaves after 50 ms
    srv.wait_ready()
    before = httpx.get(srv.url + "/metrics").text
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/generate", json={"seed": 123}, timeout=httpx.Timeout(5, read=0.05))
    time.sleep(0.8)
    after = httpx.get(srv.url + "/metrics").text

    def delta(name: str, labels: str) -> float:
        return metric_value(after, name, labels) - metric_value(before, name, labels)

    assert delta("facegen_rejected_total", 'reason="client_closed_request"') == 1
    assert delta("facegen_batch_size_sum", 'op="decode"') == 0  # its row never reached the model
    assert delta("facegen_requests_total", 'endpoint="/generate",status="499"') == 1
