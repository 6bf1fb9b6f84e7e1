"""Session fixtures shared by the service and client tests: a tiny seeded artifact in a temp
store, and one real server (`python -m service`) on it, started once for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.live import LiveService, tiny_artifact

# Small limits so the 413 cases need kilobytes, not the production megabytes.
MAX_UPLOAD_BYTES = 256 * 1024
MAX_REQUEST_BYTES = 2 * 1024 * 1024
SERVICE_ENV = {
    "FACEGEN_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    "FACEGEN_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    "FACEGEN_MAX_DELAY_MS": "20",
    # Passes of 4 rows, padded: batch-independence of pixels is then a property to test, not
    # true by construction as with the CPU default of 1 row per pass.
    "FACEGEN_CHUNK_ROWS": "4",
}


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("model_store")
    tiny_artifact(store)
    return store


@pytest.fixture(scope="session")
def live(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The real server (`python -m service`), ready; killed at the end of the session."""
    service = LiveService(tiny_store, tmp_path_factory.mktemp("service") / "service.log", SERVICE_ENV)
    try:
        service.wait_ready()
        yield service
    finally:
        service.stop()
