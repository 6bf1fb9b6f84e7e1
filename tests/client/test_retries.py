"""Retries on real 503s from a real service: while the model warms up (/problems/not-ready) and
when its queue is full (/problems/queue-full, with Retry-After), within a bounded total time.

The service here holds a row in its queue for 2 s (FACEGEN_MAX_DELAY_MS) and admits 2 rows
(FACEGEN_MAX_QUEUE_ROWS), so a second request while one waits is refused; it also sleeps 8 s
at the end of warm-up, so /readyz stays 503 that long after the port opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facegen_client import AsyncClient, Client, RetryPolicy, errors
from tests.service.live import LiveService

ENV = {"FACEGEN_MAX_QUEUE_ROWS": "2", "FACEGEN_MAX_DELAY_MS": "2000", "FACEGEN_WARMUP_DELAY_S": "8"}
NO_RETRY = RetryPolicy(max_retry_s=0)


@pytest.fixture(scope="module")
def slow(client_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with LiveService(client_store, tmp_path_factory.mktemp("slow_service") / "service.log", ENV) as live:
        live.wait_listening()
        yield live


def test_not_ready_is_retried_until_the_model_is_ready(slow: LiveService) -> None:
    with Client(slow.url, retry=NO_RETRY) as once:
        assert not once.ready()
        with pytest.raises(errors.NotReadyError) as info:
            once.generate(seed=1)
    assert (info.value.status, info.value.type, info.value.attempts) == (503, "/problems/not-ready", 1)
    with Client(slow.url, retry=RetryPolicy(max_retry_s=120, backoff_s=0.2, max_backoff_s=1)) as patient:
        faces = patient.generate(seed=1)
        assert len(faces) == 1 and patient.retries >= 1 and patient.ready()


async def _contend(url: str, retry: RetryPolicy) -> tuple[object, int]:
    """One request of 2 rows fills the queue; 0.5 s later a second request arrives."""
    async with AsyncClient(url) as first, AsyncClient(url, retry=retry) as second:

        async def late() -> object:
            await asyncio.sleep(0.5)
            try:
                return await second.generate(seed=50)
            except errors.APIError as e:
                return e

        held, result = await asyncio.gather(first.generate(n=2, seed=10), late())
        assert len(held) == 2
        return result, second.retries


def test_queue_full_carries_retry_after_and_is_retried(slow: LiveService) -> None:
    with Client(slow.url, retry=RetryPolicy(max_retry_s=120)) as c:
        c.generate(seed=0)  # ready
    refused, retries = asyncio.run(_contend(slow.url, NO_RETRY))
    assert isinstance(refused, errors.QueueFullError), refused
    assert refused.status == 503 and refused.retry_after_s is not None and refused.retry_after_s >= 1
    assert refused.attempts == 1 and retries == 0
    # A budget shorter than Retry-After gives up at once with the same typed error.
    short, retries = asyncio.run(_contend(slow.url, RetryPolicy(max_retry_s=0.5)))
    assert isinstance(short, errors.QueueFullError) and retries == 0
    faces, retries = asyncio.run(_contend(slow.url, RetryPolicy(max_retry_s=60)))
    assert not isinstance(faces, Exception) and retries >= 1
    with Client(slow.url, retry=RetryPolicy(max_retry_s=60)) as c:
        np.testing.assert_array_equal(faces.arrays(), c.generate(seed=50).arrays())  # type: ignore[attr-defined]
