"""The supervisor's heap: kept from ratcheting up on large control messages, and measured.

Any client may send control messages of up to 1 MiB.  glibc's malloc raises its mmap threshold
dynamically each time a large mmapped block is freed, after which blocks of that size come from the
heap, where they fragment it and the heap only grows: the supervisor's RSS would creep up with the
number of large messages it has seen.  A fixed threshold (which turns the dynamic one off) gives every
block of 64 KiB or more back to the system when it is freed.  Only the supervisor's own process: actors
start from the fork server with their own settings (GLIBC_TUNABLES, for per-frame buffers).

`heap_usage()` tells memory in use from memory merely held.  RSS cannot: glibc keeps freed memory in
its arenas (ZeroMQ's I/O thread has one of its own, as large as the largest backlog of received
messages so far), so RSS rises in steps that later messages do not repeat.  A leak raises the live
counters: bytes malloc has handed out and not got back, blocks the interpreter holds.  (One step of
those is real, and happens once: CPython's table of interned strings, where msgpack puts every map key,
may be rebuilt from 0.96 to 1.9 MB.)  The supervisor reports them in `ps` when started with
MEDIAENGINE_DEBUG_MEMORY=1 (docs/protocol.md); the fuzz test bounds them (docs/testing.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psutil

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 64 * 1024
TRIM_THRESHOLD_BYTES = 1024 * 1024


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (2.33 and later): totals over every arena, in bytes."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@dataclass(frozen=True)
class HeapUsage:
    """This process's memory: what it holds (RSS, malloc's arenas) and what it uses (live blocks)."""

    rss: int  # resident set size, bytes
    malloc_in_use: int | None  # bytes malloc has handed out and not got back, every thread; None without glibc
    malloc_held: int | None  # bytes malloc holds from the system, in use or free; None without glibc
    python_blocks: int  # memory blocks the interpreter has allocated and not freed (sys.getallocatedblocks)
    traced: int | None  # bytes tracemalloc traces now (PYTHONTRACEMALLOC=1), None when it is not tracing

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _libc() -> Any:
    """The C library, looked up once (`find_library` runs ldconfig in a subprocess: about 2 ms)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


@functools.cache
def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        function: Any = _libc().mallinfo2
    except (OSError, AttributeError):  # no glibc, or one older than 2.33
        return None
    function.argtypes = []
    function.restype = _MallInfo2
    return function  # type: ignore[no-any-return]


def heap_usage() -> HeapUsage:
    """Measure now.  `mallinfo2` walks malloc's free lists (up to a few ms on a fragmented heap): for
    tests and debugging, not for every `ps`."""
    in_use = held = None
    mallinfo2 = _mallinfo2()
    if mallinfo2 is not None:
        info = mallinfo2()
        in_use, held = info.uordblks + info.hblkhd, info.arena + info.hblkhd
    return HeapUsage(rss=psutil.Process().memory_info().rss, malloc_in_use=in_use, malloc_held=held,
                     python_blocks=sys.getallocatedblocks(),
                     traced=tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None)


def bound_heap_growth() -> bool:
    """Fix malloc's mmap and trim thresholds for this process; False where there is no glibc."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = _libc()
        ok_mmap = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        ok_trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        return bool(ok_mmap and ok_trim)
    return False
