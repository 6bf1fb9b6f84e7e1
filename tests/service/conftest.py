"""Fixtures of the service tests: ``client``, the in-process app (tests/conftest.py's
``app_client``) for validation, formats and errors; ``live_client`` and ``base_url``, the one
real server (``live``), for what needs a socket, a browser or concurrent connections."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.service.live import LiveService


@pytest.fixture(scope="session")
def client(app_client: httpx.Client) -> httpx.Client:
    return app_client


@pytest.fixture(scope="session")
def base_url(live: LiveService) -> str:
    return live.url


@pytest.fixture(scope="session")
def live_client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c
