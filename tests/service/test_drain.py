"""SIGTERM drains a real `python -m service`: readiness 503, every request sent finishes, exit."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn

from service.drain import DrainingServer, graceful_timeout_s
from tests.service.live import LiveService

DRAIN_S = 3.0
CLIENTS = 6
ROWS = 64  # per request: 6 × 64 rows of 1-row passes keep the model busy past the signal


def test_grace_covers_the_request_deadline() -> None:
    assert graceful_timeout_s(30.0) > 30 and graceful_timeout_s(0.5) >= 1


def test_sigterm_drains_without_losing_a_request(tiny_store: Path, tmp_path: Path) -> None:
    with LiveService(tiny_store, tmp_path / "drain.log", env={"FACEGEN_DRAIN_DELAY_S": str(DRAIN_S)}) as svc:
        svc.wait_ready()
        results: list[tuple[int, float]] = []  # (status, time.monotonic() at the answer)
        errors: list[BaseException] = []

        def client(seed: int) -> None:
            try:
                r = httpx.post(f"{svc.url}/generate", json={"n": ROWS, "seed": seed}, timeout=60)
                results.append((r.status_code, time.monotonic()))
            except BaseException as e:  # a lost request: connection reset, refused, timeout
                errors.append(e)

        threads = [threading.Thread(target=client, args=(s,)) for s in range(CLIENTS)]
        for t in threads:
            t.start()
        # Wait until the requests are queued on the server (its queue depth gauge > 0).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "facegen_queue_depth" not in _busy(svc.url):
            time.sleep(0.02)
        svc.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        # Draining: alive, not ready, and still serving new requests.
        ready = httpx.get(f"{svc.url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["state"] == "draining", ready.text
        assert httpx.get(f"{svc.url}/healthz", timeout=5).status_code == 200
        late = httpx.post(f"{svc.url}/generate", json={"n": 1, "seed": 99}, timeout=60)
        assert late.status_code == 200 and late.headers["content-type"] == "image/png"

        for t in threads:
            t.join(timeout=90)
        assert not errors, errors
        assert [s for s, _ in results] == [200] * CLIENTS, results
        # Honest: some requests were still in the server when the signal came.
        assert any(at > signalled for _, at in results), "every request finished before SIGTERM"
        svc.proc.wait(timeout=60)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{svc.url}/healthz", timeout=2)
        assert "draining" in svc.log()


def _busy(url: str) -> str:
    """The /metrics lines of a non-empty queue or a running batch ("" when idle)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith("facegen_queue_depth") and not line.rstrip().endswith(" 0.0")
    )


def _server(delay_s: float) -> tuple[DrainingServer, SimpleNamespace]:
    services = SimpleNamespace(draining=False)
    config = uvicorn.Config(lambda scope, receive, send: None, lifespan="off")
    return DrainingServer(config, services, delay_s), services  # type: ignore[arg-type]


def test_first_sigterm_drains_then_exits_after_the_delay() -> None:
    server, services = _server(0.3)
    server.handle_exit(signal.SIGTERM, None)
    assert services.draining and not server.should_exit
    assert asyncio.run(server.on_tick(1)) is False  # still serving during the drain
    time.sleep(0.35)
    assert asyncio.run(server.on_tick(2)) is True and server.should_exit


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_or_ctrl_c_skips_the_drain(second: signal.Signals) -> None:
    server, services = _server(60.0)
    if second == signal.SIGTERM:
        server.handle_exit(signal.SIGTERM, None)
        assert not server.should_exit
    server.handle_exit(second, None)
    assert services.draining and server.should_exit
