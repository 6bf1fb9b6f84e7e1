"""Memory of upload decoding (issue 12): bounded while decoding, given back afterwards.

16 PNGs of 6300×6300 (116 KB each, ~160 MB each decoded) in one /encode took the unbounded
server to a 5.28 GB peak with 3.35 GB held afterwards. The bounds here are generous (the
test measures the real process's RSS from /proc; it does not time anything).
"""

from __future__ import annotations

import asyncio
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx

from service.memory import DecodeBudget
from tests.service.live import LiveService, assert_problem

SIDE = 6300
FILES = 16
GB = 1024**3


def flat_png(side: int) -> bytes:
    """A grey side×side RGB PNG, deflated row by row (never held decoded here): ~116 KB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    row = b"\x00" + bytes([128]) * (3 * side)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_many_large_pngs_in_one_request_stay_within_the_memory_bound(
    tiny_store: Path, tmp_path: Path
) -> None:
    png = flat_png(SIDE)
    assert len(png) < 200_000
    env = {
        "FACEGEN_MAX_IMAGE_PIXELS": str(SIDE * SIDE),  # admit them: the budget is what is tested
        "FACEGEN_REQUEST_TIMEOUT_S": "600",
        "FACEGEN_MAX_UPLOAD_BYTES": str(1 << 20),
    }
    with LiveService(tiny_store, tmp_path / "service.log", env) as live:
        live.wait_ready()
        httpx.post(live.url + "/generate", json={"seed": 1}, timeout=60).raise_for_status()
        before = live.rss_bytes()
        exact_peak = live.reset_peak_rss()
        peak, done = before, threading.Event()

        def sample() -> None:  # where VmHWM cannot be reset: RSS every 20 ms
            nonlocal peak
            while not done.is_set():
                peak = max(peak, live.rss_bytes())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        files = [("image", (f"{i}.png", png, "image/png")) for i in range(FILES)]
        try:
            r = httpx.post(live.url + "/encode", files=files, timeout=600)
        finally:
            done.set()
            sampler.join()
        assert r.status_code == 200 and len(r.json()["items"]) == FILES, r.text[:500]
        if exact_peak:
            peak = max(peak, live.rss_bytes("VmHWM"))
        mib = 2**20
        print(f"RSS before {before / mib:.0f} MiB, peak {peak / mib:.0f} MiB (+{(peak - before) / mib:.0f})")
        assert peak - before < 1 * GB, (before, peak)
        # ... and given back: within 10 s the process is back near where it started.
        deadline = time.monotonic() + 10
        while live.rss_bytes() - before > 256 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.2)
        after = live.rss_bytes()
        print(f"RSS after {after / 2**20:.0f} MiB")
        assert after - before < 256 * 2**20, (before, after)


def test_the_default_pixel_limit_refuses_them_before_decoding(client: httpx.Client) -> None:
    files = [("image", ("big.png", flat_png(SIDE), "image/png"))]
    body = assert_problem(client.post("/encode", files=files), 413, "image")
    assert "FACEGEN_MAX_IMAGE_PIXELS" in body["detail"] and "25,000,000" in body["detail"]


def test_decode_budget_bounds_the_bytes_held_at_once() -> None:
    """Holders of 100 each under a capacity of 250: never more than 2 at once; one of 1,000
    (over the capacity) runs, alone."""
    budget = DecodeBudget(250)
    held: list[int] = []

    async def holder(n: int) -> None:
        async with budget.hold(n):
            held.append(budget.in_use)
            await asyncio.sleep(0.01)

    async def main() -> None:
        await asyncio.gather(*(holder(100) for _ in range(8)), holder(1000))

    asyncio.run(main())
    assert len(held) == 9 and max(held) in (200, 1000) and budget.in_use == 0
    assert all(h <= 250 or h == 1000 for h in held)
