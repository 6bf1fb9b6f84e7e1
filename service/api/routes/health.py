"""GET /healthz (alive), /readyz (model ready) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.deps import ServicesDep
from service.errors import PROBLEM_CONTENT_TYPE, NotReadyError
from service.schemas import HealthResponse, Problem, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> HealthResponse:
    """200 as long as the process serves HTTP, from the first moment (the model loads in the background)."""
    return HealthResponse()


@router.get(
    "/readyz",
    summary="Readiness",
    responses={
        503: {
            "model": Problem,
            "content": {PROBLEM_CONTENT_TYPE: {}},
            "description": (
                "Not ready: loading, warming up, the load failed, or the server is draining "
                "before it stops (detail says why)."
            ),
        }
    },
)
async def readyz(services: ServicesDep) -> ReadyResponse:
    """200 once the model is loaded, its checksums verified and warm-up done; 503 (problem+json,
    with the reason) before that, for good when the load failed (see GET /models), and from
    SIGTERM until exit (draining: requests already sent still finish).
    """
    runner = services.runner
    if services.draining:
        raise NotReadyError(
            "The server is shutting down: it finishes the requests it has and takes new ones "
            "only until its listener closes. Send new requests to another replica.",
            state="draining",
        )
    if not runner.ready or runner.info is None:
        raise NotReadyError(runner.reason, state=runner.state)
    return ReadyResponse(model=runner.info.name, version=runner.info.version)


# HEAD for probes that send it (the same handlers; the server sends the headers only).
router.add_api_route("/healthz", healthz, methods=["HEAD"], operation_id="healthz_head", summary="Liveness")
router.add_api_route(
    "/readyz",
    readyz,
    methods=["HEAD"],
    operation_id="readyz_head",
    summary="Readiness",
    responses={503: {"description": "Not ready (headers only)."}},
)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain; version=0.0.4": {}}, "description": "Prometheus text format."}},
)
async def metrics(services: ServicesDep) -> Response:
    """facegen_requests_total, facegen_request_duration_seconds, facegen_batch_size,
    facegen_queue_wait_seconds, facegen_inference_duration_seconds, facegen_queue_depth,
    facegen_images_total, facegen_rejected_total, facegen_model_info (and on CUDA
    facegen_gpu_memory_allocated_bytes).
    """
    body, content_type = services.metrics.render()
    return Response(body, media_type=content_type)
