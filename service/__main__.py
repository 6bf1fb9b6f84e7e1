"""``python -m service``: serve the model named by the FACEGEN_* environment with uvicorn."""

from __future__ import annotations

import logging
import os

# Before torch is imported: OpenMP's default busy-wait makes idle intra-op threads spin for
# ~100 ms after every forward, stealing the cores the event loop and the PNG encoders need
# (measured by `python -m bench`: a batch-1 forward went from 8 ms to 70-200 ms on 2 cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import uvicorn

from service.connections import guarded_protocol
from service.drain import DrainingServer, graceful_timeout_s
from service.main import create_app
from service.memory import tune_allocator
from service.runner import set_torch_threads
from service.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Before any torch work: the model thread and the image-encoding threads share this.
    set_torch_threads(settings.torch_threads)
    tune_allocator()  # before the first large allocation (see service/memory.py)
    protocol = guarded_protocol(settings.header_timeout_s, settings.max_connections, settings.http_parser)
    logging.getLogger(__name__).info(
        "%s: at most %d open connections; request heads within %g s, body pieces within %g s.",
        protocol.__name__,
        protocol.max_connections,
        settings.header_timeout_s,
        settings.body_timeout_s,
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        http=protocol,
        timeout_keep_alive=settings.keep_alive_s,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=graceful_timeout_s(settings.request_timeout_s),
    )
    DrainingServer(config, app.state.services, settings.drain_delay_s).run()


if __name__ == "__main__":
    main()
