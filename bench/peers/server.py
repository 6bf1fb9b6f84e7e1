"""A peer server as a child process in its own session: start, wait until a face comes back,
stop the whole process tree (a launcher, Java or tritonserver, Python workers)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from bench.peers.counters import Counters
from bench.peers.protocol import fetch_png

READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class PeerOptions:
    """What every peer is configured with (the same for TorchServe and PyTriton)."""

    artifact: Path
    mode: str = "per-row"
    png_level: int = 1
    torch_threads: int = 0
    max_batch_size: int = 64
    max_delay_ms: float = 5.0
    workers: int = 1  # TorchServe workers (processes), each with torch_threads threads


@dataclass
class System:
    """A started server of any of the three: where it listens, its process, its counters."""

    name: str
    url: str
    pid: int
    counters: Counters


class PeerProcess:
    """``with PeerProcess(system, cmd, env, url) as p: p.url, p.pid``."""

    def __init__(
        self, system: str, cmd: list[str], env: Mapping[str, str], url: str, cwd: Path | None = None
    ) -> None:
        self.system, self.cmd, self.env, self.url, self.cwd = system, cmd, dict(env), url, cwd
        self.log = Path(tempfile.mkstemp(prefix=f"facegen-bench-{system}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.system} is not started"
        return self.proc.pid

    def start(self) -> PeerProcess:
        with open(self.log, "wb") as out:
            # Its own session: stop() can end the tree it spawns without touching anything else.
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Ready = the server answers a face (seed 0): the model is loaded and warm."""
        deadline, last = time.monotonic() + READY_TIMEOUT_S, "no answer"

        async def probe() -> None:
            async with httpx.AsyncClient(timeout=30.0) as client:
                await fetch_png(client, self.system, self.url, 0)

        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.system} exited with code {self.proc.returncode}." + self.tail())
            try:
                asyncio.run(probe())
                return
            except (httpx.HTTPError, RuntimeError, ValueError) as e:
                last = f"{type(e).__name__}: {str(e)[:200]}"
            time.sleep(1.0)
        raise RuntimeError(
            f"{self.system} at {self.url} was not ready after {READY_TIMEOUT_S:.0f} s ({last})." + self.tail()
        )

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:] if self.log.is_file() else []
        return f"\nLast lines of {self.log}:\n" + "\n".join(text)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait()
        # Workers that outlive their parent (same session, so same process group) go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)

    def __enter__(self) -> PeerProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if et is None:
            self.log.unlink(missing_ok=True)
