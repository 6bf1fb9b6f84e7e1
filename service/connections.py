"""uvicorn's HTTP/1.1 protocol, hardened against slow and stalled clients (issue 12).

Stock uvicorn never times out a connection that sends nothing, or half a request's headers:
1,124 such connections held a process limited to 1,024 file descriptors at ``accept()`` failing
(EMFILE), and 0 of 10 other clients were answered. ``guarded_protocol`` adds two defences:

* **Header timeout**: a connection must send a complete request head within
  ``header_timeout_s`` of connecting, and again of each response (keep-alive). When it sent a
  part, it gets ``408`` problem+json; either way it is closed. (Slow *bodies* are timed out per
  chunk by ``context.ServiceMiddleware``: ``FACEGEN_BODY_TIMEOUT_S``.)
* **Connection cap**: at most ``max_connections`` are open (below the descriptor limit, so
  ``accept()`` never fails). A new connection over the cap closes the oldest connection that
  is waiting for a request head (never one whose request is running); so a flood of stalled
  connections evicts itself, and a real client, which sends its request at once, gets through.

Protocol-level errors (malformed request line or headers, bad Content-Length or chunking) are
answered ``400`` problem+json instead of uvicorn's ``text/plain``. Both raw responses are
written to the transport directly: h11 allows no response before a request head.

Both of uvicorn's HTTP/1.1 protocols get the same defences (``GuardedProtocol`` is a mixin):
``httptools`` (llhttp, C) when it is installed, as it is by default, else the pure-Python
``h11``. httptools parses a request in a fraction of h11's time (issue 17's profile: the HTTP
server's share of the event loop; docs/bench.md), and ``FACEGEN_HTTP_PARSER`` picks one.
"""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional: h11 serves alone
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from service.errors import PROBLEM_CONTENT_TYPE

FD_RESERVE = 128  # descriptors kept for model files, threads' pipes, logs and the listening socket


def problem_bytes(status: int, reason: str, slug: str, title: str, detail: str) -> bytes:
    """A complete HTTP/1.1 problem+json response that closes the connection."""
    body = json.dumps({"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail})
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"content-length: {len(body.encode())}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body.encode()


BAD_REQUEST = problem_bytes(
    400,
    "Bad Request",
    "bad-request",
    "Bad request",
    "The request is not valid HTTP/1.1 (request line, headers, Content-Length or chunked encoding). "
    "Send a well-formed request.",
)


def timeout_response(header_timeout_s: float) -> bytes:
    return problem_bytes(
        408,
        "Request Timeout",
        "request-timeout",
        "Request timeout",
        f"The request's headers did not arrive within {header_timeout_s:g} s (FACEGEN_HEADER_TIMEOUT_S). "
        "Send the whole request head at once.",
    )


def connection_limit(max_connections: int) -> int:
    """``max_connections``, or (0) the descriptor limit less FD_RESERVE, after raising the soft
    limit to the hard one (a process may; the default soft limit is often only 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    fd_cap = max(16, soft - FD_RESERVE) if soft != resource.RLIM_INFINITY else 65536
    return min(max_connections, fd_cap) if max_connections else fd_cap


class GuardedProtocol(asyncio.Protocol):
    """The header timeout and the connection cap (see the module docstring), mixed into one of
    uvicorn's HTTP/1.1 protocols (``GuardedH11Protocol``, ``GuardedHttpToolsProtocol``).

    Configured per server by ``guarded_protocol``, which sets the class attributes below.
    """

    header_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 1024
    # Every open connection, oldest first (dicts keep insertion order), for eviction.
    open_connections: ClassVar[dict[GuardedProtocol, None]] = {}
    # What the protocol class beside this mixin provides:
    cycle: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    logger: Any
    client: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # bytes of a request head received, but not all of it
        self._arm()
        self.open_connections[self] = None
        if len(self.open_connections) > self.max_connections:
            self._evict()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open_connections.pop(self, None)
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if self._header_timer is not None:
            self._partial = True
        super().data_received(data)
        if self.cycle is not cycle:  # a request head arrived: its handler runs now
            self._disarm()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        super().on_response_complete()  # type: ignore[misc]
        # No pipelined request started: h11 makes a new cycle for one; httptools made it when
        # its head arrived and starts it from ``pipeline`` now.
        if self.cycle is cycle and not getattr(self, "pipeline", None) and not self.transport.is_closing():
            self._partial = False
            self._arm()

    def send_400_response(self, msg: str) -> None:
        self.logger.debug("Malformed HTTP request from %s: %s", self.client, msg)
        self.transport.write(BAD_REQUEST)
        self.transport.close()

    @property
    def awaiting_head(self) -> bool:
        return self._header_timer is not None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._on_header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            if self._partial:
                self.transport.write(timeout_response(self.header_timeout_s))
            self.transport.close()

    def _evict(self) -> None:
        """Close the oldest connection waiting for a request head (this one if it is the only)."""
        victim = next((c for c in self.open_connections if c.awaiting_head and c is not self), self)
        self.logger.warning(
            "%d connections open (FACEGEN_MAX_CONNECTIONS %d): closing the oldest idle one.",
            len(self.open_connections),
            self.max_connections,
        )
        victim._disarm()
        victim.open_connections.pop(victim, None)
        victim.transport.close()


class GuardedH11Protocol(GuardedProtocol, H11Protocol):
    """uvicorn's h11 protocol (pure Python), guarded."""


if HttpToolsProtocol is not None:

    class GuardedHttpToolsProtocol(GuardedProtocol, HttpToolsProtocol):
        """uvicorn's httptools protocol (llhttp), guarded."""


def guarded_protocol(
    header_timeout_s: float, max_connections: int, parser: str = "auto"
) -> type[GuardedProtocol]:
    """A guarded protocol class for one server (pass it to uvicorn as ``http=``): httptools
    for ``parser`` "httptools", or "auto" when it is installed; else h11."""
    if parser == "httptools" and HttpToolsProtocol is None:
        raise RuntimeError("FACEGEN_HTTP_PARSER=httptools, but httptools is not installed.")
    use_httptools = parser == "httptools" or (parser == "auto" and HttpToolsProtocol is not None)
    base: type[GuardedProtocol] = GuardedHttpToolsProtocol if use_httptools else GuardedH11Protocol
    attrs: dict[str, Any] = {
        "header_timeout_s": header_timeout_s,
        "max_connections": connection_limit(max_connections),
        "open_connections": {},
    }
    return type(f"Facegen{base.__name__.removeprefix('Guarded')}", (base,), attrs)
