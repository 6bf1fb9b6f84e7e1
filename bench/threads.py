"""Where the server's CPU time goes, by thread: robust on a shared, busy machine.

A sampling profiler counts a thread that is runnable but waiting for a core as busy, so on
an oversubscribed machine it mostly measures the queue for the CPU. The kernel's per-thread
CPU counters (/proc/PID/task/TID/stat) do not; py-spy's thread dump names the threads
(the OS sees them all as "python"), so each thread's CPU can be put in a group:
the event loop (HTTP, FastAPI, pydantic, the batcher, JSON), the model thread, the anyio
workers (PNG encoding, upload decoding), and threads Python does not know (torch's OpenMP
pool, libuv).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from bench.profile import py_spy_path

GROUPS = (
    ("MainThread", "event loop (HTTP, framework, batcher, JSON)"),
    ("facegen-model", "model thread (torch forward)"),
    ("facegen-rows", "model thread (torch forward)"),  # the runner's row lanes
    ("AnyIO worker", "anyio workers (PNG encode, upload decode)"),
    ("asyncio", "asyncio default executor"),
)
NATIVE = "native threads (torch OpenMP pool, libuv)"


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of ``pid``; {} where /proc is missing."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended between listdir and read
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from ``py-spy dump --json``; {} without py-spy."""
    exe = py_spy_path()
    if exe is None:
        return {}
    try:
        dump = subprocess.run(
            [exe, "dump", "--pid", str(pid), "--json", "--nonblocking"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        threads = json.loads(dump.stdout)
    except (subprocess.SubprocessError, OSError, json.JSONDecodeError):
        return {}
    return {
        int(t["os_thread_id"]): str(t.get("thread_name") or "")
        for t in threads
        if t.get("os_thread_id") is not None
    }


def group_of(name: str | None) -> str:
    if not name:
        return NATIVE
    for prefix, group in GROUPS:
        if name.startswith(prefix):
            return group
    return f"other Python thread ({name})"


def cpu_by_group(
    before: dict[int, float], after: dict[int, float], names: dict[int, str]
) -> dict[str, float]:
    """CPU seconds per group between two ``thread_cpu`` readings (new threads count from 0)."""
    out: dict[str, float] = {}
    for tid, cpu in after.items():
        group = group_of(names.get(tid))
        out[group] = out.get(group, 0.0) + cpu - before.get(tid, 0.0)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
