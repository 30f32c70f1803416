"""Keep the supervisor's heap from ratcheting up on large control messages.

Any client may send control messages of up to 1 MiB.  glibc's malloc raises its mmap threshold
dynamically each time a large mmapped block is freed, after which blocks of that size come from the
heap, where they fragment it and the heap only grows: the supervisor's RSS would creep up with the
number of large messages it has seen.  A fixed threshold (which turns the dynamic one off) gives every
block of 64 KiB or more back to the system when it is freed.  Only the supervisor's own process: actors
start from the fork server with their own settings (GLIBC_TUNABLES, for per-frame buffers).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024


def bound_heap_growth() -> bool:
    """Fix malloc's mmap and trim thresholds for this process; False where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        ok_trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        return bool(ok_mmap and ok_trim)
    return False
