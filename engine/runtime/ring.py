"""Shared-memory frame rings: the data plane between actors.

Each raw output port (video or audio) owns one `FrameRing`: N fixed-size slots in ONE POSIX
shared-memory segment.  The supervisor creates it (and unlinks it at shutdown); actor processes
attach to it, so a crashed producer or consumer never takes the ring with it.  A producer writes a
frame once into a free slot (`RingWriter.write`, or `reserve` + `commit` to render straight into the
slot); consumers get a zero-copy read-only numpy view of the slot (`RingReader.view`) and hand the
slot back with `RingReader.release`.  Only a small descriptor (slot, seq, pts) crosses the process
boundary; this module does no messaging at all, it is shared memory plus bookkeeping.

Why `_posixshmem` and not `multiprocessing.shared_memory`: on Python < 3.13 `SharedMemory(name=...)`
registers even a mere attach with the resource tracker, which then warns about "leaked" segments or
unlinks segments other processes still use.  Here only `FrameRing.create` creates and only
`FrameRing.unlink` / `unlink_segments` unlink; attaching registers nothing anywhere.

Segment layout (every region starts on a 64-byte line; regions written by different processes never
share a line)::

    0      static header (creator-written once): magic, version, nslots, slot_bytes, consumers,
           depth, format capacity (FORMAT_INFO_MAX), data_offset, total_size
    64     format info: u64 version, u32 length, u32 pad, then FORMAT_INFO_MAX bytes: the CURRENT
           format of the stream on this port (opaque bytes; the engine stores msgpack'd
           `format_to_wire`).  The creator writes the declared format; after that only the producer
           writes it (`set_format_info`, before it announces a format change on the edge), as a
           seqlock: version odd while being rewritten.  A consumer that attaches (or re-attaches after
           a restart) reads it, so it views slots with the shape of the stream as it is now, not as
           the topology declared it.
    P      producer counters, u64: write_seq, drops[consumers], delivered[consumers]
    M      slot table, u64 x 4 per slot: seq, pts_ns (i64), nbytes, deliver_mask      (producer)
    R      release table: one 64-byte-aligned row of nslots u64 per consumer  (that consumer only)
    D      slot data, each slot 64-byte aligned, stride = slot_bytes rounded up to 64

Sequence numbers start at 1 (0 = never written / being rewritten).  A slot is FREE when every
consumer c in its deliver_mask has release[c][slot] == seq[slot] (or the mask is 0).  Every field has
exactly one writer, so no cross-process atomics are needed; this relies on x86-64's total store order
(stores become visible in program order) - the producer rewrites a slot as seq=0, mask=0, data,
pts/nbytes/mask, seq, and consumers only ever compare seqs for equality.  numpy stores are plain
stores with no barriers, so on a weakly ordered CPU (ARM, POWER, RISC-V) a consumer could see the
new seq before the data; `create` and `attach` therefore refuse to run on anything but x86-64
(`SUPPORTED_MACHINES`) with a ResourceError, rather than hand out torn frames.

Overflow policies, per consumer, applied when a consumer already holds `depth` undelivered slots:

- `drop_newest`: the new frame is not delivered to that consumer; its drop counter goes up.
- `drop_oldest`: the producer side is identical to `drop_newest` (it cannot take back a slot a
  consumer holds).  The consumer side implements "oldest goes first": when it falls behind it drains
  its descriptor queue, releases every frame but the newest and counts them as its own drops.
- `block`: the producer waits (0.5 ms steps, calling `idle()` each step so it can heartbeat from its
  own loop) until the consumer is below `depth`, at most `block_timeout_s`; then it drops for it.
  A consumer that is known to be down should be passed in `exclude`, or every write waits the full
  timeout.

Descriptors (sent by the runtime, not by this module) carry (slot, seq, pts_ns) plus the shape and
dtype the consumer needs for `RingReader.view`.  A restarted consumer calls `RingReader.reattach()`
before it reads descriptors again: that frees whatever its predecessor held, and descriptors still in
flight for those frames read as stale (`view` returns None; skip them, do not release them).

Invariant: nslots >= consumers * depth + 1, so a free slot always exists when every consumer is
bounded by `depth` (which the producer enforces).
"""

from __future__ import annotations

import _posixshmem
import errno
import hashlib
import math
import mmap
import os
import platform
import re
import struct
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from ..sdk.actor import POLICIES
from ..sdk.errors import ResourceError, SharedMemoryError
from .decisions import full_consumers, next_free_slot

__all__ = [
    "FORMAT_INFO_MAX",
    "MAX_CONSUMERS",
    "POLICIES",
    "FrameRing",
    "Reservation",
    "RingReader",
    "RingWriter",
    "WriteResult",
    "list_segments",
    "segment_name",
    "unlink_segment",
    "unlink_segments",
]

MAGIC = b"MEFRING\x00"
LAYOUT_VERSION = 2  # 2: format info is a seqlock'd, producer-rewritable region
MAX_CONSUMERS = 64
FORMAT_INFO_MAX = 1024
SHM_DIR = "/dev/shm"
_PREFIX = "me-"
_MAX_NAME = 200
_LINE = 64
_BLOCK_STEP_S = 0.0005

# magic, version, nslots, slot_bytes, consumers, depth, format_len, (pad), data_offset, total_size
_HEADER = struct.Struct("<8sIIQIIIIQQ")
_FORMAT_OFFSET = _LINE
_FORMAT_HEAD = struct.Struct("<QII")  # version (odd = being written), length, pad
_U64, _U32 = struct.Struct("<Q"), struct.Struct("<I")
_FORMAT_DATA = _FORMAT_OFFSET + _FORMAT_HEAD.size
_SEQ, _PTS, _NBYTES, _MASK = range(4)

U64 = npt.NDArray[np.uint64]


def _align(n: int, to: int = _LINE) -> int:
    return (n + to - 1) // to * to


# --------------------------------------------------------------------------------------------------
# names


def _sanitise(text: str, allowed: str) -> str:
    return re.sub(f"[^{allowed}]", "_", text)


def _engine_part(engine_id: str) -> str:
    # "-" is the separator after the engine id, so it is not allowed inside it: otherwise engine
    # "a" would claim the segments of engine "a-b" in list_segments/unlink_segments.
    part = _sanitise(engine_id, "A-Za-z0-9_.")
    if not part or len(part) > 64:
        raise ValueError(f"engine id {engine_id!r} must be 1..64 characters")
    return part


def shm_free_bytes() -> int | None:
    """Bytes still free in the shared-memory filesystem, or None when it cannot be told."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _reserve(fd: int, name: str, size: int) -> None:
    """Back every page of a new segment now, or fail naming the ring, its size and the free space.

    `ftruncate` only sets the size: the pages of a tmpfs file are allocated on first touch, so on a full
    /dev/shm (Docker's default is 64 MB) the producer would die of SIGBUS at its first write, and again
    after every restart.  `posix_fallocate` allocates them here, where the error can still be reported.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise
        free = shm_free_bytes()
        room = f"{free / 1e6:.1f} MB free" if free is not None else "free space unknown"
        raise SharedMemoryError(
            f"no room in {SHM_DIR} for ring {name!r}: it needs {size / 1e6:.1f} MB ({size} bytes), "
            f"{room} ({exc.strerror}); make {SHM_DIR} larger (e.g. docker run --shm-size=512m), stop "
            "what else uses it, or use smaller frames", where=name) from None


def segment_name(engine_id: str, node: str, pad: str) -> str:
    """The segment name of one output port: "/me-<engine_id>-<node>-<pad>".

    Characters outside [A-Za-z0-9_.-] become "_" ("-" too in the engine id).  When sanitising
    changed node or pad, or either contains "-" (so "a-b"/"c" and "a"/"b-c" cannot collide), or the
    name would exceed 200 characters, a short hash of the original node and pad is appended.
    """
    head = f"/{_PREFIX}{_engine_part(engine_id)}-"
    node_s, pad_s = _sanitise(node, "A-Za-z0-9_.-"), _sanitise(pad, "A-Za-z0-9_.-")
    tail = f"{node_s}-{pad_s}"
    ambiguous = node_s != node or pad_s != pad or "-" in node or "-" in pad
    if ambiguous or len(head) + len(tail) > _MAX_NAME:
        digest = hashlib.sha1(f"{node}\x00{pad}".encode()).hexdigest()[:10]
        tail = f"{tail[: _MAX_NAME - len(head) - len(digest) - 1]}-{digest}"
    return head + tail


def _normalise(name: str) -> str:
    name = name if name.startswith("/") else "/" + name
    if len(name) < 2 or "/" in name[1:] or len(name) > _MAX_NAME + 1:
        raise ValueError(f"bad shared-memory segment name {name!r}")
    return name


def list_segments(engine_id: str | None = None) -> list[str]:
    """Names ("/me-...") of the segments in /dev/shm of one engine, or of every engine for None."""
    prefix = _PREFIX if engine_id is None else f"{_PREFIX}{_engine_part(engine_id)}-"
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    return sorted("/" + e for e in entries if e.startswith(prefix))


def unlink_segment(name: str) -> bool:
    """Unlink one segment by name; False when it did not exist."""
    try:
        _posixshmem.shm_unlink(_normalise(name))
    except FileNotFoundError:
        return False
    return True


def unlink_segments(engine_id: str) -> int:
    """Unlink every segment of one engine (stale-engine cleanup); returns how many were removed."""
    return sum(unlink_segment(n) for n in list_segments(engine_id))


# --------------------------------------------------------------------------------------------------
# the ring


@dataclass(frozen=True)
class _Layout:
    nslots: int
    slot_bytes: int
    consumers: int
    depth: int
    prod_offset: int
    meta_offset: int
    release_offset: int
    release_row_words: int
    data_offset: int
    slot_stride: int
    total_size: int

    @classmethod
    def compute(cls, nslots: int, slot_bytes: int, consumers: int, depth: int) -> _Layout:
        prod = _align(_FORMAT_DATA + FORMAT_INFO_MAX)
        meta = _align(prod + 8 * (1 + 2 * consumers))
        release = _align(meta + 32 * nslots)
        row_words = _align(8 * nslots) // 8
        data = _align(release + consumers * row_words * 8, 4096)
        stride = _align(slot_bytes)
        return cls(nslots, slot_bytes, consumers, depth, prod, meta, release, row_words, data, stride,
                   data + nslots * stride)


def _map(mm: mmap.mmap, dtype: type[Any], offset: int, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    """An array over part of the mapping that pins it: `np.frombuffer` keeps a memoryview (a buffer
    export) as the base, so `mmap.close()` raises BufferError while any view derived from it lives.
    (`np.ndarray(buffer=mm)` would not: it keeps only the mmap, and a close would leave it dangling.)
    """
    count = int(np.prod(shape, dtype=np.int64))
    if count == 0:
        return np.zeros(shape, dtype)
    return np.frombuffer(mm, dtype, count, offset).reshape(shape)


#: CPUs whose store order the ring's lock-free protocol relies on (see the module doc)
SUPPORTED_MACHINES = frozenset({"x86_64", "amd64"})


def check_machine() -> None:
    """Raise ResourceError unless this CPU orders stores the way the ring needs (x86-64)."""
    machine = platform.machine()
    if machine.lower() not in SUPPORTED_MACHINES:
        raise ResourceError(
            f"frame rings need x86-64's total store order and this CPU is {machine or 'unknown'}: "
            "the lock-free slot protocol has no memory barriers; run the engine on x86-64",
            where="ring")


class FrameRing:
    """N fixed-size frame slots in one POSIX shared-memory segment (see the module docstring).

    `create` (supervisor) makes a new segment; `attach` (actors) maps an existing one.  `close`
    unmaps; `unlink` (creator only) removes the segment name.  Numpy views handed out by
    `slot_view` / `RingReader.view` keep the mapping alive: `close()` never invalidates them.  If
    such views are still referenced, `close()` just drops the ring's own reference and the mapping
    goes away with the last view (pass `strict=True` to get a BufferError instead).
    """

    def __init__(self, name: str, mm: mmap.mmap, layout: _Layout, *, creator: bool) -> None:
        self._name = name
        self._mm: mmap.mmap | None = mm
        self._layout = layout
        self._creator = creator
        lay, c, n = layout, layout.consumers, layout.nslots
        self._prod: U64 = _map(mm, np.uint64, lay.prod_offset, (1 + 2 * c,))
        self._meta: U64 = _map(mm, np.uint64, lay.meta_offset, (n, 4))
        self._pts: npt.NDArray[np.int64] = self._meta.view(np.int64)[:, _PTS]
        rows: U64 = _map(mm, np.uint64, lay.release_offset, (c, lay.release_row_words))
        self._release: U64 = rows[:, :n]
        self._data: npt.NDArray[np.uint8] = _map(mm, np.uint8, lay.data_offset, (n, lay.slot_stride))
        self._bits: U64 = (np.uint64(1) << np.arange(c, dtype=np.uint64)).reshape(c, 1)

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def create(cls, name: str, *, slot_bytes: int, consumers: int, depth: int = 4,
               nslots: int | None = None, format_info: bytes = b"") -> FrameRing:
        """Create a new segment (O_CREAT|O_EXCL, mode 0600).  Raises ResourceError if it exists."""
        name = _normalise(name)
        check_machine()
        if slot_bytes <= 0:
            raise ValueError(f"slot_bytes must be > 0, got {slot_bytes}")
        if not 0 <= consumers <= MAX_CONSUMERS:
            raise ValueError(f"consumers must be 0..{MAX_CONSUMERS}, got {consumers}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        minimum = consumers * depth + 1
        nslots = consumers * depth + 2 if nslots is None else nslots
        if nslots < minimum:
            raise ValueError(f"nslots must be >= consumers*depth+1 = {minimum}, got {nslots}")
        if len(format_info) > FORMAT_INFO_MAX:
            raise ValueError(f"format_info is {len(format_info)} bytes, at most {FORMAT_INFO_MAX}")
        layout = _Layout.compute(nslots, slot_bytes, consumers, depth)
        try:
            fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileExistsError:
            raise ResourceError(
                "shared-memory segment already exists (a stale engine? remove it with "
                "unlink_segments(engine_id))", where=name) from None
        try:
            os.ftruncate(fd, layout.total_size)
            _reserve(fd, name, layout.total_size)
            mm = mmap.mmap(fd, layout.total_size)
        except BaseException as exc:
            os.close(fd)
            _posixshmem.shm_unlink(name)
            if isinstance(exc, OSError) and not isinstance(exc, ResourceError):
                raise ResourceError(f"cannot map {layout.total_size} bytes: {exc}", where=name) from exc
            raise
        os.close(fd)
        mm[_FORMAT_DATA:_FORMAT_DATA + len(format_info)] = format_info
        _FORMAT_HEAD.pack_into(mm, _FORMAT_OFFSET, 2, len(format_info), 0)
        # the magic goes in last-but-one store: a half-built segment never looks valid
        _HEADER.pack_into(mm, 0, b"\x00" * 8, LAYOUT_VERSION, nslots, slot_bytes, consumers, depth,
                          FORMAT_INFO_MAX, 0, layout.data_offset, layout.total_size)
        mm[0:8] = MAGIC
        return cls(name, mm, layout, creator=True)

    @classmethod
    def attach(cls, name: str) -> FrameRing:
        """Map an existing segment; raises ResourceError naming it if missing or not a ring."""
        name = _normalise(name)
        check_machine()
        try:
            fd = _posixshmem.shm_open(name, os.O_RDWR, 0)
        except FileNotFoundError:
            raise ResourceError("shared-memory segment does not exist", where=name) from None
        try:
            size = os.fstat(fd).st_size
            if size < _FORMAT_DATA + FORMAT_INFO_MAX:
                raise ResourceError(f"not a frame ring (only {size} bytes)", where=name)
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        try:
            magic, version, nslots, slot_bytes, consumers, depth, fcap, _, data_off, total = (
                _HEADER.unpack_from(mm, 0))
            if magic != MAGIC:
                raise ResourceError(f"not a frame ring (bad magic {magic!r})", where=name)
            if version != LAYOUT_VERSION:
                raise ResourceError(f"ring layout version {version}, expected {LAYOUT_VERSION}",
                                    where=name)
            layout = _Layout.compute(nslots, slot_bytes, consumers, depth)
            if ((layout.data_offset, layout.total_size) != (data_off, total) or total > size
                    or fcap != FORMAT_INFO_MAX):
                raise ResourceError("inconsistent ring header", where=name)
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, layout, creator=False)

    def close(self, *, strict: bool = False) -> None:
        """Unmap.  Views still referenced keep the mapping alive (or raise BufferError if strict)."""
        mm = self._mm
        if mm is None:
            return
        empty64: U64 = np.zeros((0,), np.uint64)
        self._prod = self._meta = self._release = self._bits = empty64
        self._pts = np.zeros((0,), np.int64)
        self._data = np.zeros((0, 0), np.uint8)
        self._mm = None
        try:
            mm.close()
        except BufferError:
            if strict:
                raise BufferError(
                    f"ring {self._name}: numpy views of its slots are still referenced; delete them "
                    "before close(strict=True)") from None
            # otherwise: the views own the mapping now; it is unmapped when the last one dies

    def unlink(self) -> None:
        """Remove the segment name (creator only; a missing segment is fine)."""
        if not self._creator:
            raise RuntimeError(f"ring {self._name}: only the creator unlinks (use unlink_segment)")
        unlink_segment(self._name)

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._mm is None else f"write_seq={self.write_seq()}"
        return (f"FrameRing({self._name!r}, nslots={self.nslots}, slot_bytes={self.slot_bytes}, "
                f"consumers={self.consumers}, depth={self.depth}, {state})")

    # -- properties --------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def nslots(self) -> int:
        return self._layout.nslots

    @property
    def slot_bytes(self) -> int:
        return self._layout.slot_bytes

    @property
    def consumers(self) -> int:
        return self._layout.consumers

    @property
    def depth(self) -> int:
        return self._layout.depth

    @property
    def format_info(self) -> bytes:
        """The current format of the stream on this port (see the module docstring), read consistently."""
        self._check_open()
        mm = self._mm
        assert mm is not None
        for _ in range(10_000):  # seqlock: version, length, data, version again (stores are ordered)
            v1 = _U64.unpack_from(mm, _FORMAT_OFFSET)[0]
            n = _U32.unpack_from(mm, _FORMAT_OFFSET + 8)[0]
            if v1 % 2 == 0 and n <= FORMAT_INFO_MAX:
                data = bytes(mm[_FORMAT_DATA:_FORMAT_DATA + n])
                if _U64.unpack_from(mm, _FORMAT_OFFSET)[0] == v1:
                    return data
            time.sleep(0)
        raise ResourceError("format info kept changing while being read (is the producer looping?)",
                            where=self._name)

    def set_format_info(self, info: bytes) -> None:
        """Rewrite the current format (the producer only, before it announces the change on the edge)."""
        self._check_open()
        mm = self._mm
        assert mm is not None
        if len(info) > FORMAT_INFO_MAX:
            raise ValueError(f"format_info is {len(info)} bytes, at most {FORMAT_INFO_MAX}")
        version = _U64.unpack_from(mm, _FORMAT_OFFSET)[0]
        version += 1 + version % 2  # odd: being written
        _U64.pack_into(mm, _FORMAT_OFFSET, version)
        mm[_FORMAT_DATA:_FORMAT_DATA + len(info)] = info
        _U32.pack_into(mm, _FORMAT_OFFSET + 8, len(info))
        _U64.pack_into(mm, _FORMAT_OFFSET, version + 1)  # even again, after everything else

    @property
    def closed(self) -> bool:
        return self._mm is None

    # -- reading state -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._mm is None:
            raise ValueError(f"ring {self._name} is closed")

    def _check_consumer(self, consumer: int) -> None:
        if not 0 <= consumer < self.consumers:
            raise IndexError(f"ring {self._name}: consumer {consumer} not in 0..{self.consumers - 1}")

    def _check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.nslots:
            raise IndexError(f"ring {self._name}: slot {slot} not in 0..{self.nslots - 1}")

    def _held_matrix(self) -> npt.NDArray[np.bool_]:
        """held[c, i]: slot i was delivered to consumer c and not released yet."""
        self._check_open()
        seq = self._meta[:, _SEQ]
        delivered = (self._meta[:, _MASK] & self._bits) != 0
        held: npt.NDArray[np.bool_] = delivered & (self._release != seq)
        return held

    def slot_view(self, slot: int, nbytes: int | None = None) -> npt.NDArray[np.uint8]:
        """The raw bytes of a slot as a writable uint8 array (zero-copy; no bookkeeping at all)."""
        self._check_open()
        self._check_slot(slot)
        n = self.slot_bytes if nbytes is None else nbytes
        if not 0 <= n <= self.slot_bytes:
            raise ValueError(f"ring {self._name}: {n} bytes do not fit a {self.slot_bytes}-byte slot")
        return self._data[slot, :n]

    def slot_seq(self, slot: int) -> int:
        self._check_open()
        self._check_slot(slot)
        return int(self._meta[slot, _SEQ])

    def slot_pts_ns(self, slot: int) -> int:
        self._check_open()
        self._check_slot(slot)
        return int(self._pts[slot])

    def slot_nbytes(self, slot: int) -> int:
        self._check_open()
        self._check_slot(slot)
        return int(self._meta[slot, _NBYTES])

    def write_seq(self) -> int:
        """Sequence number of the last committed frame (0 before the first)."""
        self._check_open()
        return int(self._prod[0])

    def drops(self, consumer: int) -> int:
        self._check_open()
        self._check_consumer(consumer)
        return int(self._prod[1 + consumer])

    def delivered(self, consumer: int) -> int:
        self._check_open()
        self._check_consumer(consumer)
        return int(self._prod[1 + self.consumers + consumer])

    def held(self, consumer: int) -> int:
        """Slots delivered to this consumer and not released yet."""
        self._check_consumer(consumer)
        return int(self._held_matrix()[consumer].sum())

    def free_slots(self) -> int:
        return int(self.nslots - self._held_matrix().any(axis=0).sum())

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: write_seq and per consumer held/drops/delivered (queue fill)."""
        held = self._held_matrix().sum(axis=1)
        return {
            "write_seq": self.write_seq(),
            "nslots": self.nslots,
            "depth": self.depth,
            "free_slots": self.free_slots(),
            "consumers": [
                {"held": int(held[c]), "drops": self.drops(c), "delivered": self.delivered(c)}
                for c in range(self.consumers)
            ],
        }


# --------------------------------------------------------------------------------------------------
# producer


@dataclass(frozen=True)
class WriteResult:
    """What one write did: the frame's seq and slot, who got it and who had it dropped."""

    seq: int
    slot: int
    delivered: tuple[int, ...]
    dropped: tuple[int, ...]


@dataclass(frozen=True)
class Reservation:
    """A free slot handed to the producer to fill in place; `buffer` is its writable bytes."""

    slot: int
    buffer: npt.NDArray[np.uint8]

    def array(self, shape: tuple[int, ...], dtype: npt.DTypeLike = np.uint8) -> npt.NDArray[Any]:
        """The slot as a writable array of this shape and dtype (zero-copy)."""
        dt = np.dtype(dtype)
        n = math.prod(shape) * dt.itemsize
        if n > self.buffer.nbytes:
            raise ValueError(f"{shape} {dt} needs {n} bytes, the slot has {self.buffer.nbytes}")
        return self.buffer[:n].view(dt).reshape(shape)


class RingWriter:
    """The one producer of a ring.  A restarted producer makes a new RingWriter and goes on.

    `write(data, pts_ns)` copies once into a free slot.  For zero copy, `reserve()` a slot, render
    into `reservation.array(shape, dtype)` (e.g. `cv2.VideoCapture.read(image=...)`, `np.copyto`,
    `out=`), then `commit(reservation, pts_ns, nbytes)`.  An uncommitted reservation is simply
    abandoned by the next `reserve()`/`write()`: the slot stays free.

    Only one RingWriter may be live per ring: it mirrors the slot table and the counters it alone
    writes.  A restarted producer (or a replacement in the same process) builds a new one from the
    segment, after the old one is gone, and continues `write_seq`.
    """

    def __init__(self, ring: FrameRing, policies: Sequence[str], *, block_timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 idle: Callable[[], None] | None = None) -> None:
        if len(policies) != ring.consumers:
            raise ValueError(f"ring {ring.name}: {len(policies)} policies for {ring.consumers} consumers")
        for c, p in enumerate(policies):
            if p not in POLICIES:
                raise ValueError(f"ring {ring.name}: consumer {c} policy {p!r} not in {POLICIES}")
        self._ring = ring
        self._policies = tuple(policies)
        self._block_timeout_s = block_timeout_s
        self._clock, self._sleep, self._idle = clock, sleep, idle
        # The producer is the only writer of the slot table, so it keeps a mirror of seq and mask
        # (loaded here, which is what lets a restarted producer go on) and reads only the
        # consumers' release rows on the hot path.
        ring._check_open()
        self._seq: list[int] = [int(x) for x in ring._meta[:, _SEQ].tolist()]
        self._mask: list[int] = [int(x) for x in ring._meta[:, _MASK].tolist()]
        top = max(self._seq, default=0)
        # a producer killed between the slot's seq store and the write_seq store left top > write_seq
        self._last_seq = max(ring.write_seq(), top)
        self._last_slot = self._seq.index(top) if top else ring.nslots - 1
        self._counters: list[int] = [int(x) for x in ring._prod.tolist()]  # write_seq, drops, delivered
        self._pending: int | None = None

    @property
    def ring(self) -> FrameRing:
        return self._ring

    @property
    def policies(self) -> tuple[str, ...]:
        return self._policies

    def _scan(self) -> tuple[list[int], list[bool]]:
        """Per consumer: slots held; per slot: busy (held by anyone).  Pure Python on purpose:
        for rings of a few dozen slots it is several times faster than small-array numpy."""
        ring = self._ring
        ring._check_open()
        seqs, masks = self._seq, self._mask
        held: list[int] = []
        busy = [False] * ring.nslots
        for c, row in enumerate(ring._release.tolist()):
            bit = 1 << c
            mine = [i for i, (seq, mask, rel) in enumerate(zip(seqs, masks, row, strict=True))
                    if mask & bit and rel != seq]
            held.append(len(mine))
            for i in mine:
                busy[i] = True
        return held, busy

    def reserve(self) -> Reservation:
        """A free slot (round-robin after the last one used) to fill in place, then `commit`."""
        ring = self._ring
        _, busy = self._scan()
        slot = next_free_slot(busy, self._last_slot)
        if slot is None:  # cannot happen while nslots >= consumers*depth+1 and depth is enforced
            raise RuntimeError(f"ring {ring.name}: no free slot ({ring.stats()})")
        meta = ring._meta
        meta[slot, _SEQ] = 0  # invalidate before any byte of the old frame changes
        meta[slot, _MASK] = 0
        self._seq[slot] = self._mask[slot] = 0
        self._pending = slot
        return Reservation(slot, ring._data[slot, : ring.slot_bytes])

    def write(self, data: npt.NDArray[Any] | bytes | bytearray | memoryview, pts_ns: int, *,
              exclude: Collection[int] = ()) -> WriteResult:
        """Copy one frame into a free slot and deliver it per the consumers' policies."""
        arr = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
        if arr.dtype.hasobject:
            raise ValueError("object arrays cannot go into a ring slot")
        if arr.nbytes > self._ring.slot_bytes:
            raise ValueError(f"ring {self._ring.name}: frame of {arr.nbytes} bytes exceeds the "
                             f"{self._ring.slot_bytes}-byte slot")
        res = self.reserve()
        np.copyto(res.array(arr.shape, arr.dtype), arr, casting="no")
        return self.commit(res, pts_ns, arr.nbytes, exclude=exclude)

    def _deliveries(self, exclude: Collection[int]) -> tuple[list[int], list[int]]:
        ring = self._ring
        depth = ring.depth
        held, _ = self._scan()
        wanted, dropped, waiting = full_consumers(held, depth, self._policies, exclude)
        if waiting:
            deadline = self._clock() + self._block_timeout_s
            while True:
                held, _ = self._scan()
                waiting = [c for c in waiting if held[c] >= depth]
                if not waiting or self._clock() >= deadline:
                    break
                if self._idle is not None:
                    self._idle()
                self._sleep(_BLOCK_STEP_S)
            dropped.extend(waiting)
        dropped_set = set(dropped)
        return [c for c in wanted if c not in dropped_set], sorted(dropped_set)

    def commit(self, reservation: Reservation, pts_ns: int, nbytes: int, *,
               exclude: Collection[int] = ()) -> WriteResult:
        """Publish a reserved slot holding `nbytes` bytes as the next frame."""
        ring = self._ring
        if self._pending is None or reservation.slot != self._pending:
            raise RuntimeError(f"ring {ring.name}: slot {reservation.slot} is not the pending reservation")
        if not 0 <= nbytes <= ring.slot_bytes:
            raise ValueError(f"ring {ring.name}: {nbytes} bytes do not fit a {ring.slot_bytes}-byte slot")
        for c in exclude:
            ring._check_consumer(c)
        delivered, dropped = self._deliveries(exclude)
        slot, seq = reservation.slot, self._last_seq + 1
        mask = 0
        for c in delivered:
            mask |= 1 << c
        meta = ring._meta
        ring._pts[slot] = pts_ns
        meta[slot, _NBYTES] = nbytes
        meta[slot, _MASK] = mask
        prod, counters, n = ring._prod, self._counters, ring.consumers
        for c in dropped:
            counters[1 + c] += 1
            prod[1 + c] = counters[1 + c]
        for c in delivered:
            counters[1 + n + c] += 1
            prod[1 + n + c] = counters[1 + n + c]
        meta[slot, _SEQ] = seq  # last store of the slot: from here on it is a valid frame
        prod[0] = seq
        self._seq[slot], self._mask[slot] = seq, mask
        self._last_seq, self._last_slot, self._pending = seq, slot, None
        return WriteResult(seq, slot, tuple(delivered), tuple(dropped))


# --------------------------------------------------------------------------------------------------
# consumer


class RingReader:
    """One consumer's side of a ring: zero-copy views of delivered frames, and their release."""

    def __init__(self, ring: FrameRing, consumer: int) -> None:
        ring._check_consumer(consumer)
        self._ring = ring
        self._consumer = consumer
        self._bit = 1 << consumer

    @property
    def ring(self) -> FrameRing:
        return self._ring

    @property
    def consumer(self) -> int:
        return self._consumer

    def _holds(self, slot: int, seq: int) -> int:
        """The frame's nbytes if this consumer holds (slot, seq), else -1."""
        ring = self._ring
        ring._check_open()
        ring._check_slot(slot)
        cur, _, nbytes, mask = ring._meta[slot].tolist()
        if (seq != 0 and cur == seq and mask & self._bit
                and ring._release.item(self._consumer, slot) != seq):
            return int(nbytes)
        return -1

    def view(self, slot: int, seq: int, shape: tuple[int, ...],
             dtype: npt.DTypeLike) -> npt.NDArray[Any] | None:
        """A read-only zero-copy array of the frame, or None if the descriptor is stale.

        Stale: the slot now holds another seq, this consumer was not given the frame, or it already
        released it.  The array is valid until `release(slot, seq)`; after that the producer may
        overwrite the slot (copy first to keep the pixels longer).
        """
        have = self._holds(slot, seq)
        if have < 0:
            return None
        dt = np.dtype(dtype)
        n = math.prod(shape) * dt.itemsize
        if n > have:
            raise ValueError(f"ring {self._ring.name}: descriptor {shape} {dt} needs {n} bytes, "
                             f"slot {slot} holds {have}")
        out: npt.NDArray[Any] = self._ring._data[slot, :n].view(dt).reshape(shape)
        out.flags.writeable = False
        return out

    def release(self, slot: int, seq: int) -> None:
        """Hand the slot back.  Releasing a stale or already released descriptor does nothing."""
        if self._holds(slot, seq) >= 0:
            self._ring._release[self._consumer, slot] = seq

    def reattach(self) -> int:
        """After a consumer restart: release every slot still delivered to it; returns how many.

        Descriptors of those frames that are still in flight then read as stale (`view` -> None).
        """
        ring = self._ring
        count = 0
        for slot in range(ring.nslots):
            seq = int(ring._meta[slot, _SEQ])
            if seq and self._holds(slot, seq) >= 0:
                ring._release[self._consumer, slot] = seq
                count += 1
        return count
