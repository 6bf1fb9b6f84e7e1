"""Dependencies of the routes, as ``Annotated`` aliases (fastapi full-stack template style)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.batcher import Batcher
from service.errors import NotReadyError
from service.metrics import Metrics
from service.middleware import RequestContext
from service.model_handle import Model
from service.runner import ModelRunner
from service.settings import Settings
from service.versions import ModelVersions


@dataclass
class Services:
    """The app's long-lived parts, in ``app.state.services`` (built by main.create_app)."""

    settings: Settings
    metrics: Metrics
    models: ModelVersions
    # Set on SIGTERM (service.drain): /readyz answers 503 while in-flight requests finish.
    draining: bool = False

    @property
    def runner(self) -> ModelRunner:
        """The current version's runner (the one new requests get)."""
        return self.models.current.runner

    @property
    def batcher(self) -> Batcher:
        return self.models.current.batcher


# The dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
# dependency in the thread pool, which cost every request three thread hand-offs (each a
# queue put, a worker wake-up and a future resolved back on the loop) for attribute reads
# (py-spy, generate n=1 at concurrency 64: the pool's hand-off was the event loop's largest
# share). See docs/bench.md, "Where the time goes".


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def ctx_of(request: Request) -> RequestContext:
    ctx: RequestContext = request.state.ctx
    return ctx


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_settings(request: Request) -> Settings:
    return services_of(request).settings


async def get_ctx(request: Request) -> RequestContext:
    return ctx_of(request)


async def get_model(request: Request) -> Model:
    """The current model version, bound to this request for its whole life (a swap meanwhile
    does not change it); 503 (problem+json) until /readyz is 200."""
    served = services_of(request).models.current  # read once: the request keeps this version
    runner = served.runner
    if not runner.ready or runner.info is None:
        raise NotReadyError(
            f"{runner.reason} Retry when GET /readyz answers 200.", headers={"Retry-After": "5"}
        )
    ctx = ctx_of(request)
    ctx.model_version = served.label  # X-Model-Version, and the model_version metrics label
    return Model(runner.info, served.batcher, ctx, request.is_disconnected, runner.fingerprint)


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
Ctx = Annotated[RequestContext, Depends(get_ctx)]
ReadyModel = Annotated[Model, Depends(get_model)]
