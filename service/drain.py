"""Graceful stop: on SIGTERM, drain (readiness 503, keep serving), then let uvicorn finish.

What uvicorn does alone on SIGTERM: close the listener at once, let the requests in flight
finish (for up to ``timeout_graceful_shutdown``), then run the lifespan shutdown, which stops
the batcher and cancels whatever is still queued. Two gaps for a replica behind a load
balancer or a Kubernetes Service:

* the balancer learns that the replica is going only from failed connections (nginx) or from
  the readiness probe (Kubernetes, which removes the pod's endpoint a few seconds after the
  signal, while clients still send to it). So for ``drain_delay_s`` after SIGTERM the server
  keeps accepting and serving, with /readyz answering 503 ("draining"); only then does the
  listener close;
* a queued request may need up to ``request_timeout_s`` to finish, so the grace period is that
  plus a margin, not uvicorn's 10 s: every row already queued either runs or meets its own
  deadline (504), none is cancelled by the shutdown.

A second SIGTERM, or SIGINT (Ctrl-C), skips the drain delay (uvicorn's own behaviour).
Kubernetes' terminationGracePeriodSeconds must cover drain_delay_s + request_timeout_s +
GRACE_MARGIN_S (deploy/kubernetes/deployment.yaml).
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn

from service.deps import Services

log = logging.getLogger(__name__)

GRACE_MARGIN_S = 5  # encoding and sending the last responses after their rows ran


def graceful_timeout_s(request_timeout_s: float) -> int:
    """uvicorn's timeout_graceful_shutdown: long enough for the slowest request still queued."""
    return int(request_timeout_s) + 1 + GRACE_MARGIN_S


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM starts a drain of ``drain_delay_s`` seconds."""

    def __init__(self, config: uvicorn.Config, services: Services, drain_delay_s: float) -> None:
        super().__init__(config)
        self._services = services
        self._drain_delay_s = drain_delay_s
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._drain_until is None and not self.should_exit:
            # Runs in the signal handler: only set flags; the main loop's tick acts on them.
            self._services.draining = True
            self._drain_until = time.monotonic() + self._drain_delay_s
            log.info(
                "SIGTERM: draining for %.1f s (/readyz 503, still serving), then finishing the "
                "requests in flight and exiting.",
                self._drain_delay_s,
            )
            return
        self._services.draining = True
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        # main_loop calls this every 0.1 s; past the drain deadline uvicorn's shutdown begins.
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)
