"""Admin routes (an admin API key; service.auth): switch the served model version."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from service.deps import ServicesDep
from service.errors import PROBLEM_CONTENT_TYPE
from service.schemas import Problem


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "content": {PROBLEM_CONTENT_TYPE: {}}, "description": description}


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses={
        401: _problem("No API key, or an unknown one (`WWW-Authenticate: Bearer`)."),
        403: _problem("Not an admin key; or API keys are off and FACEGEN_ADMIN_WITHOUT_KEYS is not set."),
        429: _problem("The key is over its request rate (`Retry-After`)."),
    },
)


class SwapRequest(BaseModel):
    model_config = ConfigDict(
        strict=True, extra="forbid", json_schema_extra={"examples": [{"version": 2}, {"name": "faces64"}]}
    )

    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Model to serve (a folder of the store); default: the served one.",
    )
    version: int | None = Field(default=None, ge=1, description="Version to serve; default: the highest.")


class SwapResponse(BaseModel):
    previous: str = Field(..., description="NAME/VERSION served before the swap.")
    serving: str = Field(..., description="NAME/VERSION served from now on.")
    seconds: float = Field(..., description="Load, verification, warm-up and probe time.")


class AdminModelsResponse(BaseModel):
    serving: str = Field(..., description="NAME/VERSION new requests get.")
    state: str
    retiring: list[str] = Field(..., description="Versions still finishing requests they started.")
    last_swap: dict[str, Any] | None = Field(..., description="The last swap's outcome (or reason).")


@router.get("/models", summary="Served model version and the last swap")
async def admin_models(services: ServicesDep) -> AdminModelsResponse:
    """The version new requests get, the versions still finishing their requests, and what the
    last swap did (or why it failed)."""
    models = services.models
    return AdminModelsResponse(
        serving=models.current.label,
        state=models.current.runner.state,
        retiring=[r.label for r in models.retiring],
        last_swap=models.last_swap,
    )


@router.post(
    "/swap",
    summary="Switch to another model version without a restart",
    responses={
        409: _problem("Another swap is running (`/problems/swap-in-progress`)."),
        422: _problem(
            "`/problems/model-load-failed`: the version could not be found, verified (sha256), "
            "loaded, warmed up or probed; `serving` names the version that keeps serving."
        ),
    },
)
async def swap(body: SwapRequest, services: ServicesDep, request: Request) -> SwapResponse:
    """Load `name`/`version` beside the served one, verify every file's sha256, warm it up and
    probe it, then switch new requests to it in one step; requests already running finish on
    the version they started with. On failure the served version keeps serving and the 422
    says why. Answers when the new version serves."""
    key_id = request.scope.get("state", {}).get("key_id") or "-"
    outcome = await services.models.swap(body.name, body.version, by=key_id)
    return SwapResponse(previous=outcome.previous, serving=outcome.serving, seconds=round(outcome.seconds, 3))
