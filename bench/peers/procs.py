"""A server's whole process tree from /proc: CPU seconds and resident memory.

TorchServe is a Python launcher, a Java frontend and Python workers; PyTriton is the Python
process, ``tritonserver`` and a Python proxy per model; facegen is one process. Comparing
them needs every process of the tree, not the one the bench started.
"""

from __future__ import annotations

import os
from pathlib import Path


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
    return out


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the live tree (children that exited are not counted)."""
    return sum(_cpu(p) for p in tree(pid))


def tree_rss_mib(pid: int) -> float:
    """Sum of VmRSS over the tree, MiB (shared pages count once per process)."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024
