"""Exception handlers: every error response is RFC 9457 ``application/problem+json``.

``{type, title, status, detail}`` plus extension members: ``field`` (the first invalid
field, as a path like ``latents[2]``) and ``errors`` (every invalid field) on 422s. Every
refused request is also counted in ``facegen_rejected_total{reason}``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    PROBLEM_CONTENT_TYPE,
    BadRequestError,
    ClientClosedError,
    ClientDisconnectedError,
    FacegenError,
    InvalidFieldError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
)
from service.metrics import Metrics
from service.settings import MAX_ROWS_PER_REQUEST

log = logging.getLogger(__name__)


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_CONTENT_TYPE


def field_path(loc: Sequence[int | str]) -> str:
    """('body', 'latents', 2, 0) -> 'latents[2][0]'; the 'body'/'query' prefix is dropped."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "form"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in ("SeedEnd", "LatentEnd", "function-after[...]"):
            continue  # union branch names pydantic puts in the location
        else:
            out += f".{p}" if out else str(p)
    return out or "body"


def _error_item(e: Any) -> dict[str, Any]:
    if e.get("type") == "json_invalid":  # loc is ("body", character position)
        pos = e.get("loc", ("body", "?"))[-1]
        reason = (e.get("ctx") or {}).get("error", "JSON decode error")
        where = f" at character {pos}" if isinstance(pos, int) else ""
        return {
            "field": "body",
            "message": f"The body is not valid JSON ({reason}{where})",
            "type": "json_invalid",
        }
    return {
        "field": field_path(e.get("loc", ())),
        "message": str(e.get("msg", "is invalid")),
        "type": e.get("type"),
    }


def json_problem(reason: str) -> InvalidFieldError:
    """The one answer to a body that is not valid JSON, whichever parser found out (FastAPI's
    ``json.loads`` for /generate and /decode, pydantic's for /interpolate): 422, field "body"."""
    return validation_problem(
        [{"type": "json_invalid", "loc": ("body", "?"), "msg": "JSON decode error", "ctx": {"error": reason}}]
    )


def _unparsable_json(exc: BaseException | None) -> str | None:
    """Why FastAPI could not parse a JSON body (its 400 "error parsing the body"), else None.

    json.loads raises UnicodeDecodeError (invalid UTF-8), RecursionError (deep nesting) or
    ValueError (an integer of more than 4,300 digits) where pydantic's parser says json_invalid.
    """
    if isinstance(exc, UnicodeDecodeError):
        return "the body is not UTF-8"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if isinstance(exc, ValueError):
        return str(exc).split(";")[0] or "unreadable"
    return None


def validation_problem(errors: Sequence[Any]) -> InvalidFieldError:
    items: list[dict[str, Any]] = []
    for e in errors:
        item = _error_item(e)
        if item not in items:  # union members repeat e.g. an extra key once per branch
            items.append(item)
    first = items[0] if items else {"field": "body", "message": "The request body is invalid."}
    more = f" ({len(items) - 1} more error(s) in 'errors')" if len(items) > 1 else ""
    message = str(first["message"]).rstrip(".")
    return InvalidFieldError(
        f"Field '{first['field']}' is invalid: {message}.{more} See /docs for the request schema.",
        field=first["field"],
        errors=items,
    )


def _from_http_exception(
    request: Request, exc: StarletteHTTPException, max_request_bytes: int
) -> FacegenError:
    detail = str(exc.detail)
    if exc.status_code == 404:
        return NotFoundError(f"There is no route {request.url.path}. The API is described at /docs.")
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        return MethodNotAllowedError(
            f"{request.method} is not allowed on {request.url.path}; use {allow or 'another method'}.",
            headers={"Allow": allow} if allow else None,
        )
    if exc.status_code == 413:
        return PayloadTooLargeError.request_body(max_request_bytes)
    if exc.status_code == 400 and detail.startswith("Too many fields"):
        # The limit is above every route's own fields, so only unknown or repeated ones reach it.
        return InvalidFieldError(
            f"{detail.rstrip('.')}: the form holds unknown or repeated fields. See /docs for the "
            "fields of this route.",
            field="body",
        )
    if exc.status_code == 400 and detail.startswith("Too many files"):
        return PayloadTooLargeError(
            f"{detail.rstrip('.')}: a request may carry at most {MAX_ROWS_PER_REQUEST} images "
            f"(2 for /interpolate). Send the rest in another request."
        )
    err = BadRequestError(f"{detail.rstrip('.')}. Check the request's body and Content-Type.")
    err.status = exc.status_code
    return err


def problem_response(exc: FacegenError, metrics: Metrics | None = None) -> ProblemResponse:
    # Refusals only: a 500 is a facegen bug, counted by facegen_requests_total{status="500"}.
    if metrics is not None and (exc.status < 500 or exc.status in (503, 504)):
        metrics.rejected.labels(reason=exc.slug.replace("-", "_")).inc()
    return ProblemResponse(exc.to_problem(), status_code=exc.status, headers=exc.headers or None)


def install(app: FastAPI, metrics: Metrics, max_request_bytes: int) -> None:
    """Register the handlers on ``app``."""

    async def on_facegen_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, FacegenError)
        if exc.status >= 500:
            log.error(
                "%s %s -> %d: %s",
                request.method,
                request.url.path,
                exc.status,
                exc.detail,
                exc_info=exc.__cause__,
            )
        return problem_response(exc, metrics)

    async def on_validation_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(validation_problem(exc.errors()), metrics)

    async def on_http_exception(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, StarletteHTTPException)
        if isinstance(exc.__cause__, FacegenError):  # e.g. the body limit, hit while FastAPI read the body
            return problem_response(exc.__cause__, metrics)
        if exc.status_code == 400 and (reason := _unparsable_json(exc.__cause__)) is not None:
            return problem_response(json_problem(reason), metrics)
        return problem_response(_from_http_exception(request, exc, max_request_bytes), metrics)

    async def on_disconnect(request: Request, exc: Exception) -> ProblemResponse:
        return problem_response(ClientClosedError(str(exc)), metrics)

    async def on_unexpected(request: Request, exc: Exception) -> ProblemResponse:
        log.exception("Unhandled error on %s %s.", request.method, request.url.path, exc_info=exc)
        return problem_response(
            FacegenError("facegen failed on this request because of a bug; it has been logged."), metrics
        )

    app.add_exception_handler(FacegenError, on_facegen_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(ClientDisconnectedError, on_disconnect)
    app.add_exception_handler(Exception, on_unexpected)
