"""Slow and stalled clients (issue 12): they cannot lock other clients out, and are timed out."""

from __future__ import annotations

import resource
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.live import LiveService

STALLED = 1100
NOFILE = 1024


@pytest.fixture
def own_fds() -> Iterator[None]:
    """This test process needs ~1,200 descriptors of its own for the stalled sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = STALLED + 256
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"the hard descriptor limit ({hard}) is below the {need} this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def stall(url: str, n: int) -> list[socket.socket]:
    """n connections that never finish a request: half send nothing, half half a request head."""
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for i in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        if i % 2:
            s.sendall(b"POST /generate HTTP/1.1\r\nHost: facegen\r\nContent-Type: appl")
        socks.append(s)
    return socks


def probe(url: str) -> int:
    try:
        return httpx.get(url + "/healthz", timeout=60).status_code
    except httpx.TransportError:
        return 0


def test_stalled_connections_do_not_lock_out_other_clients(
    tiny_store: Path, tmp_path: Path, own_fds: None
) -> None:
    """1,100 stalled connections against a process limited to 1,024 descriptors; the header
    timeout is set far beyond the test so only the connection cap can keep clients answered."""
    env = {"FACEGEN_HEADER_TIMEOUT_S": "600"}
    with LiveService(tiny_store, tmp_path / "service.log", env, NOFILE) as live:
        live.wait_ready()
        socks = stall(live.url, STALLED)
        try:
            answered = [probe(live.url) for _ in range(10)]
            assert answered == [200] * 10, (answered, live.log()[-3000:])
            # Stalled connections were closed to make room (the oldest first), not the probes.
            assert "closing the oldest idle one" in live.log()
            assert live.proc.poll() is None
        finally:
            for s in socks:
                s.close()


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_stalled_heads_are_timed_out_and_bad_http_is_problem_json(
    tiny_store: Path, tmp_path: Path, parser: str
) -> None:
    """Both HTTP/1.1 parsers get the same defences (service/connections.py)."""
    env = {"FACEGEN_HEADER_TIMEOUT_S": "1", "FACEGEN_BODY_TIMEOUT_S": "1", "FACEGEN_HTTP_PARSER": parser}
    with LiveService(tiny_store, tmp_path / "service.log", env) as live:
        live.wait_listening()
        assert f"Facegen{'HttpTools' if parser == 'httptools' else 'H11'}Protocol" in live.log()
        silent, partial = stall(live.url, 2)
        with silent, partial:
            for s in (silent, partial):
                s.settimeout(60)  # generous: the server closes them after ~1 s
            assert read_all(silent) == b""  # closed without a word: it never spoke
            reply = read_all(partial)
        assert reply.startswith(b"HTTP/1.1 408 ") and b"application/problem+json" in reply, reply
        assert b'"/problems/request-timeout"' in reply
        # A body that stops halfway: 408 problem+json once FACEGEN_BODY_TIMEOUT_S passes.
        host, port = live.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=60) as s:
            s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            s.sendall(b'Content-Length: 100\r\n\r\n{"n": ')
            reply = read_all(s)
        assert reply.startswith(b"HTTP/1.1 408 ") and b'"/problems/request-timeout"' in reply, reply
        # Malformed HTTP: 400 problem+json, not text/plain.
        for raw in (
            b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
        ):
            with socket.create_connection((host, int(port)), timeout=60) as s:
                s.sendall(raw)
                reply = read_all(s)
            assert reply.startswith(b"HTTP/1.1 400 "), (raw, reply)
            assert b"application/problem+json" in reply and b'"/problems/bad-request"' in reply, reply
        # Two pipelined requests on one connection: both answered, in order, and the header
        # timer (1 s here) is not armed while the second one runs.
        with socket.create_connection((host, int(port)), timeout=60) as s:
            get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            s.sendall(get + get.replace(b"GET", b"HEAD"))
            s.settimeout(60)
            reply = b""
            while reply.count(b"HTTP/1.1 200 ") < 2:
                chunk = s.recv(65536)
                assert chunk, reply
                reply += chunk
        assert reply.count(b"HTTP/1.1 200 ") == 2 and b"408" not in reply, reply
        assert httpx.get(live.url + "/healthz", timeout=30).status_code == 200
