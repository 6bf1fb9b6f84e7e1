"""``python -m service``: serve the model named by the FACEGEN_* environment with uvicorn."""

from __future__ import annotations

import logging

import torch
import uvicorn

from service.main import create_app
from service.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.torch_threads:
        # Before any torch work: the model thread and the image-encoding threads share this.
        torch.set_num_threads(settings.torch_threads)
        torch.set_num_interop_threads(1)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
