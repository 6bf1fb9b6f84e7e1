"""Memory of decoded uploads: a byte budget shared by all requests, and giving memory back.

``DecodeBudget`` bounds the bytes of upload pixels decoded at once across the whole process
(``FACEGEN_DECODE_BUDGET_BYTES``): each decode first holds its ``uploads.upload_cost`` (from
the header) and waits while the budget is spent, so 64 files of 160 MB each decode a few at a
time instead of 10 GB at once. A single file larger than the whole budget still decodes, alone.

glibc keeps freed memory in its heaps (the evaluation saw 3.35 GB held after one request), so
``tune_allocator`` fixes the mmap threshold (big buffers, e.g. Pillow's 16 MiB image blocks, are
mmapped and unmapped when freed; glibc would otherwise raise the threshold after the first free)
and ``release_memory`` trims the heaps after a large request. Both are no-ops off glibc.

The threshold is 16 MiB, not lower, and the trim threshold is raised with it: fixing the mmap
threshold leaves glibc's trim threshold at 128 KiB, so with the first setting (1 MiB) every
forward pass mmapped its megabyte-sized activations and gave the heap's top back after each
free, then faulted it in again: the faces64 decoder took 26-32 ms a row in the service instead
of 13-15 ms (measured in one process on this machine, issue 17). Activations of a pass stay
in the heap now; upload pixels, in Pillow's 16 MiB blocks, are still unmapped when freed.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (glibc malloc.h)
MMAP_THRESHOLD_BYTES = 16 * 1024 * 1024  # Pillow's default block size: its blocks are mmapped
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024  # free heap top kept for the next pass (release_memory trims)
# After a request that decoded at least this many bytes, trim the heaps.
RELEASE_AFTER_BYTES = 64 * 1024 * 1024


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold at 16 MiB and its trim threshold at 64 MiB (see the module
    docstring); True if both were set."""
    if _LIBC is None:
        return False
    mmap_ok = _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return bool(mmap_ok and _LIBC.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))


def release_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``); blocking, ~ms: call in a thread."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class DecodeBudget:
    """At most ``capacity`` bytes held at once; a holder larger than ``capacity`` runs alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_use = 0
        self._changed: asyncio.Condition | None = None  # made in the event loop on first use

    @asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[None]:
        if self._changed is None:
            self._changed = asyncio.Condition()
        changed = self._changed
        async with changed:
            await changed.wait_for(lambda: self.in_use == 0 or self.in_use + n <= self.capacity)
            self.in_use += n
        try:
            yield
        finally:
            async with changed:
                self.in_use -= n
                changed.notify_all()
