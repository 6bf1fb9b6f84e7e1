"""Session fixtures on the one real server of tests/conftest.py: its URL and an httpx client."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.service.live import LiveService


@pytest.fixture(scope="session")
def base_url(live: LiveService) -> str:
    return live.url


@pytest.fixture(scope="session")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c
