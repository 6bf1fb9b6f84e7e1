"""OpenAPI descriptions of the non-JSON and error responses, shared by the routes."""

from __future__ import annotations

from typing import Any

from service.errors import PROBLEM_CONTENT_TYPE
from service.schemas import Problem
from service.uploads import no_face_message

_PROBLEM = {"model": Problem, "content": {PROBLEM_CONTENT_TYPE: {}}}


def _example(slug: str, status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail, **extra}


def _problem(description: str, slug: str, status: int, title: str, detail: str) -> dict[str, Any]:
    example = _example(slug, status, title, detail)
    return {**_PROBLEM, "description": description, "content": {PROBLEM_CONTENT_TYPE: {"example": example}}}


def _problems(description: str, examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One status with several problem types, each a named example (named by its slug)."""
    named = {slug: {"summary": e["title"], "value": e} for slug, e in examples.items()}
    return {**_PROBLEM, "description": description, "content": {PROBLEM_CONTENT_TYPE: {"examples": named}}}


IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "`format=png`: a PNG (one face, or a grid); `format=json`: the JSON body below. "
        "Every PNG carries text chunks naming the model, version and seed, and marking it AI-generated.",
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "headers": {
            "X-Seed": {"description": "The first seed (face i: seed + i).", "schema": {"type": "integer"}},
            "Server-Timing": {
                "description": "queue, inference and encode durations (ms).",
                "schema": {"type": "string"},
            },
            "X-Model-Version": {
                "description": "NAME/VERSION of the model that made the response.",
                "schema": {"type": "string"},
            },
        },
    },
}

# /generate (with a seed) and /decode: the request fixes the bytes (service.api.caching).
CACHEABLE_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        **IMAGE_RESPONSES[200],
        "headers": {
            **IMAGE_RESPONSES[200]["headers"],
            "ETag": {
                "description": "When the request fixes the output (a seed, or latents): its entity tag.",
                "schema": {"type": "string"},
            },
            "Cache-Control": {
                "description": "With ETag: `public, max-age=N, immutable` (FACEGEN_CACHE_MAX_AGE_S).",
                "schema": {"type": "string"},
            },
        },
    },
    304: {"description": "`If-None-Match` holds this request's ETag: not modified (the model was not run)."},
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: _problem(
        "A field is missing, of the wrong type or out of range (`field` names it).",
        "invalid-field",
        422,
        "Invalid request field",
        "Field 'n' is invalid: Input should be less than or equal to 64. See /docs for the request schema.",
    ),
    503: _problem(
        "The queue is full (with `Retry-After`), or the model is not ready.",
        "queue-full",
        503,
        "Server busy",
        "The server is busy: 1024 rows are queued for the model (limit 1024, FACEGEN_MAX_QUEUE_ROWS). "
        "Retry after the number of seconds in the Retry-After header.",
    ),
    504: _problem(
        "The request's deadline (FACEGEN_REQUEST_TIMEOUT_S) passed.",
        "deadline-exceeded",
        504,
        "Deadline exceeded",
        "The request did not finish within its deadline (FACEGEN_REQUEST_TIMEOUT_S); the server "
        "is overloaded. Retry later or with fewer images.",
    ),
}

_INVALID_FIELD = ERROR_RESPONSES[422]["content"][PROBLEM_CONTENT_TYPE]["example"]
_QUEUE_FULL = ERROR_RESPONSES[503]["content"][PROBLEM_CONTENT_TYPE]["example"]

UPLOAD_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    400: _problem(
        "The multipart body is malformed (boundaries, part headers).",
        "bad-request",
        400,
        "Bad request",
        "Invalid multipart data. Check the request's body and Content-Type.",
    ),
    422: _problems(
        "`/problems/invalid-field`: a field is missing, of the wrong type or out of range (`field` "
        "names it). `/problems/no-face`: face alignment found no face in the file `field` names; "
        "send a photo with one clearly visible, roughly frontal face, or `align=false`.",
        {
            "invalid-field": _INVALID_FIELD,
            "no-face": _example(
                "no-face",
                422,
                "No face found",
                no_face_message("image[1]"),
                field="image[1]",
            ),
        },
    ),
    503: _problems(
        "`/problems/queue-full`: the queue is full (with `Retry-After`); `/problems/not-ready`: the "
        "model is not ready; `/problems/alignment-unavailable`: the server lacks the face "
        "detector's weights (an operator error; `align=false` still works).",
        {
            "queue-full": _QUEUE_FULL,
            "alignment-unavailable": _example(
                "alignment-unavailable",
                503,
                "Face alignment unavailable",
                "This server cannot align faces (an operator error): The face detector's weights "
                "(pnet.pt, rnet.pt, onet.pt) ship in the facenet-pytorch wheel, which is not installed; "
                "run `pip install --no-deps facenet-pytorch==2.6.0`. Meanwhile, send align=false to "
                "skip alignment.",
                field="image",
            ),
        },
    ),
    413: _problem(
        "A file is over FACEGEN_MAX_UPLOAD_BYTES, its header claims over FACEGEN_MAX_IMAGE_PIXELS, "
        "the body is over FACEGEN_MAX_REQUEST_BYTES, or there are more than 64 files.",
        "payload-too-large",
        413,
        "Payload too large",
        "The image in field 'image' is 30000×30000 = 900,000,000 pixels; the limit is 40,000,000 "
        "pixels (FACEGEN_MAX_IMAGE_PIXELS). Send a smaller image.",
    ),
    415: _problem(
        "A file is empty, not an image, truncated or corrupt. Accepted: JPEG, PNG, WebP, BMP, GIF, TIFF.",
        "unsupported-image",
        415,
        "Unsupported image",
        "The file in field 'image' is not a JPEG, PNG, WebP, BMP, GIF or TIFF image (or its header "
        "is corrupt). Send a JPEG, PNG, WebP, BMP, GIF or TIFF image.",
    ),
}
