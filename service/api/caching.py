"""HTTP caching of outputs the request fully determines (a seed or latents, and the model).

The same body (seed or latents, n, temperature, format, ...), the same ``Accept`` and the same
model version on the same server configuration give the same bytes (runner.py's determinism
note), so such a response gets a strong ``ETag`` and ``Cache-Control: public, max-age=N,
immutable``. The tag is a hash of the route, the body (as validated, so key order and
spacing do not matter), ``Accept``, and the runner's fingerprint (weights sha256, device,
precision, rows per pass, PNG level, torch version and threads). A request whose
``If-None-Match`` holds the tag is answered 304 before the model is asked for anything.
A request without a seed (the server picks one) is not cacheable and gets neither header.
"""

from __future__ import annotations

import hashlib
import json

from fastapi import Request, Response
from pydantic import BaseModel

from service.model_handle import Model


def etag(request: Request, body: BaseModel, model: Model) -> str:
    """A strong entity tag (quoted) for ``body`` sent to this route and served by ``model``."""
    key = {
        "path": request.url.path,
        "body": body.model_dump(mode="json"),
        "accept": request.headers.get("accept", ""),
        "model": f"{model.info.name}/{model.info.version}",
        "runner": model.fingerprint,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f'"{digest[:40]}"'


def headers(tag: str, max_age_s: int) -> dict[str, str]:
    return {"ETag": tag, "Cache-Control": f"public, max-age={max_age_s}, immutable", "Vary": "Accept"}


def matches(request: Request, tag: str) -> bool:
    """True when ``If-None-Match`` lists ``tag`` (weak comparison, RFC 9110 §13.1.2) or is ``*``."""
    header = request.headers.get("if-none-match")
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == tag for t in tags)


def not_modified(request: Request, tag: str, max_age_s: int, model: Model) -> Response | None:
    """A 304 (no body, the model untouched) when the client holds this tag, else None."""
    if not matches(request, tag):
        return None
    model.ctx.images = 0
    return Response(status_code=304, headers=headers(tag, max_age_s))
