"""Start ``python -m service`` as a child process, wait for ``/readyz``, stop it cleanly.

The server's stdout/stderr go to a log file, whose tail is quoted when it fails to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    url: str,
    timeout_s: float = READY_TIMEOUT_S,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``GET /readyz`` until 200; raise with the server's log tail if it dies or times out."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"The service exited with code {proc.returncode} before it was ready." + _tail(log)
                )
            try:
                r = client.get(f"{url}/readyz")
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as e:
                last = type(e).__name__
            time.sleep(0.2)
    raise RuntimeError(
        f"The service at {url} was not ready after {timeout_s:.0f} s (last: {last})." + _tail(log)
    )


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.is_file():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\nLast lines of the service log " + str(log) + ":\n" + "\n".join(text)


class ServerProcess:
    """``with ServerProcess(env) as srv: srv.url, srv.pid`` — a local service on a free port."""

    def __init__(self, env: dict[str, str], label: str = "service") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "FACEGEN_HOST": "127.0.0.1", "FACEGEN_PORT": str(self.port)}
        self.label = label
        self.log = Path(tempfile.mkstemp(prefix=f"facegen-bench-{label}-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server is not started"
        return self.proc.pid

    def start(self) -> ServerProcess:
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_ready(self.url, proc=self.proc, log=self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log, lines)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if et is None:
            self.log.unlink(missing_ok=True)  # keep the log only when something went wrong


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields after the ')' start at field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
