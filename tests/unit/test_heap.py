"""What the supervisor's memory figures count (engine/supervision/heap.py), and that decoding a client's
message keeps nothing: the ground the fuzz test's per-message bound stands on (docs/testing.md)."""

from __future__ import annotations

import ctypes
import gc
import itertools
import sys
from pathlib import Path

import msgpack
import pytest
from mediaengine.control import protocol as proto
from mediaengine.supervision.heap import heap_usage

pytestmark = pytest.mark.skipif(heap_usage().malloc_in_use is None, reason="malloc figures need glibc 2.33+")

_fresh = itertools.count()


def _quiet() -> tuple[int, int]:
    """(malloc bytes in use, interpreter blocks) with no garbage waiting for the cyclic collector."""
    gc.collect()
    usage = heap_usage()
    assert usage.malloc_in_use is not None
    return usage.malloc_in_use, usage.python_blocks


def test_malloc_in_use_counts_a_block_while_it_is_held_and_not_after() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before, _ = _quiet()
    block = libc.malloc(1 << 20)
    held, _ = _quiet()
    libc.free(block)
    after, _ = _quiet()
    assert held - before >= 1 << 20, (before, held)
    assert abs(after - before) < 64 * 1024, (before, after)


def test_python_blocks_count_the_objects_kept() -> None:
    _, before = _quiet()
    kept = [float(i) for i in range(10_000)]  # what a leak of one small object per message looks like
    _, held = _quiet()
    del kept
    _, after = _quiet()
    assert held - before >= 10_000, (before, held)
    assert abs(after - before) < 100, (before, after)


def test_measuring_keeps_nothing() -> None:
    """`ps` measures on every call in debug mode, and the fuzz test asks every 500 messages: the
    measurement must not be a leak of its own."""
    for _ in range(100):
        heap_usage()
    in_use, blocks = _quiet()
    for _ in range(5_000):
        heap_usage()
    in_use_after, blocks_after = _quiet()
    assert abs(in_use_after - in_use) < 4096 and abs(blocks_after - blocks) < 50, (in_use_after - in_use,
                                                                                    blocks_after - blocks)


def _request_with_new_keys(keys: int = 8) -> bytes:
    n = next(_fresh)
    return msgpack.packb({"v": proto.VERSION, "type": "command", "id": n, "node": "filt", "command": "stats",
                          "args": {f"arg-{n}-{i}-never-seen-before": i for i in range(keys)},
                          f"extra-{n}-never-seen-before": {f"nested-{n}": [1, 2]}}, use_bin_type=True)


def test_decoding_requests_with_never_seen_keys_keeps_nothing() -> None:
    """msgpack interns every str map key; where interned strings are immortal (CPython 3.12 before the
    backport of gh-113993: 3.12.1 kept about 990 bytes per request like these), every key a client
    invents stays in the supervisor for good.  Fails on such an interpreter.

    First, 100,000 new keys: the table of interned strings is rebuilt after at most two thirds of its
    slots have been used, and the first rebuild may double it (+0.96 MB at 2^16 slots, once)."""
    for _ in range(100):
        proto.decode(_request_with_new_keys(1_000))
    in_use, blocks = _quiet()
    count = 5_000
    for _ in range(count):
        proto.decode(_request_with_new_keys())
    in_use_after, blocks_after = _quiet()
    kept_bytes, kept_blocks = (in_use_after - in_use) / count, (blocks_after - blocks) / count
    assert kept_blocks < 0.05 and kept_bytes < 8, (
        f"decoding kept {kept_blocks:.2f} blocks and {kept_bytes:.1f} malloc bytes per request on Python "
        f"{sys.version.split()[0]}, msgpack {msgpack.version}")


def test_ps_reports_memory_only_when_the_engine_was_started_for_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures are for tests and debugging (measuring costs up to a few ms): off unless whoever
    starts the engine asks (`MEDIAENGINE_DEBUG_MEMORY=1`, read by `mediaengine run`); no request turns
    them on."""
    from mediaengine.supervision.supervisor import Supervisor
    from mediaengine.topology.loader import load_topology

    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("MEDIAENGINE_RUNTIME_DIR", str(runtime))
    topology = load_topology({"version": 1, "nodes": [
        {"id": "tone", "kind": "tone"},
        {"id": "aenc", "kind": "audio_encoder", "inputs": {"in": "tone"}},
        {"id": "rec", "kind": "recorder", "inputs": {"audio": "aenc"}, "options": {"path": str(tmp_path / "a.mp4")}},
    ]})
    shown = {}
    for debug in (False, True):
        sup = Supervisor(topology, debug_memory=debug)
        try:
            shown[debug] = sup.status().get("memory")
        finally:
            sup._cleanup()  # what run() does at the end: sockets, context, run directory
    assert shown[False] is None
    assert shown[True] is not None and set(shown[True]) == {"rss", "malloc_in_use", "malloc_held", "python_blocks",
                                                            "traced"}
    assert shown[True]["malloc_in_use"] <= shown[True]["malloc_held"] and shown[True]["python_blocks"] > 0
