"""Session fixtures shared by the service and client tests: a tiny seeded artifact in a temp
store; the app on it in this process (``app_client``: validation, formats, errors); and one
real server (``python -m service``) on it (``live``), each started once for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.inproc import InProcessService, settings_for
from tests.service.live import LiveService, tiny_artifact

# Small limits so the 413 cases need kilobytes, not the production megabytes.
MAX_UPLOAD_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 2 * 1024 * 1024
SERVICE_SETTINGS: dict[str, Any] = {
    "max_upload_bytes": MAX_UPLOAD_BYTES,
    "max_request_bytes": MAX_REQUEST_BYTES,
    "max_delay_ms": 20,
    # Passes of 4 rows, padded: batch-independence of pixels is then a property to test, not
    # true by construction as with the CPU default of 1 row per pass.
    "chunk_rows": 4,
}
# The same settings as a process's environment.
SERVICE_ENV = {f"FACEGEN_{name.upper()}": str(value) for name, value in SERVICE_SETTINGS.items()}


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    tiny_artifact(store)
    return store


@pytest.fixture(scope="session")
def app_service(tiny_store: Path) -> Iterator[InProcessService]:
    """``create_app`` on the tiny store in this process (tests/service/inproc.py), ready; the
    same settings as ``live``."""
    with InProcessService(settings_for(tiny_store, **SERVICE_SETTINGS)) as service:
        yield service


@pytest.fixture(scope="session")
def app_client(app_service: InProcessService) -> Iterator[httpx.Client]:
    """A sync httpx.Client on ``app_service``."""
    with app_service.client() as client:
        yield client


@pytest.fixture(scope="session")
def live(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The real server (`python -m service`), ready; killed at the end of the session."""
    with LiveService(tiny_store, tmp_path_factory.mktemp("service") / "service.log", SERVICE_ENV) as service:
        service.wait_ready()
        yield service
