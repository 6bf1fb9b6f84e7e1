"""A load-generator child process (``--client-procs`` > 1): its workers, over stdin/stdout.

stdin: one JSON line (url, spec, concurrency, first_worker, timing), later ``stop``.
stdout: ``started``, then ``completed N`` every 50 ms, and at the end ``samples [[...], ...]``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from bench.loadgen import PROGRESS_EVERY_S, RequestSpec, Timing, WorkerGroup, run_async


async def _main() -> None:
    config = json.loads(sys.stdin.readline())
    timing = Timing(**config["timing"])
    group = WorkerGroup(
        config["url"],
        RequestSpec.from_json(config["spec"]),
        int(config["concurrency"]),
        int(config["first_worker"]),
        timing,
    )
    await group.start()
    print("started", flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, sys.stdin.readline)  # blocks until "stop" or EOF
    while not stop.done():
        print(f"completed {group.completed}", flush=True)
        await asyncio.wait([stop], timeout=PROGRESS_EVERY_S)
    samples = await group.stop(timing.drain_s)
    print("samples " + json.dumps([list(s) for s in samples]), flush=True)


if __name__ == "__main__":
    run_async(_main())
