"""The app factory: wires settings, metrics, model runner, batcher, routes and handlers.

Nothing here computes anything; ``create_app(settings)`` returns a FastAPI app whose lifespan
starts the batcher and loads the model in the background, so /healthz answers at once and
/readyz turns 200 when the model is loaded, verified and warmed up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from service.api.routes import ROUTERS
from service.api.routes.pages import mount_static
from service.batcher import Batcher
from service.context import ServiceMiddleware
from service.deps import Services
from service.inference import DECODE, ENCODE
from service.metrics import Metrics
from service.problems import install as install_problem_handlers
from service.runner import ModelRunner
from service.schemas import InterpolateRequest
from service.settings import MAX_ROWS_PER_REQUEST, Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Faces from a VAE-GAN (Larsen et al. 2015, *Autoencoding beyond pixels using a learned
similarity metric*). Sample faces from seeds, decode latents, encode photos, reconstruct
and interpolate. Every image is AI-generated and says so in its PNG text chunks.

Errors are RFC 9457 `application/problem+json`. Requests from many clients are batched
into few model calls (dynamic batching); a full queue answers 503 with `Retry-After`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics(settings.max_batch_size)
    runner = ModelRunner(settings)
    batcher = Batcher(
        {ENCODE: runner.encode, DECODE: runner.decode},
        max_batch_size=settings.max_batch_size,
        max_delay_s=settings.max_delay_s,
        max_queue_rows=settings.max_queue_rows,
        executor=runner.executor,
        observer=metrics,
    )
    services = Services(settings=settings, metrics=metrics, runner=runner, batcher=batcher)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        loading = asyncio.ensure_future(_load(services))
        try:
            yield
        finally:
            loading.cancel()
            await batcher.stop()
            runner.shutdown()

    app = FastAPI(
        title="facegen",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        form_limits={"max_files": MAX_ROWS_PER_REQUEST, "max_fields": 16, "max_part_size": 64 * 1024},
        docs_url=None,  # /docs and /redoc are served offline by service.api.routes.pages
        redoc_url=None,
    )
    app.state.services = services
    for router in ROUTERS:
        app.include_router(router)
    mount_static(app)
    install_problem_handlers(app, metrics, settings.max_request_bytes)
    app.add_middleware(
        ServiceMiddleware,
        metrics=metrics,
        request_timeout_s=settings.request_timeout_s,
        max_request_bytes=settings.max_request_bytes,
        endpoints=_endpoint_paths(app),
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _endpoint_paths(app: FastAPI) -> list[str]:
    """The paths that get their own ``endpoint`` label; any other path is "other"."""
    paths = [getattr(route, "path", "") for router in ROUTERS for route in router.routes]
    return [p for p in [*paths, app.openapi_url, app.docs_url, app.redoc_url] if p]


async def _load(services: Services) -> None:
    """Load on the model thread; then publish facegen_model_info (and GPU memory on CUDA)."""
    runner = services.runner
    await asyncio.get_running_loop().run_in_executor(runner.executor, runner.load)
    if runner.ready and runner.info is not None:
        info, s = runner.info, services.settings
        services.metrics.model_info.labels(
            name=info.name,
            version=str(info.version),
            sha256=info.sha256,
            device=runner.device.type,
            precision=s.precision,
        ).set(1)
        if runner.device.type == "cuda":
            services.metrics.track_gpu_memory(runner.gpu_memory_allocated)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the JSON body of /interpolate (declared by hand: that route also
    takes multipart, so FastAPI cannot infer it)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [(InterpolateRequest, "validation")], ref_template="#/components/schemas/{model}"
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
        app.openapi_schema = schema
    return app.openapi_schema
