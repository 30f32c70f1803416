"""Shared-memory frame rings: round trips, fan-out policies, stale descriptors, dead processes.

Every segment is created under a per-test engine id and unlinked by the fixtures even when a test
fails; child processes are SIGKILLed and reaped by their fixture.
"""

from __future__ import annotations

import _posixshmem
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from mediaengine.runtime.decisions import keep_newest_raw
from mediaengine.runtime.ring import (
    FORMAT_INFO_MAX,
    FrameRing,
    RingReader,
    RingWriter,
    list_segments,
    segment_name,
    unlink_segment,
    unlink_segments,
)
from mediaengine.runtime.wire import Desc, FrameDesc, decode_desc, eos_desc, frame_desc, packet_desc
from mediaengine.sdk.errors import ResourceError
from mediaengine.sdk.formats import Packet

REPO = Path(__file__).resolve().parents[2]
H, W = 720, 1280
FRAME_720P = H * W * 3
PACKET = Packet(b"\x00\x00\x00\x01\x65", 0, 0, Fraction(1, 90000), keyframe=True)


def shm_path(name: str) -> Path:
    return Path("/dev/shm") / name.lstrip("/")


def stamped(base: npt.NDArray[np.uint8], i: int) -> npt.NDArray[np.uint8]:
    """A distinct frame per index: the base picture with its first row set to i."""
    frame = base.copy()
    frame[0] = i % 256
    frame[1, :8, 0] = np.frombuffer(i.to_bytes(8, "little"), np.uint8)
    return frame


class Clock:
    """Fake monotonic clock whose sleep advances it (and can run a hook per step)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps = 0
        self.on_sleep: Callable[[int], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps += 1
        self.now += s
        if self.on_sleep is not None:
            self.on_sleep(self.sleeps)


def no_sleep(s: float) -> None:
    raise AssertionError(f"producer blocked ({s} s) although no consumer asked for it")


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def engine_id() -> Iterator[str]:
    eid = f"t{uuid.uuid4().hex[:16]}"
    try:
        yield eid
    finally:
        unlink_segments(eid)
        assert list_segments(eid) == []


@pytest.fixture
def make_ring(engine_id: str) -> Iterator[Callable[..., FrameRing]]:
    rings: list[FrameRing] = []

    def make(pad: str = "out", **kw: Any) -> FrameRing:
        kw.setdefault("slot_bytes", 4096)
        kw.setdefault("consumers", 1)
        ring = FrameRing.create(segment_name(engine_id, "node", pad), **kw)
        rings.append(ring)
        return ring

    try:
        yield make
    finally:
        for ring in rings:
            ring.close()
            ring.unlink()


@pytest.fixture
def children() -> Iterator[list[Any]]:
    procs: list[Any] = []
    try:
        yield procs
    finally:
        for p in procs:
            if isinstance(p, subprocess.Popen):
                if p.poll() is None:
                    p.kill()
                p.communicate(timeout=10)
            else:
                if p.is_alive():
                    p.kill()
                p.join(10)


# --------------------------------------------------------------------------------------------------
# names and segments


def test_segment_name_is_sanitised_prefixed_and_unambiguous() -> None:
    assert segment_name("e1", "cam", "out") == "/me-e1-cam-out"
    name = segment_name("eng-7", "beau ty/x", "out")
    assert name.startswith("/me-eng_7-beau_ty_x-out-")  # "-" is not allowed inside the engine id
    assert all(ch.isalnum() or ch in "_.-" for ch in name[1:])
    assert segment_name("e", "a-b", "c") != segment_name("e", "a", "b-c")
    long = segment_name("e", "n" * 300, "p" * 300)
    assert len(long) <= 200 and long.startswith("/me-e-nnn")
    assert long != segment_name("e", "n" * 300, "p" * 299)
    with pytest.raises(ValueError):
        segment_name("", "a", "b")


def test_create_attach_unlink_round_trip(engine_id: str) -> None:
    name = segment_name(engine_id, "cam", "out")
    info = b'{"kind":"video","width":1280,"height":720,"pix_fmt":"rgb24"}'
    ring = FrameRing.create(name, slot_bytes=1000, consumers=2, depth=3, format_info=info)
    try:
        st = os.stat(shm_path(name))
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert ring.nslots == 2 * 3 + 2
        other = FrameRing.attach(name)
        assert (other.name, other.nslots, other.slot_bytes, other.consumers, other.depth) == (
            name, 8, 1000, 2, 3)
        assert other.format_info == info
        RingWriter(ring, ["block", "block"]).write(b"hello ring", 42)
        reader = RingReader(other, 1)
        assert other.write_seq() == 1 and other.slot_pts_ns(0) == 42
        view = reader.view(0, 1, (10,), "uint8")
        assert view is not None and view.tobytes() == b"hello ring"
        del view
        other.close(strict=True)
        with pytest.raises(RuntimeError, match="only the creator"):
            other.unlink()
    finally:
        ring.close()
        ring.unlink()
    assert not shm_path(name).exists()
    ring.unlink()  # idempotent
    with pytest.raises(ResourceError, match=name):
        FrameRing.attach(name)


def test_attach_missing_or_foreign_segment_raises_resource_error(engine_id: str) -> None:
    missing = segment_name(engine_id, "nobody", "out")
    with pytest.raises(ResourceError, match="does not exist") as info:
        FrameRing.attach(missing)
    assert missing in str(info.value) and info.value.code == 1300

    foreign = segment_name(engine_id, "foreign", "out")
    fd = _posixshmem.shm_open(foreign, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, 8192)
    finally:
        os.close(fd)
    with pytest.raises(ResourceError, match="bad magic") as info:
        FrameRing.attach(foreign)
    assert foreign in str(info.value)


def test_create_refuses_existing_segment_and_bad_sizes(make_ring: Callable[..., FrameRing]) -> None:
    ring = make_ring()
    with pytest.raises(ResourceError, match="already exists"):
        FrameRing.create(ring.name, slot_bytes=16, consumers=1)
    with pytest.raises(ValueError, match="nslots"):
        make_ring("a", consumers=2, depth=4, nslots=8)
    with pytest.raises(ValueError, match="consumers"):
        make_ring("b", consumers=65)
    with pytest.raises(ValueError, match="format_info"):
        make_ring("c", format_info=b"x" * 1025)
    assert make_ring("d", consumers=2, depth=4, nslots=9).nslots == 9


def test_list_and_unlink_segments_by_engine(engine_id: str) -> None:
    other_id = engine_id + "_x"  # a longer id sharing the prefix must not be matched
    names = [segment_name(engine_id, n, "out") for n in ("cam", "mic", "mix")]
    other = segment_name(other_id, "cam", "out")
    rings = [FrameRing.create(n, slot_bytes=64, consumers=1) for n in [*names, other]]
    try:
        for r in rings:
            r.close()
        assert list_segments(engine_id) == sorted(names)
        assert list_segments(other_id) == [other]
        assert set(list_segments()) >= {*names, other}
        assert unlink_segments(engine_id) == 3
        assert list_segments(engine_id) == []
        assert not any(shm_path(n).exists() for n in names)
        FrameRing.attach(other).close()  # the other engine's ring is untouched
        assert unlink_segments(engine_id) == 0
    finally:
        for n in [*names, other]:
            unlink_segment(n)


# --------------------------------------------------------------------------------------------------
# one producer, one consumer


def test_single_consumer_sees_exact_720p_frames_zero_copy(make_ring: Callable[..., FrameRing]) -> None:
    ring = make_ring(slot_bytes=FRAME_720P, consumers=1, depth=2)
    writer, reader = RingWriter(ring, ["block"], sleep=no_sleep), RingReader(ring, 0)
    base = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for i in range(6):
        frame = stamped(base, i)
        res = writer.write(frame, pts_ns=i * 33_333_333)
        assert (res.seq, res.delivered, res.dropped) == (i + 1, (0,), ())
        view = reader.view(res.slot, res.seq, (H, W, 3), "uint8")
        assert view is not None
        np.testing.assert_array_equal(view, frame)
        assert ring.slot_pts_ns(res.slot) == i * 33_333_333 and ring.held(0) == 1
        with pytest.raises(ValueError):
            view[0, 0, 0] = 1  # consumers get read-only views
        # zero copy: a write through another mapping of the slot shows up in the consumer's view
        raw = ring.slot_view(res.slot)
        assert np.shares_memory(raw, view)
        raw[5] = (int(view[0, 1, 2]) + 1) % 256
        assert int(view[0, 1, 2]) == int(raw[5])
        reader.release(res.slot, res.seq)
        assert ring.held(0) == 0
        assert reader.view(res.slot, res.seq, (H, W, 3), "uint8") is None  # released -> stale
    assert ring.write_seq() == 6 and ring.delivered(0) == 6 and ring.drops(0) == 0


def test_reserve_commit_renders_in_place(make_ring: Callable[..., FrameRing]) -> None:
    ring = make_ring(slot_bytes=2 * 3 * 4, consumers=1)
    writer, reader = RingWriter(ring, ["drop_newest"]), RingReader(ring, 0)
    res = writer.reserve()
    target = res.array((2, 3), np.float32)
    np.multiply(np.arange(6, dtype=np.float32).reshape(2, 3), 1.5, out=target)
    out = writer.commit(res, 7, target.nbytes)
    view = reader.view(out.slot, out.seq, (2, 3), "float32")
    assert view is not None
    np.testing.assert_array_equal(view, np.arange(6).reshape(2, 3) * 1.5)
    with pytest.raises(RuntimeError, match="pending"):
        writer.commit(res, 8, 4)  # a reservation commits once
    with pytest.raises(ValueError, match="needs"):
        reader.view(out.slot, out.seq, (3, 3), "float32")  # descriptor larger than the frame


def test_oversized_frame_and_zero_consumers(make_ring: Callable[..., FrameRing]) -> None:
    ring = make_ring(slot_bytes=16, consumers=0)
    writer = RingWriter(ring, [])
    with pytest.raises(ValueError, match="exceeds"):
        writer.write(np.zeros(17, np.uint8), 0)
    results = [writer.write(bytes([i]) * 16, i) for i in range(5)]
    assert [r.seq for r in results] == [1, 2, 3, 4, 5]
    assert all(r.delivered == () and r.dropped == () for r in results)
    assert ring.stats()["consumers"] == [] and ring.write_seq() == 5


# --------------------------------------------------------------------------------------------------
# fan-out and overflow policies


@pytest.mark.parametrize("slow_policy", ["drop_newest", "drop_oldest"])
def test_fan_out_slow_consumer_never_blocks_fast_one(make_ring: Callable[..., FrameRing],
                                                     slow_policy: str) -> None:
    """At the ring, `drop_oldest` behaves as `drop_newest` by design (the producer cannot take back a slot
    a consumer holds); what makes it `drop_oldest` is the consumer side, tested below."""
    depth, n = 3, 40
    ring = make_ring(slot_bytes=64 * 64 * 3, consumers=2, depth=depth)
    # the fast consumer has "block": any wait at all would hit no_sleep and fail the test
    writer = RingWriter(ring, ["block", slow_policy], sleep=no_sleep)
    fast, slow = RingReader(ring, 0), RingReader(ring, 1)
    base = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    slow_got: list[tuple[int, int, int]] = []
    for i in range(n):
        res = writer.write(stamped(base, i), pts_ns=i)
        assert 0 in res.delivered
        view = fast.view(res.slot, res.seq, (64, 64, 3), "uint8")
        assert view is not None
        np.testing.assert_array_equal(view, stamped(base, i))
        fast.release(res.slot, res.seq)
        if 1 in res.delivered:
            slow_got.append((i, res.slot, res.seq))
        else:
            assert res.dropped == (1,)
    assert [i for i, _, _ in slow_got] == list(range(depth))
    assert ring.drops(1) == n - depth and ring.drops(0) == 0
    assert ring.delivered(0) == n and ring.delivered(1) == depth
    assert ring.held(0) == 0 and ring.held(1) == depth
    # the frames the slow consumer still holds were never overwritten
    for i, slot, seq in slow_got:
        view = slow.view(slot, seq, (64, 64, 3), "uint8")
        assert view is not None
        np.testing.assert_array_equal(view, stamped(base, i))
    stats = ring.stats()
    assert stats["write_seq"] == n
    assert stats["consumers"] == [{"held": 0, "drops": 0, "delivered": n},
                                  {"held": depth, "drops": n - depth, "delivered": depth}]
    # once the slow consumer catches up it gets frames again
    for _, slot, seq in slow_got:
        slow.release(slot, seq)
    assert writer.write(stamped(base, n), n).delivered == (0, 1)


def _drain(ring: FrameRing, consumer: int, raw: list[bytes], policy: str) -> list[int]:
    """What the runtime does with one drained batch on a pad with `policy`: the pts of the frames it hands
    to the actor (each then released, as after the hook), the superseded ones released unseen."""
    batch = [decode_desc(r) for r in raw]
    keep = keep_newest_raw(batch, {"in": policy})
    reader, seen = RingReader(ring, consumer), []
    for i, d in enumerate(batch):
        assert isinstance(d, FrameDesc)
        if keep[i]:
            view = reader.view(d.slot, d.seq, (8,), "uint8")
            assert view is not None
            seen.append(int(view[0]))
        reader.release(d.slot, d.seq)
    return seen


def test_each_policy_on_a_consumer_that_fell_behind(make_ring: Callable[..., FrameRing]) -> None:
    """Three consumers of one producer, none reading while 6 frames are written (depth 4), then each drains
    what reached it: `block` made the producer wait and got every frame; `drop_newest` got the 4 oldest (the
    2 newest dropped at the ring); `drop_oldest` got the same 4 from the ring (its producer side is
    `drop_newest`) but the runtime hands only the newest of them to the actor and counts the rest as
    dropped."""
    depth, n = 4, 6
    ring = make_ring(slot_bytes=8, consumers=3, depth=depth)
    clock = Clock()
    queues: list[list[bytes]] = [[], [], []]
    block_reader = RingReader(ring, 0)
    waits: list[int] = []

    def block_consumer_catches_up(step: int) -> None:  # the block consumer reads its oldest frame
        if step == 1:
            d = decode_desc(queues[0].pop(0))
            assert isinstance(d, FrameDesc)
            block_reader.release(d.slot, d.seq)
            waits.append(d.pts_ns)

    clock.on_sleep = block_consumer_catches_up
    writer = RingWriter(ring, ["block", "drop_newest", "drop_oldest"], block_timeout_s=1.0, clock=clock,
                        sleep=clock.sleep)
    for i in range(n):
        clock.sleeps = 0
        res = writer.write(bytes([i] * 8), pts_ns=i)
        for c in res.delivered:
            queues[c].append(frame_desc("in", res.slot, res.seq, i, {}))
    assert waits == [0, 1]  # the producer waited for the block consumer twice, and dropped nothing for it
    assert [ring.drops(c) for c in range(3)] == [0, 2, 2]
    assert [len(q) for q in queues] == [4, 4, 4]

    assert _drain(ring, 0, queues[0], "block") == [2, 3, 4, 5]
    assert _drain(ring, 1, queues[1], "drop_newest") == [0, 1, 2, 3]
    assert _drain(ring, 2, queues[2], "drop_oldest") == [3]
    assert [ring.held(c) for c in range(3)] == [0, 0, 0]  # superseded slots were released too
    assert writer.write(b"\x09" * 8, pts_ns=9).delivered == (0, 1, 2)


def test_superseded_picks_the_older_raw_frames_of_drop_oldest_pads_only() -> None:
    """The runtime's consumer-side rule, descriptor by descriptor (one drained batch)."""
    def f(pad: str, seq: int) -> Desc:
        return decode_desc(frame_desc(pad, seq % 3, seq, seq, {}))

    def superseded(batch: list[Desc], policies: dict[str, str]) -> set[int]:
        return {i for i, keep in enumerate(keep_newest_raw(batch, policies)) if not keep}

    batch = [f("v", 1), f("a", 1), f("v", 2), decode_desc(packet_desc("k", PACKET)), f("a", 2), f("v", 3),
             f("x", 1), f("x", 2), decode_desc(eos_desc("v"))]
    policies = {"v": "drop_oldest", "a": "drop_newest", "k": "drop_oldest", "x": "block"}
    assert superseded(batch, policies) == {0, 2}  # v's seq 1 and 2; its newest (seq 3) and its EOS stay
    assert superseded(batch, {**policies, "v": "drop_newest"}) == set()
    assert superseded(batch, {**policies, "a": "drop_oldest", "x": "drop_oldest"}) == {0, 1, 2, 6}
    assert superseded([f("v", 5)], policies) == set()  # a lone frame is the newest
    assert superseded([], policies) == set()


def test_block_policy_waits_for_release_and_heartbeats(make_ring: Callable[..., FrameRing]) -> None:
    ring = make_ring(consumers=1, depth=2)
    clock, idles = Clock(), []
    writer = RingWriter(ring, ["block"], block_timeout_s=1.0, clock=clock, sleep=clock.sleep,
                        idle=lambda: idles.append(clock.now))
    reader = RingReader(ring, 0)
    first, _ = writer.write(b"a", 1), writer.write(b"b", 2)
    assert clock.sleeps == 0 and ring.held(0) == 2

    def consumer_catches_up(step: int) -> None:
        if step == 7:
            reader.release(first.slot, first.seq)

    clock.on_sleep = consumer_catches_up
    res = writer.write(b"c", 3)
    assert res.delivered == (0,) and res.dropped == ()
    assert clock.sleeps == 7 and len(idles) == 7
    assert ring.drops(0) == 0 and ring.held(0) == 2


def test_block_policy_times_out_then_drops(make_ring: Callable[..., FrameRing]) -> None:
    ring = make_ring(consumers=2, depth=1)
    clock = Clock()
    writer = RingWriter(ring, ["drop_newest", "block"], block_timeout_s=0.05, clock=clock,
                        sleep=clock.sleep)
    writer.write(b"x", 0)  # both consumers now hold their one allowed slot
    start = clock.now
    res = writer.write(b"y", 1)
    assert res.delivered == () and res.dropped == (0, 1) and res.seq == 2
    assert 0.05 <= clock.now - start < 0.06
    assert clock.sleeps == pytest.approx(0.05 / 0.0005, abs=2)
    assert ring.drops(0) == 1 and ring.drops(1) == 1 and ring.write_seq() == 2
    # an excluded consumer (e.g. known to be down) is neither waited for nor counted as a drop
    sleeps = clock.sleeps
    res = writer.write(b"z", 2, exclude=[1])
    assert res.dropped == (0,) and clock.sleeps == sleeps and ring.drops(1) == 1


def test_stale_descriptors_are_detected(make_ring: Callable[..., FrameRing]) -> None:
    ring = make_ring(slot_bytes=8, consumers=2, depth=1, nslots=3)
    writer = RingWriter(ring, ["drop_newest", "drop_newest"])
    r0, r1 = RingReader(ring, 0), RingReader(ring, 1)
    a = writer.write(b"A" * 8, 0, exclude=[1])
    assert r1.view(a.slot, a.seq, (8,), "uint8") is None  # consumer 1 was not given this frame
    assert r0.view(a.slot, a.seq + 1, (8,), "uint8") is None  # wrong seq
    r0.release(a.slot, a.seq)
    writes = []
    for i in range(3):
        w = writer.write(bytes([66 + i]) * 8, i + 1)
        assert w.delivered == (0, 1)
        r0.release(w.slot, w.seq)
        r1.release(w.slot, w.seq)
        writes.append(w)
    reused = next(w for w in writes if w.slot == a.slot)
    assert reused.seq > a.seq
    assert r0.view(a.slot, a.seq, (8,), "uint8") is None  # slot reused by a newer frame
    # a late release of the old descriptor must not mark the new frame as held again
    r0.release(a.slot, a.seq)
    assert ring.held(0) == 0 and ring.held(1) == 0 and ring.free_slots() == 3
    r0.release(reused.slot, reused.seq)  # double release is harmless too
    assert ring.held(0) == 0 and ring.free_slots() == 3


# --------------------------------------------------------------------------------------------------
# dead and restarted processes


def _child_consumer(name: str, descriptors: list[tuple[int, int]], conn: Connection) -> None:
    """Attach as consumer 1, look at every delivered frame, never release, then hang."""
    ring = FrameRing.attach(name)
    reader = RingReader(ring, 1)
    views = [reader.view(slot, seq, (32, 32, 3), "uint8") for slot, seq in descriptors]
    conn.send([int(v.sum(dtype=np.int64)) if v is not None else -1 for v in views])
    conn.recv()  # wait to be killed


def _child_producer(name: str, n: int, conn: Connection) -> None:
    """Attach as the producer, write n frames, reserve one more and die before committing it."""
    ring = FrameRing.attach(name)
    writer = RingWriter(ring, ["drop_newest"])
    results = [writer.write(np.full(16, i, np.uint8), i) for i in range(n)]
    res = writer.reserve()
    res.buffer[:] = 0xEE
    conn.send(([(r.seq, r.slot, r.delivered) for r in results], res.slot))
    conn.recv()  # wait to be killed


def _spawn(children: list[Any], target: Callable[..., None], *args: Any) -> Connection:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    children.append(proc)
    proc.start()
    child.close()
    assert parent.poll(30), "child did not report"
    return parent


def _kill(proc: Any) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL


@pytest.mark.timeout(60)
def test_sigkilled_consumer_does_not_take_the_ring_and_reattach_frees_its_slots(
        make_ring: Callable[..., FrameRing], children: list[Any]) -> None:
    ring = make_ring(slot_bytes=32 * 32 * 3, consumers=2, depth=3)
    writer = RingWriter(ring, ["drop_newest", "drop_newest"])
    reader0 = RingReader(ring, 0)
    frames = [np.full((32, 32, 3), 10 + i, np.uint8) for i in range(3)]
    results = [writer.write(f, i) for i, f in enumerate(frames)]
    for r in results:
        reader0.release(r.slot, r.seq)
    conn = _spawn(children, _child_consumer, ring.name, [(r.slot, r.seq) for r in results])
    assert conn.recv() == [int(f.sum(dtype=np.int64)) for f in frames]  # the child really mapped them
    _kill(children[0])

    assert shm_path(ring.name).exists()  # the dead attacher did not unlink the segment
    assert ring.held(1) == 3
    for i in range(3):  # consumer 0 keeps receiving while consumer 1's slots are stuck
        res = writer.write(np.full((32, 32, 3), 50 + i, np.uint8), 10 + i)
        assert res.delivered == (0,) and res.dropped == (1,)
        reader0.release(res.slot, res.seq)
    assert ring.drops(1) == 3

    # the restarted consumer re-attaches from a fresh mapping and frees what its predecessor held
    again = FrameRing.attach(ring.name)
    try:
        assert RingReader(again, 1).reattach() == 3
        assert RingReader(again, 1).reattach() == 0
        assert again.held(1) == 0
        res = writer.write(np.full((32, 32, 3), 99, np.uint8), 20)
        assert res.delivered == (0, 1)
        view = RingReader(again, 1).view(res.slot, res.seq, (32, 32, 3), "uint8")
        assert view is not None and int(view[5, 5, 1]) == 99
        for r in results:  # descriptors of the dead consumer read as stale now
            assert RingReader(again, 1).view(r.slot, r.seq, (32, 32, 3), "uint8") is None
        del view
    finally:
        again.close(strict=True)


@pytest.mark.timeout(60)
def test_restarted_producer_continues_the_sequence(make_ring: Callable[..., FrameRing],
                                                   children: list[Any]) -> None:
    ring = make_ring(slot_bytes=16, consumers=1, depth=3, nslots=4)
    conn = _spawn(children, _child_producer, ring.name, 5)
    written, reserved = conn.recv()
    _kill(children[0])
    # the consumer took 3 frames and never released them; frames 4 and 5 shared the one free slot
    assert written == [(1, 0, (0,)), (2, 1, (0,)), (3, 2, (0,)), (4, 3, ()), (5, 3, ())]
    assert reserved == 3 and ring.write_seq() == 5 and ring.drops(0) == 2
    assert ring.slot_seq(reserved) == 0  # the uncommitted reservation is not a frame any more
    reader = RingReader(ring, 0)
    for seq, slot, _ in written[:3]:  # frames of the dead producer are intact and still deliverable
        view = reader.view(slot, seq, (16,), "uint8")
        assert view is not None and set(view.tolist()) == {seq - 1}
    reader.release(0, 1)
    writer = RingWriter(ring, ["drop_newest"])
    res = writer.write(np.full(16, 7, np.uint8), 100)
    # the slot table's highest seq is 3 now, but write_seq says 5: the sequence goes on at 6
    assert (res.seq, res.delivered) == (6, (0,)) and ring.write_seq() == 6
    # and once more from the same process: a second writer goes on after the first
    assert RingWriter(ring, ["drop_newest"]).write(b"\x01" * 16, 101).seq == 7


ATTACHER = textwrap.dedent("""
    import sys
    from mediaengine.runtime.ring import FrameRing, RingReader
    ring = FrameRing.attach(sys.argv[1])
    view = RingReader(ring, 0).view(int(sys.argv[2]), int(sys.argv[3]), (16,), "uint8")
    print("ready", int(view[0]), flush=True)
    sys.stdin.read()
""")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_attaching_process_leaves_no_tracker_trace(make_ring: Callable[..., FrameRing],
                                                   children: list[Any], how: str) -> None:
    """A plain interpreter (own resource tracker, -W error) attaches, holds a slot, then dies.

    With `SharedMemory(name=...)` its tracker would warn about a "leaked" segment on stderr and
    unlink it; `communicate()` waits for that tracker too, since it inherits the stderr pipe.
    """
    ring = make_ring(slot_bytes=16, consumers=1)
    res = RingWriter(ring, ["block"]).write(np.full(16, 77, np.uint8), 0)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-W", "error", "-c", ATTACHER, ring.name, str(res.slot),
                             str(res.seq)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, text=True)
    children.append(proc)
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == ["ready", "77"]
    if how == "sigkill":
        proc.kill()
    _, err = proc.communicate(timeout=30)
    assert err == ""
    assert proc.returncode == (0 if how == "exit" else -signal.SIGKILL)
    assert shm_path(ring.name).exists()
    assert ring.held(0) == 1 and RingReader(ring, 0).reattach() == 1


def test_attach_and_create_do_not_register_with_resource_tracker(
        make_ring: Callable[..., FrameRing], monkeypatch: pytest.MonkeyPatch) -> None:
    from multiprocessing import resource_tracker

    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(resource_tracker, "register", lambda name, rtype: calls.append((name, rtype)))
    ring = make_ring()
    FrameRing.attach(ring.name).close()
    assert calls == []


def test_close_with_live_views(make_ring: Callable[..., FrameRing]) -> None:
    ring = make_ring(slot_bytes=8, consumers=1)
    res = RingWriter(ring, ["block"]).write(b"abcdefgh", 0)
    other = FrameRing.attach(ring.name)
    view = RingReader(other, 0).view(res.slot, res.seq, (8,), "uint8")
    assert view is not None
    with pytest.raises(BufferError, match="still referenced"):
        other.close(strict=True)
    assert other.closed
    assert view.tobytes() == b"abcdefgh"  # the mapping lives as long as the view

    third = FrameRing.attach(ring.name)
    kept = RingReader(third, 0).view(res.slot, res.seq, (8,), "uint8")
    third.close()  # non-strict: the view keeps the mapping, nothing raises
    assert kept is not None and kept.tobytes() == b"abcdefgh"
    with pytest.raises(ValueError, match="closed"):
        third.write_seq()


def test_the_ring_header_holds_the_current_format_for_consumers_that_attach_later(
        make_ring: Callable[..., FrameRing]) -> None:
    first, second = msgpack.packb({"w": 640}), msgpack.packb({"w": 1280, "h": 720})
    ring = make_ring("fmt", format_info=first)
    with FrameRing.attach(ring.name) as consumer:
        assert consumer.format_info == first
        ring.set_format_info(second)  # the producer, before it announces the change on the edge
        assert consumer.format_info == second
    with FrameRing.attach(ring.name) as restarted:
        assert restarted.format_info == second
    ring.set_format_info(b"")
    assert ring.format_info == b""
    with pytest.raises(ValueError, match="format_info"):
        ring.set_format_info(b"x" * (FORMAT_INFO_MAX + 1))
