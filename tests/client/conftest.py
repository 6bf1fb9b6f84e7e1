"""The client's tests run against the same real `python -m service` on the tiny test artifact
as tests/service (tests/conftest.py), and a Client on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facegen_client import Client
from tests.service.live import LiveService


@pytest.fixture(scope="session")
def client_store(tiny_store: Path) -> Path:
    """The service tests' tiny store (tests/conftest.py)."""
    return tiny_store


@pytest.fixture(scope="session")
def service(live: LiveService) -> LiveService:
    """The service tests' server (tests/conftest.py): one process for both suites."""
    return live


@pytest.fixture
def fg(service: LiveService) -> Iterator[Client]:
    with Client(service.url, timeout=60) as c:
        yield c
