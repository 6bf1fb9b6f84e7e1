"""Stalled connections vs other clients: how many probes a server answers (issue 12).

``python -m bench.stalled [--protocol guarded|stock] [--stalled 1100] [--nofile 1024]`` starts
``python -m service`` on a tiny random model (with ``--protocol stock``: uvicorn's own HTTP/1.1
protocol, as before issue 12) limited to ``--nofile`` descriptors, opens ``--stalled``
connections that never finish a request (half send nothing, half half a request head), then
sends ``--probes`` GET /healthz on fresh connections and prints how many were answered within
``--probe-timeout`` seconds. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", choices=["guarded", "stock"], default="guarded", help="HTTP/1.1 protocol")
    p.add_argument("--stalled", type=int, default=1100, help="stalled connections to open")
    p.add_argument("--nofile", type=int, default=1024, help="the server's descriptor limit")
    p.add_argument("--probes", type=int, default=10, help="probe requests after the stall")
    p.add_argument("--probe-timeout", type=float, default=10.0, help="seconds a probe may take")
    p.add_argument(
        "--limit-concurrency", type=int, default=0, help="stock only: uvicorn's limit_concurrency (0: none)"
    )
    p.add_argument("--header-timeout", type=float, default=600.0, help="FACEGEN_HEADER_TIMEOUT_S")
    return p.parse_args(argv)


# Serves the tiny model with uvicorn's stock protocol: what `python -m service` did before.
STOCK = """
import sys, uvicorn
from service.main import create_app
from service.settings import Settings
s = Settings()
limit = int(sys.argv[1]) or None
uvicorn.run(create_app(s), host=s.host, port=s.port, log_level="warning", limit_concurrency=limit)
"""


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.service.live import free_port, tiny_artifact

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.stalled + 512), hard))
    with tempfile.TemporaryDirectory() as tmp:
        tiny_artifact(Path(tmp))
        port = free_port()
        env = {
            **os.environ,
            "FACEGEN_MODEL_STORE": tmp,
            "FACEGEN_PORT": str(port),
            "FACEGEN_DEVICE": "cpu",
            "FACEGEN_TORCH_THREADS": "1",
            "FACEGEN_WARMUP_BATCH_SIZES": "[1]",
            "FACEGEN_HEADER_TIMEOUT_S": str(args.header_timeout),
            "FACEGEN_LOG_LEVEL": "warning",
        }
        stock = [sys.executable, "-c", STOCK, str(args.limit_concurrency)]
        cmd = [sys.executable, "-m", "service"] if args.protocol == "guarded" else stock
        nofile = args.nofile
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
        )
        url = f"http://127.0.0.1:{port}"
        socks: list[socket.socket] = []
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            for i in range(args.stalled):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                if i % 2:
                    s.sendall(b"POST /generate HTTP/1.1\r\nHost: facegen\r\nContent-Type: appl")
                socks.append(s)
            answered = 0
            for _ in range(args.probes):
                with contextlib.suppress(httpx.TransportError):
                    answered += httpx.get(url + "/healthz", timeout=args.probe_timeout).status_code == 200
            print(
                f"protocol={args.protocol} limit_concurrency={args.limit_concurrency} "
                f"stalled={args.stalled} nofile={args.nofile}: "
                f"{answered}/{args.probes} probes answered within {args.probe_timeout:g} s"
            )
        finally:
            for s in socks:
                s.close()
            proc.terminate()
            proc.wait(timeout=30)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    main()
