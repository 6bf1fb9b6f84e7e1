"""Per-request bookkeeping, and the ASGI middleware that creates it and turns it into metrics.

The middleware is pure ASGI (not BaseHTTPMiddleware) so it adds no task or copy per request.
For every HTTP request it

* creates a ``RequestContext`` (deadline, timings, image count) in ``scope["state"]``, where
  routes find it as ``request.state.ctx`` (``deps.Ctx``);
* answers 408 when the next piece of the body takes over ``body_timeout_s`` (a stalled upload
  must not hold a connection and its buffers forever);
* refuses a body over ``max_request_bytes`` (413 problem+json): at once when Content-Length
  says so, else from ``receive`` as the bytes arrive (the handlers render that error too);
* adds the ``Server-Timing`` header (queue, inference, upload decoding, image encoding), and
  ``X-Model-Version`` (NAME/VERSION) when the request was bound to a model;
* counts ``facegen_requests_total``, ``facegen_request_duration_seconds``,
  ``facegen_images_total`` and ``facegen_model_requests_total`` under the route path (or
  "other", so labels stay few).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLargeError, RequestTimeoutError
from service.metrics import Metrics
from service.problems import problem_response


@dataclass
class RequestContext:
    """What a request's handlers accumulate while it runs (seconds)."""

    started: float
    deadline: float  # time.monotonic() by which the response must be ready, else 504
    queue_s: float = 0.0
    inference_s: float = 0.0
    upload_s: float = 0.0
    encode_s: float = 0.0
    images: int = 0  # images returned, for facegen_images_total
    model_version: str | None = None  # NAME/VERSION of the model bound to the request (X-Model-Version)
    key_id: str | None = None  # the API key's id (never the key), when keys are on

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def server_timing(self) -> str:
        parts = [("queue", self.queue_s), ("inference", self.inference_s)]
        if self.upload_s:
            parts.append(("upload", self.upload_s))
        parts.append(("encode", self.encode_s))
        return ", ".join(f"{name};dur={1000.0 * s:.1f}" for name, s in parts)


class ServiceMiddleware:
    """Request context, Server-Timing and request metrics (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        request_timeout_s: float,
        max_request_bytes: int,
        endpoints: Iterable[str],
        body_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.timeout_s = request_timeout_s
        self.max_bytes = max_request_bytes
        self.body_timeout_s = body_timeout_s
        self.endpoints = frozenset(endpoints)

    def too_large(self) -> PayloadTooLargeError:
        return PayloadTooLargeError.request_body(self.max_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        ctx = RequestContext(started=now, deadline=now + self.timeout_s)
        scope.setdefault("state", {})["ctx"] = ctx
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status = 500  # what the client sees if the app dies before starting a response

        async def send_with_timing(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [*message.get("headers", []), (b"server-timing", ctx.server_timing().encode())]
                if ctx.model_version is not None:
                    headers.append((b"x-model-version", ctx.model_version.encode()))
                message = {**message, "headers": headers}
            await send(message)

        received, body_done = 0, False

        async def receive_with_limit() -> Message:
            nonlocal received, body_done
            if body_done:  # afterwards receive() only waits for the client to hang up
                return await receive()
            try:
                async with asyncio.timeout(self.body_timeout_s):  # unlike wait_for, no task per call
                    message = await receive()
            except TimeoutError:
                raise RequestTimeoutError(
                    f"No part of the request body arrived for {self.body_timeout_s:g} s "
                    "(FACEGEN_BODY_TIMEOUT_S). Send the body without pausing."
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self.too_large()
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        try:
            length = Headers(scope=scope).get("content-length", "")
            # ASCII digits of a sane length: "²" passes str.isdigit() but not int().
            if length.isascii() and length.isdigit() and len(length) < 20 and int(length) > self.max_bytes:
                await problem_response(self.too_large(), self.metrics)(scope, receive, send_with_timing)
                return
            await self.app(scope, receive_with_limit, send_with_timing)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.request_duration.labels(endpoint=endpoint).observe(time.monotonic() - now)
            if status == 304:
                self.metrics.not_modified.labels(endpoint=endpoint).inc()
            if ctx.model_version is not None:
                self.metrics.model_requests.labels(model_version=ctx.model_version, endpoint=endpoint).inc()
            if ctx.images and status < 400:
                self.metrics.images.labels(endpoint=endpoint).inc(ctx.images)
