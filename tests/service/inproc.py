"""The app in this process: ``create_app(Settings(...))`` behind a sync ``httpx.Client``.

For what needs no real server (validation, formats, errors, content negotiation): the same
requests as over TCP, without a process start, sockets or uvicorn. The app and its lifespan
(model loading, the batcher) run on an event loop in a background thread; each request goes
through ``httpx.ASGITransport`` on that loop, so the tests stay synchronous, as against
``LiveService``. What needs the real server (lifecycle, signals, overload, disconnects,
connection hardening, the process's log and memory) stays on ``tests.service.live``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from service.main import create_app
from service.settings import Settings

READY_TIMEOUT_S = 60.0
T = TypeVar("T")


class _AsyncBody(httpx.AsyncByteStream):
    """A sync request body (bytes, a multipart form, a generator) read on the app's loop, so
    a chunked upload reaches the app piece by piece, as over a socket."""

    def __init__(self, stream: Iterable[bytes]) -> None:
        self.stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.stream:
            yield chunk


class _LoopTransport(httpx.BaseTransport):
    """A sync transport that runs each request through ``httpx.ASGITransport`` on ``loop``."""

    def __init__(self, service: InProcessService, root_path: str = "") -> None:
        self.service = service
        self.asgi = httpx.ASGITransport(app=service.app, root_path=root_path)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, Iterable)

        async def call() -> tuple[int, httpx.Headers, bytes]:
            # The request's own headers (no Content-Length added for a chunked body).
            forwarded = httpx.Request(
                request.method, request.url, headers=request.headers, stream=_AsyncBody(request.stream)
            )
            response = await self.asgi.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        timeout = request.extensions.get("timeout", {}).get("read")
        try:
            status, headers, body = self.service.run(call(), timeout)
        except TimeoutError:
            raise httpx.ReadTimeout(f"No response in {timeout} s.", request=request) from None
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body), request=request)


class InProcessService:
    """``create_app(settings)`` on a background event loop, its lifespan entered; ``client()``
    gives a sync httpx.Client on it, ``log()`` what the ``service`` loggers wrote meanwhile (at
    ``settings.log_level``, as ``python -m service`` logs). A context manager: the lifespan
    exits at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="inproc-app", daemon=True)
        self._lifespan = contextlib.AsyncExitStack()
        self._log = io.StringIO()
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._logger = logging.getLogger("service")
        self._old_level = self._logger.level

    def log(self) -> str:
        return self._log.getvalue()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the app's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client(self, timeout: float = 60.0, root_path: str = "") -> httpx.Client:
        """``root_path``: the ASGI root_path, as a reverse proxy that serves the app under a
        path prefix sets it (uvicorn's --root-path)."""
        transport = _LoopTransport(self, root_path)
        return httpx.Client(transport=transport, base_url="http://testserver", timeout=timeout)

    def __enter__(self) -> InProcessService:
        self._logger.addHandler(self._handler)
        self._logger.setLevel(self.settings.log_level.upper())
        self.thread.start()
        try:
            self.run(self._lifespan.enter_async_context(self.app.router.lifespan_context(self.app)))
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until the model is loaded and warm (read from the app itself: with API keys on, or
        other open paths, a probe over HTTP could be refused)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            runner = self.app.state.services.runner
            if runner.ready:
                return
            if runner.state == "failed":
                raise AssertionError(f"The in-process model failed to load: {runner.reason}")
            time.sleep(0.05)
        raise AssertionError(f"The in-process app was not ready in {timeout_s:.0f} s.")

    def __exit__(self, *exc: object) -> None:
        try:
            if self.thread.is_alive():
                self.run(self._lifespan.aclose(), timeout=30)
        finally:
            if self.thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(timeout=30)
            if not self.loop.is_running():
                self.loop.close()
            self._logger.removeHandler(self._handler)
            self._logger.setLevel(self._old_level)


class ExplicitSettings(Settings):
    """Settings from the arguments only: a FACEGEN_* variable in the test's environment does
    not leak in (``LiveService`` drops them from its process's environment likewise)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, **others: Any) -> Any:
        return (init_settings,)


def settings_for(store: Path, **overrides: Any) -> Settings:
    """The settings ``LiveService`` gives its process (CPU, one torch thread, warm-up 1 and 8),
    plus ``overrides`` (Settings fields)."""
    return ExplicitSettings(
        model_store=store,
        device="cpu",
        torch_threads=1,
        warmup_batch_sizes=(1, 8),
        **overrides,
    )


@contextlib.contextmanager
def in_process(store: Path, **overrides: Any) -> Iterator[httpx.Client]:
    """A ready in-process app on ``store`` and a client on it; closed at the end."""
    with InProcessService(settings_for(store, **overrides)) as service, service.client() as c:
        yield c
