"""The app factory: wires settings, metrics, API keys, model versions, routes and handlers.

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

from service.api.inputs import FORM_LIMITS
from service.api.routes import ROUTERS
from service.api.routes.pages import mount_static
from service.auth import AuthMiddleware, KeyRing, add_security, is_admin_path
from service.deps import Services
from service.metrics import Metrics
from service.middleware import ServiceMiddleware
from service.openapi import build_openapi
from service.problems import install as install_problem_handlers
from service.settings import Settings
from service.versions import ModelVersions

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
    keys = KeyRing.from_settings(settings)  # a bad key entry stops the start, with its line
    models = ModelVersions(settings, metrics)
    services = Services(settings=settings, metrics=metrics, models=models)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.ensure_future(models.start())
        try:
            yield
        finally:
            loading.cancel()
            await models.stop()

    app = FastAPI(
        title="facegen",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        form_limits=FORM_LIMITS,
        docs_url=None,  # /docs and /redoc are served offline by service.api.routes.pages
        redoc_url=None,
    )
    app.state.services = services
    for router in ROUTERS:
        app.include_router(router)
    mount_static(app)
    install_problem_handlers(app, metrics, settings.max_request_bytes)
    admin_routes = {
        path: frozenset(getattr(r, "methods", None) or ())
        for router in ROUTERS
        for r in router.routes
        if is_admin_path(path := getattr(r, "path", ""))
    }
    app.add_middleware(  # inside ServiceMiddleware
        AuthMiddleware, settings=settings, keys=keys, metrics=metrics, admin_routes=admin_routes
    )
    app.add_middleware(
        ServiceMiddleware,
        metrics=metrics,
        request_timeout_s=settings.request_timeout_s,
        max_request_bytes=settings.max_request_bytes,
        body_timeout_s=settings.body_timeout_s,
        endpoints=_endpoint_paths(app),
    )
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


def _endpoint_paths(app: FastAPI) -> list[str]:
    """The paths that get their own ``endpoint`` label; any other path is "other"."""
    paths = [getattr(route, "path", "") for router in ROUTERS for route in router.routes]
    return [p for p in [*paths, app.openapi_url, app.docs_url, app.redoc_url] if p]


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The OpenAPI document (service/openapi.py), cached once the model's latent_dim is known;
    with the API-key security schemes when keys are on."""
    if app.openapi_schema is None:
        info = app.state.services.runner.info
        schema = build_openapi(
            app,
            info.latent_dim if info is not None else None,
            (list(info.attributes.names) if info.attributes is not None else [])
            if info is not None
            else None,
        )
        if settings.api_keys_enabled:
            add_security(schema, settings.open_paths)
        if info is None:
            return schema
        app.openapi_schema = schema
    return app.openapi_schema
