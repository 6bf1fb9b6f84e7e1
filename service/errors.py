"""The service's errors, one documented hierarchy, each rendered as RFC 9457 problem+json.

Every error a client can cause maps to a 4xx/503/504 with a sentence a client developer
can act on; only a bug in facegen itself is a 500. ``type`` is a relative URI reference
(RFC 9457 §3.1.1) naming the kind of problem; it is stable, so clients may switch on it.
"""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


class FacegenError(Exception):
    """Base class. ``status``, ``title`` and ``slug`` are fixed per subclass."""

    status: int = 500
    title: str = "Internal server error"
    slug: str = "internal"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra  # extension members (RFC 9457 §3.2), e.g. {"field": "n"}

    @property
    def type(self) -> str:
        return f"/problems/{self.slug}"

    def to_problem(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


class InvalidFieldError(FacegenError):
    """422: a field has the wrong type, is out of range, or is missing."""

    status, title, slug = 422, "Invalid request field", "invalid-field"


class NoFaceFoundError(FacegenError):
    """422: face alignment found no face in an upload (``field`` names the file); ``align=false``
    skips alignment."""

    status, title, slug = 422, "No face found", "no-face"


class PayloadTooLargeError(FacegenError):
    """413: an upload exceeds max_upload_bytes, or an image header claims more than max_image_pixels."""

    @classmethod
    def request_body(cls, max_request_bytes: int) -> PayloadTooLargeError:
        """The whole request body is over ``max_request_bytes`` (the middleware's or Starlette's
        refusal, worded alike)."""
        return cls(
            f"The request body is over {max_request_bytes:,} bytes (FACEGEN_MAX_REQUEST_BYTES). "
            f"Send fewer or smaller files."
        )

    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnsupportedImageError(FacegenError):
    """415: an upload is not a decodable JPEG, PNG, WebP, BMP, GIF or TIFF image."""

    status, title, slug = 415, "Unsupported image", "unsupported-image"


class QueueFullError(FacegenError):
    """503 + Retry-After: the batch queue holds max_queue_rows rows; back off and retry."""

    status, title, slug = 503, "Server busy", "queue-full"

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, int(retry_after_s)))})
        self.retry_after_s = max(1, int(retry_after_s))


class NotReadyError(FacegenError):
    """503: the model is not loaded (still warming up, or its load failed)."""

    status, title, slug = 503, "Model not ready", "not-ready"


class AlignmentUnavailableError(FacegenError):
    """503: the upload needs face alignment, but the server lacks the detector's weights (the
    facenet-pytorch wheel): an operator error; ``align=false`` still works."""

    status, title, slug = 503, "Face alignment unavailable", "alignment-unavailable"


class DeadlineExceededError(FacegenError):
    """504: the request did not finish within request_timeout_s."""

    status, title, slug = 504, "Deadline exceeded", "deadline-exceeded"


class BadRequestError(FacegenError):
    """400: a malformed body (e.g. broken multipart)."""

    status, title, slug = 400, "Bad request", "bad-request"


class RequestTimeoutError(FacegenError):
    """408: the client stopped sending its request (FACEGEN_BODY_TIMEOUT_S between body pieces)."""

    status, title, slug = 408, "Request timeout", "request-timeout"


class MethodNotAllowedError(FacegenError):
    """405: the route exists but not for this method (the ``Allow`` header says which)."""

    status, title, slug = 405, "Method not allowed", "method-not-allowed"


class UnsupportedMediaTypeError(FacegenError):
    """415: a body that is neither JSON nor multipart where either is accepted."""

    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class ClientClosedError(FacegenError):
    """499 (nginx's "client closed request"): logged and counted, never seen by the client."""

    status, title, slug = 499, "Client closed request", "client-closed-request"


class NotFoundError(FacegenError):
    """404: no such route or resource."""

    status, title, slug = 404, "Not found", "not-found"


class ModelCallError(FacegenError):
    """500: the model call for this request's batch failed (a facegen bug, not bad input)."""

    status, title, slug = 500, "Model call failed", "model-call-failed"


class UnauthorizedError(FacegenError):
    """401 + WWW-Authenticate: no API key, or one the server does not know."""

    status, title, slug = 401, "Unauthorized", "unauthorized"


class ForbiddenError(FacegenError):
    """403: the key is valid but its role may not use this route (admin routes), or admin routes
    are off because API keys are off."""

    status, title, slug = 403, "Forbidden", "forbidden"


class RateLimitedError(FacegenError):
    """429 + Retry-After: this key sent more requests than its rate allows."""

    status, title, slug = 429, "Too many requests", "rate-limited"


class SwapInProgressError(FacegenError):
    """409: another model swap is running; retry when it has finished."""

    status, title, slug = 409, "Swap in progress", "swap-in-progress"


class ModelLoadError(FacegenError):
    """422: the requested model version could not be loaded, verified or warmed up; the previous
    version keeps serving (``serving`` names it)."""

    status, title, slug = 422, "Model load failed", "model-load-failed"


class ClientDisconnectedError(Exception):
    """The caller went away before its result was ready; its rows were dropped. Not a problem
    a client is sent (nobody is left to read it): problems.py logs it as a 499
    ClientClosedError."""
