"""A real `python -m service` on the tiny test artifact for the client's tests (the same
artifact and limits as tests/service), and a Client on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facegen_client import Client
from tests.service.conftest import SERVICE_ENV
from tests.service.live import LiveService, tiny_artifact


@pytest.fixture(scope="session")
def client_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("client_store")
    tiny_artifact(store)
    return store


@pytest.fixture(scope="session")
def service(client_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    live = LiveService(client_store, tmp_path_factory.mktemp("client_service") / "service.log", SERVICE_ENV)
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


@pytest.fixture
def fg(service: LiveService) -> Iterator[Client]:
    with Client(service.url, timeout=60) as c:
        yield c
