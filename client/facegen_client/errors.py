"""The client's exceptions: one hierarchy, one class per problem type the service sends.

Every error response of the service is RFC 9457 ``application/problem+json`` with a stable
``type`` (``/problems/<slug>``); ``raise_for_problem`` turns it into the matching class below,
carrying ``type``, ``status``, ``title``, ``detail``, ``field`` (the first invalid field, e.g.
``latents[2]``), ``errors`` (every invalid field, on 422s) and the whole body as ``problem``.
A type this client does not know yet falls back to the class for its status, then to
``APIError``, so new server errors never crash a client.
"""

from __future__ import annotations

import datetime as dt
import json
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class FacegenError(Exception):
    """Base of every error this package raises."""


class APIError(FacegenError):
    """The service answered with an error status (4xx/5xx)."""

    slug = ""

    def __init__(self, problem: dict[str, Any], status: int, headers: httpx.Headers | None = None) -> None:
        self.problem = problem
        self.status: int = int(problem.get("status") or status)
        self.type: str = str(problem.get("type") or "about:blank")
        self.title: str = str(problem.get("title") or "")
        self.detail: str = str(problem.get("detail") or "")
        self.field: str | None = problem.get("field")
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        self.headers = headers if headers is not None else httpx.Headers()
        self.attempts = 1  # how many times the client sent the request (retries on 503/429)
        where = f" (field {self.field})" if self.field else ""
        super().__init__(f"{self.status} {self.type}{where}: {self.detail or self.title}")


class BadRequestError(APIError):
    """400 /problems/bad-request: a malformed body (e.g. broken multipart)."""

    slug = "bad-request"


class AuthenticationError(APIError):
    """401 /problems/unauthorized: no API key, or one the service does not know (send ``api_key=``)."""

    slug = "unauthorized"


class PermissionDeniedError(APIError):
    """403 /problems/forbidden: the API key may not use this route (e.g. an /admin route)."""

    slug = "forbidden"


class RequestTimeoutError(APIError):
    """408 /problems/request-timeout: the request's headers or body came too slowly."""

    slug = "request-timeout"


class SwapInProgressError(APIError):
    """409 /problems/swap-in-progress: another model swap is running (admin routes)."""

    slug = "swap-in-progress"


class ModelLoadError(APIError):
    """422 /problems/model-load-failed: a model swap could not load the version; the old one
    keeps serving (admin routes)."""

    slug = "model-load-failed"


class NotFoundError(APIError):
    """404 /problems/not-found: no such route, model or card."""

    slug = "not-found"


class MethodNotAllowedError(APIError):
    """405 /problems/method-not-allowed."""

    slug = "method-not-allowed"


class PayloadTooLargeError(APIError):
    """413 /problems/payload-too-large: a file or the whole request is over the service's limits."""

    slug = "payload-too-large"


class UnsupportedImageError(APIError):
    """415 /problems/unsupported-image: a file is not a decodable image."""

    slug = "unsupported-image"


class UnsupportedMediaTypeError(APIError):
    """415 /problems/unsupported-media-type: the body is neither JSON nor multipart."""

    slug = "unsupported-media-type"


class InvalidFieldError(APIError):
    """422 /problems/invalid-field: ``field`` names the first invalid field, ``errors`` all."""

    slug = "invalid-field"


class NoFaceFoundError(APIError):
    """422 /problems/no-face: alignment found no face in the upload ``field`` names."""

    slug = "no-face"


class RateLimitedError(APIError):
    """429 /problems/rate-limited: too many requests for this key; retried, honouring Retry-After."""

    slug = "rate-limited"


class ClientClosedError(APIError):
    """499 /problems/client-closed-request: only in logs; a client never sees its own."""

    slug = "client-closed-request"


class InternalServerError(APIError):
    """500 /problems/internal: a bug in the service (it is logged there)."""

    slug = "internal"


class ModelCallError(InternalServerError):
    """500 /problems/model-call-failed: the model call of this request's batch failed."""

    slug = "model-call-failed"


class ServiceUnavailableError(APIError):
    """503: the service cannot take the request now; retried, honouring Retry-After."""

    @property
    def retry_after_s(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class QueueFullError(ServiceUnavailableError):
    """503 /problems/queue-full: the batch queue is full; Retry-After says when to come back."""

    slug = "queue-full"


class NotReadyError(ServiceUnavailableError):
    """503 /problems/not-ready: the model is still loading (or failed to load)."""

    slug = "not-ready"


class AlignmentUnavailableError(ServiceUnavailableError):
    """503 /problems/alignment-unavailable: the server lacks the face detector; use align=False."""

    slug = "alignment-unavailable"


class DeadlineExceededError(APIError):
    """504 /problems/deadline-exceeded: the request did not finish within the server's deadline."""

    slug = "deadline-exceeded"


BY_SLUG: dict[str, type[APIError]] = {
    cls.slug: cls
    for cls in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        RequestTimeoutError,
        SwapInProgressError,
        ModelLoadError,
        RateLimitedError,
        NotFoundError,
        MethodNotAllowedError,
        PayloadTooLargeError,
        UnsupportedImageError,
        UnsupportedMediaTypeError,
        InvalidFieldError,
        NoFaceFoundError,
        ClientClosedError,
        InternalServerError,
        ModelCallError,
        QueueFullError,
        NotReadyError,
        AlignmentUnavailableError,
        DeadlineExceededError,
    )
}
BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    408: RequestTimeoutError,
    409: SwapInProgressError,
    413: PayloadTooLargeError,
    422: InvalidFieldError,
    429: RateLimitedError,
    500: InternalServerError,
    503: ServiceUnavailableError,
    504: DeadlineExceededError,
}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def error_for(response: httpx.Response) -> APIError:
    """The typed exception for an error response (problem+json or not)."""
    problem: dict[str, Any]
    try:
        body = response.json()
        problem = body if isinstance(body, dict) else {}
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        problem = {}
    if not problem.get("type"):  # not problem+json, e.g. a proxy's HTML page
        text = response.text[:300].strip() if response.content else ""
        problem = {
            "type": "about:blank",
            "status": response.status_code,
            "title": response.reason_phrase,
            "detail": text or response.reason_phrase,
            **problem,
        }
    slug = str(problem["type"]).rsplit("/", 1)[-1]
    status = int(problem.get("status") or response.status_code)
    cls = BY_SLUG.get(slug) or BY_STATUS.get(status) or APIError
    return cls(problem, response.status_code, response.headers)


def raise_for_problem(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise error_for(response)
