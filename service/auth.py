"""API keys: who may call, as whom, and how often (off by default; docs/auth.md).

Keys come from ``FACEGEN_API_KEYS`` and/or the file ``FACEGEN_API_KEYS_FILE``, one entry per
line (or ``;``-separated in the variable)::

    # ID     ROLE   SECRET                         [RATE_PER_S [BURST]]
    alice    user   sha256:2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90
    ops      admin  a-long-random-key              5 10

Only the SHA-256 of each key is kept in memory (a key given as ``sha256:HEX`` is never known to
the server at all). A presented key is hashed and compared with every stored hash by
``hmac.compare_digest``, all of them every time, so the time taken says nothing about which
bytes matched. The key's *id* (never the key) goes into logs, the request's context and the
``key`` label of ``facegen_api_key_requests_total`` (ids are the configured ones plus "-", so
the label stays bounded).

``AuthMiddleware`` runs before routing and before any body is read: an unauthenticated client
cannot make the server parse an upload. It answers 401 (+ ``WWW-Authenticate: Bearer``) for a
missing or unknown key, 403 for a user key on ``/admin/...``, and 429 (+ ``Retry-After``) when
a key's token bucket is empty. With keys off, ``/admin/...`` answers 403 unless
``FACEGEN_ADMIN_WITHOUT_KEYS`` is set.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import FacegenError, ForbiddenError, RateLimitedError, UnauthorizedError
from service.metrics import Metrics
from service.problems import problem_response
from service.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["user", "admin"]
ADMIN_PREFIX = "/admin"
_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HASH = re.compile(r"sha256:([0-9a-fA-F]{64})")
WWW_AUTHENTICATE = 'Bearer realm="facegen"'


class KeyFileError(ValueError):
    """A key entry that cannot be parsed; the message names the entry (never the secret)."""


@dataclass
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; a request takes one (Retry-After when none)."""

    rate: float
    burst: int
    tokens: float = -1.0
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def take(self, now: float | None = None) -> float:
        """0.0 when a token was taken, else the seconds until one is available."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass
class ApiKey:
    id: str
    role: Role
    digest: bytes  # sha256 of the key
    bucket: TokenBucket


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_entries(text: str, rate: float, burst: int, source: str) -> list[ApiKey]:
    """Key entries (see the module docstring) from ``text``; ``source`` names it in errors."""
    keys = []
    for n, raw in enumerate(re.split(r"[;\n]", text), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        key_id = parts[0] if parts else ""
        if len(parts) not in (3, 4, 5) or not _ID.fullmatch(key_id) or parts[1] not in ("user", "admin"):
            raise KeyFileError(
                f"Entry {n} of {source} (id {key_id[:64]!r}) is not 'ID ROLE SECRET [RATE_PER_S [BURST]]' "
                f"with ID of letters, digits, '_.-' and ROLE user or admin."
            )
        secret = parts[2]
        hashed = _HASH.fullmatch(secret)
        if hashed is None and len(secret) < 16:
            raise KeyFileError(f"The key of {key_id!r} in {source} is shorter than 16 characters.")
        try:
            key_rate = float(parts[3]) if len(parts) > 3 else rate
            key_burst = int(parts[4]) if len(parts) > 4 else burst
        except ValueError:
            raise KeyFileError(f"The rate or burst of {key_id!r} in {source} is not a number.") from None
        if not (math.isfinite(key_rate) and key_rate >= 0 and key_burst >= 1):
            raise KeyFileError(f"The rate of {key_id!r} in {source} must be ≥ 0 and its burst ≥ 1.")
        role: Role = "admin" if parts[1] == "admin" else "user"
        keys.append(
            ApiKey(
                id=key_id,
                role=role,
                digest=bytes.fromhex(hashed.group(1)) if hashed else digest(secret),
                bucket=TokenBucket(key_rate, key_burst),
            )
        )
    return keys


class KeyRing:
    """The configured keys, by hash."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = list(keys)
        ids = [k.id for k in self.keys]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise KeyFileError(f"API key ids must be unique; repeated: {dupes}.")

    @classmethod
    def from_settings(cls, s: Settings) -> KeyRing:
        keys = parse_entries(
            s.api_keys.get_secret_value(), s.api_key_rate_per_s, s.api_key_burst, "FACEGEN_API_KEYS"
        )
        if s.api_keys_file is not None:
            text = Path(s.api_keys_file).read_text(encoding="utf-8")
            keys += parse_entries(text, s.api_key_rate_per_s, s.api_key_burst, str(s.api_keys_file))
        if s.api_keys_enabled and not keys:
            raise KeyFileError(
                "FACEGEN_API_KEYS_ENABLED is set but no keys are configured "
                "(FACEGEN_API_KEYS or FACEGEN_API_KEYS_FILE)."
            )
        return cls(keys)

    def find(self, presented: str) -> ApiKey | None:
        """The key whose hash matches; every stored hash is compared (constant time)."""
        d = digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(d, key.digest):
                found = key
        return found


def presented_key(headers: Headers) -> str | None:
    """The key of ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (None when neither)."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def is_open(path: str, open_paths: Iterable[str]) -> bool:
    return any(path.startswith(p[:-1]) if p.endswith("*") else path == p for p in open_paths)


def is_admin_path(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


class AuthMiddleware:
    """Authenticates, authorises and rate-limits every HTTP request (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        keys: KeyRing,
        metrics: Metrics,
        admin_routes: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.app = app
        # path -> the methods its admin route declares. A request that is no admin route (an
        # undeclared method or path) falls through to routing's 404/405 when admin routes are
        # off, so "not allowed" reads the same whether or not they are on.
        self.admin_routes = admin_routes or {}
        self.enabled = settings.api_keys_enabled
        self.admin_without_keys = settings.admin_without_keys
        self.open_paths = tuple(settings.open_paths)
        self.keys = keys
        self.metrics = metrics
        # One line per request with the key's id: INFO with FACEGEN_ACCESS_LOG, else DEBUG.
        self.request_log_level = logging.INFO if settings.access_log else logging.DEBUG

    def _is_admin_route(self, scope: Scope) -> bool:
        return scope["method"] in self.admin_routes.get(scope["path"], frozenset())

    def _check(self, scope: Scope) -> tuple[ApiKey | None, FacegenError | None]:
        path: str = scope["path"]
        if not self.enabled:
            if is_admin_path(path) and not self.admin_without_keys and self._is_admin_route(scope):
                return None, ForbiddenError(
                    "Admin routes are off: API keys are off (FACEGEN_API_KEYS_ENABLED=false). Turn "
                    "keys on and use an admin key, or set FACEGEN_ADMIN_WITHOUT_KEYS=true on a "
                    "trusted network."
                )
            return None, None
        if is_open(path, self.open_paths) and not is_admin_path(path):
            return None, None
        presented = presented_key(Headers(scope=scope))
        if presented is None:
            return None, UnauthorizedError(
                "This server needs an API key: send 'Authorization: Bearer KEY' (or 'X-API-Key: KEY').",
                headers={"WWW-Authenticate": WWW_AUTHENTICATE},
            )
        key = self.keys.find(presented)
        if key is None:
            return None, UnauthorizedError(
                "The API key is not valid. Check it, or ask the operator for one.",
                headers={"WWW-Authenticate": f'{WWW_AUTHENTICATE}, error="invalid_token"'},
            )
        if is_admin_path(path) and key.role != "admin":
            return key, ForbiddenError(f"Key {key.id!r} is not an admin key; {path} needs one.")
        wait_s = key.bucket.take()
        if wait_s > 0:
            retry = max(1, math.ceil(wait_s))
            return key, RateLimitedError(
                f"Key {key.id!r} is over its rate of {key.bucket.rate:g} requests/s (burst "
                f"{key.bucket.burst}). Retry after {retry} s (Retry-After).",
                headers={"Retry-After": str(retry)},
            )
        return key, None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key, error = self._check(scope)
        key_id = key.id if key else "-"
        state = scope.setdefault("state", {})
        state["key_id"] = key.id if key else None
        ctx = state.get("ctx")
        if ctx is not None:
            ctx.key_id = state["key_id"]
        if error is None and not self.enabled:  # nothing to count or log: no wrapper
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if error is not None:
                log.warning(
                    "%s %s refused (%d, key %s): %s",
                    scope["method"],
                    scope["path"],
                    error.status,
                    key_id,
                    error.detail,
                )
                await problem_response(error, self.metrics)(scope, receive, send_counted)
            else:
                await self.app(scope, receive, send_counted)
        finally:
            if self.enabled:
                self.metrics.api_key_requests.labels(key=key_id, status=str(status)).inc()
                log.log(
                    self.request_log_level,
                    "%s %s -> %d (key %s)",
                    scope["method"],
                    scope["path"],
                    status,
                    key_id,
                )


def add_security(schema: dict[str, Any], open_paths: Iterable[str]) -> None:
    """Declare the two ways to send a key in an OpenAPI ``schema``, required on every operation
    but those of ``open_paths`` (``/admin/...`` additionally needs an admin key)."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer KEY`. /admin/... routes need an admin key.",
    }
    schemes["apiKeyHeader"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    schema["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    refusals = {
        "401": {
            "description": "No API key, or an unknown one (`WWW-Authenticate: Bearer`).",
            "content": problem,
        },
        "429": {"description": "The key is over its request rate (`Retry-After`).", "content": problem},
    }
    for path, operations in schema.get("paths", {}).items():
        for op in operations.values():
            if not isinstance(op, dict):
                continue
            if is_open(path, open_paths) and not is_admin_path(path):
                op["security"] = []
            else:
                for status, response in refusals.items():
                    op.setdefault("responses", {}).setdefault(status, response)
