"""``python -m bench.swap``: what a model swap and a cache hit cost a client (docs/versions.md).

Starts ``python -m service`` on the bundled store (admin routes on, no keys: a local bench),
keeps ``--clients`` clients generating single faces, swaps to ``--to`` half-way, and prints
the latency of requests that started before, during and after the swap, the failures, the
swap's own time, and a 304 (``If-None-Match``) against a full /generate. Figures are printed,
never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from bench.server import ServerProcess


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def run(url: str, clients: int, seconds: float, target: dict[str, object]) -> None:
    samples: list[tuple[float, float, int, str]] = []  # (start, latency s, status, version)
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:

        async def client(i: int) -> None:
            k = 0
            while not stop.is_set():
                t0 = time.monotonic()
                r = await c.post("/generate", json={"seed": 1000 * i + k})
                samples.append(
                    (t0, time.monotonic() - t0, r.status_code, r.headers.get("x-model-version", ""))
                )
                k += 1

        tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
        await asyncio.sleep(seconds / 2)
        s0 = time.monotonic()
        swap = await c.post("/admin/swap", json=target)
        s1 = time.monotonic()
        await asyncio.sleep(seconds / 2)
        stop.set()
        await asyncio.gather(*tasks)

        print(f"swap -> {swap.status_code} {swap.json()} (client-side {s1 - s0:.2f} s)")
        failed = sum(1 for *_, status, _ in samples if status != 200)
        print(f"requests: {len(samples)}, failed: {failed}, clients: {clients}")
        windows = {
            "before": [lat for t, lat, _, _ in samples if t + lat < s0],
            "during": [lat for t, lat, _, _ in samples if t < s1 and t + lat > s0],
            "after": [lat for t, lat, _, _ in samples if t > s1],
        }
        for name, lats in windows.items():
            ms = [1000 * v for v in lats]
            p50, p99, top = pct(ms, 0.5), pct(ms, 0.99), max(ms, default=0.0)
            print(f"  {name:6s} n={len(ms):5d}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {top:7.1f} ms")
        versions = sorted({v for *_, v in samples})
        print(f"  versions seen: {versions}")

        body = {"seed": 7, "n": 16}
        full, hit = [], []
        tag = (await c.post("/generate", json=body)).headers["etag"]
        for _ in range(20):
            t0 = time.monotonic()
            await c.post("/generate", json=body)
            full.append(1000 * (time.monotonic() - t0))
            t0 = time.monotonic()
            r = await c.post("/generate", json=body, headers={"If-None-Match": tag})
            hit.append(1000 * (time.monotonic() - t0))
            assert r.status_code == 304
        full_ms, hit_ms = statistics.median(full), statistics.median(hit)
        print(f"16-face grid: 200 median {full_ms:.1f} ms, 304 median {hit_ms:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", type=int, default=32, help="Concurrent clients generating one face each.")
    p.add_argument("--seconds", type=float, default=20.0, help="Length of the load; the swap is half-way.")
    p.add_argument("--to-name", default=None, help="Model to swap to (default: the served one).")
    p.add_argument("--to-version", type=int, default=None, help="Version to swap to (default: the highest).")
    p.add_argument("--threads", type=int, default=1, help="FACEGEN_TORCH_THREADS of the server.")
    args = p.parse_args(argv)
    env = {
        "FACEGEN_ADMIN_WITHOUT_KEYS": "true",
        "FACEGEN_TORCH_THREADS": str(args.threads),
        "FACEGEN_DEVICE": "cpu",
    }
    target = {k: v for k, v in (("name", args.to_name), ("version", args.to_version)) if v is not None}
    with ServerProcess(env, "swap") as srv:
        asyncio.run(run(srv.url, args.clients, args.seconds, target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
