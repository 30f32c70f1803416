"""Benchmark `ring`: one hop of raw RGB frames between two processes, three ways.

1. **ring**: what the runtime does (`engine/_runtime.py` `_emit` / `_deliver`): the producer copies the
   frame once into a slot of a `FrameRing` (`RingWriter.write`, consumer policy `block`, depth 4) and
   sends a msgpack descriptor (`mediaengine.runtime.wire.frame_desc`) over a ZeroMQ ipc PUSH/PULL pair; the
   consumer decodes it, maps the slot (`RingReader.view`, zero copy) and releases it.
2. **zmq**: the pixels themselves as a ZeroMQ ipc message (`copy=False`), high-water marks of 2 on
   both ends (4 frames in flight, like the ring's depth).
3. **queue**: `multiprocessing.Queue(maxsize=4)` of the numpy array (pickled).
4. a baseline: the same ZeroMQ ipc PUSH/PULL pair carrying only the small header, no pixels: the
   machine's floor for waking another process with a message (the ring's descriptor pays it too).

Producer and consumer are fresh `spawn`ed processes (nothing inherited).  Each repetition has two
phases: *throughput* (the producer sends as fast as the transport takes frames for a fixed time; the
consumer's receive rate is the figure) and *latency* (frames paced at 2.5x the measured frame time, so
nothing queues; hop = from the producer starting to send, before the copy into the slot, to the
consumer holding a numpy array of the frame, both on CLOCK_MONOTONIC).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from ._common import Result, Settings, Spread, Table, Target, fmt_rate, fmt_us, fmt_x, ratios
from ._procs import die_with_parent

NAME = "ring"
SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}
TRANSPORTS = ("ring", "ring-inplace", "zmq", "queue", "zmq-empty")
DEPTH = 4
WARMUP = 5  # frames at the start of each phase that are not measured
_MARK = -1


@dataclass(frozen=True)
class Plan:
    shape: tuple[int, int, int]
    reps: int
    tput_s: float
    lat_s: float
    endpoint: str
    ring_name: str


# ---- frame timing shared by every transport -------------------------------------------------------


def _frames(shape: tuple[int, int, int]) -> list[np.ndarray[Any, np.dtype[np.uint8]]]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for _ in range(3)]


def _schedule(plan: Plan, send: Callable[[np.ndarray[Any, Any], int, int], None],
              mark: Callable[[int], None]) -> None:
    """The producer's side of every repetition: a saturating phase, then a paced phase."""
    frames = _frames(plan.shape)
    seq = 0
    for _ in range(plan.reps):
        t_end = time.monotonic() + plan.tput_s
        sent = 0
        t0 = time.monotonic()
        while time.monotonic() < t_end or sent < 2 * WARMUP:
            seq += 1
            send(frames[seq % 3], seq, time.monotonic_ns())
            sent += 1
        per_frame = (time.monotonic() - t0) / max(1, sent)
        mark(0)
        gap = max(0.002, 2.5 * per_frame)
        count = int(min(300, max(20, plan.lat_s / gap))) + WARMUP
        nxt = time.monotonic()
        for _ in range(count):
            nxt += gap
            seq += 1
            send(frames[seq % 3], seq, time.monotonic_ns())
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        mark(1)
    mark(2)


class _Collector:
    """The consumer's side: receive times and hop latencies, split into phases by marks."""

    def __init__(self) -> None:
        self.recv_ns: list[int] = []
        self.hop_ns: list[int] = []
        self.transit_ns: list[int] = []
        self.out: list[dict[str, Any]] = []
        self.tput: float = 0.0
        self._hops_saturated: list[int] = []

    def frame(self, t0_ns: int, t1_ns: int) -> None:
        """A frame arrived: `t0_ns` when the producer began to send it, `t1_ns` when its pixels were
        in shared memory (ring) or handed to the transport (others: t0_ns)."""
        now = time.monotonic_ns()
        self.recv_ns.append(now)
        self.hop_ns.append(now - t0_ns)
        self.transit_ns.append(now - t1_ns)

    def mark(self, phase: int) -> bool:
        """Close a phase; True when the producer is done."""
        if phase == 0:
            times = self.recv_ns[WARMUP:]
            span = (times[-1] - times[0]) / 1e9 if len(times) > 1 else 0.0
            self.tput = (len(times) - 1) / span if span > 0 else float("nan")
            self._hops_saturated = sorted(self.hop_ns[WARMUP:])
        elif phase == 1:
            hops = sorted(self.hop_ns[WARMUP:])
            transit = sorted(self.transit_ns[WARMUP:])
            sat = self._hops_saturated
            self.out.append({
                "fps": self.tput,
                "frames": len(self.recv_ns),
                "hop_median_s": hops[len(hops) // 2] / 1e9 if hops else float("nan"),
                "hop_p99_s": hops[min(len(hops) - 1, int(len(hops) * 0.99))] / 1e9 if hops else float("nan"),
                "transit_median_s": transit[len(transit) // 2] / 1e9 if transit else float("nan"),
                "queued_median_s": sat[len(sat) // 2] / 1e9 if sat else float("nan"),
                "lat_frames": len(hops),
            })
        self.recv_ns, self.hop_ns, self.transit_ns = [], [], []
        return phase == 2


# ---- ring + descriptor (the runtime's way) ---------------------------------------------------------


def _ring_producer(plan: Plan, ready: Any, in_place: bool) -> None:
    die_with_parent(signal.SIGKILL)
    import msgpack
    import zmq
    from mediaengine.runtime.ring import FrameRing, RingWriter
    from mediaengine.runtime.wire import eos_desc, frame_desc

    ring = FrameRing.attach(plan.ring_name)
    writer = RingWriter(ring, ["block"], block_timeout_s=5.0)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 2000)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(plan.endpoint)
    ready.wait(30)
    nbytes = int(np.prod(plan.shape))

    def send(frame: np.ndarray[Any, Any], seq: int, t0: int) -> None:
        if in_place:  # a producer that renders straight into the slot: the ring's own cost only
            slot = writer.reserve()
            slot.buffer[:8] = seq & 0xFF
            res = writer.commit(slot, seq, nbytes)
        else:  # RingWriter.write, as the runtime's _emit does: one copy into the slot
            res = writer.write(frame, seq)
        sock.send(frame_desc("in", res.slot, res.seq, seq, {"t0": t0, "t1": time.monotonic_ns()}))

    def mark(phase: int) -> None:
        raw = eos_desc("in") if phase == 2 else msgpack.packb({"p": "in", "mark": phase})
        sock.send(raw)

    try:
        _schedule(plan, send, mark)
    finally:
        sock.close()
        ctx.term()
        ring.close()


def _ring_consumer(plan: Plan, ready: Any, conn: Connection) -> None:
    die_with_parent(signal.SIGKILL)
    import msgpack
    import zmq
    from mediaengine.runtime.ring import FrameRing, RingReader
    from mediaengine.runtime.wire import EosDesc, FrameDesc, decode_desc
    from mediaengine.sdk.errors import MalformedDescriptorError

    ring = FrameRing.attach(plan.ring_name)
    reader = RingReader(ring, 0)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 10000)
    sock.bind(plan.endpoint)
    ready.set()
    col = _Collector()
    try:
        while True:
            raw = sock.recv()
            try:
                d = decode_desc(raw)
            except MalformedDescriptorError:  # not a descriptor: this benchmark's phase mark
                if col.mark(int(msgpack.unpackb(raw)["mark"])):
                    break
                continue
            if isinstance(d, EosDesc):
                if col.mark(2):
                    break
                continue
            assert isinstance(d, FrameDesc), d
            slot, seq = d.slot, d.seq
            view = reader.view(slot, seq, plan.shape, np.uint8)
            if view is None:
                raise RuntimeError(f"stale descriptor for slot {slot} seq {seq}")
            col.frame(int(d.meta["t0"]), int(d.meta["t1"]))
            _ = view[0, 0, 0]
            del view
            reader.release(slot, seq)
        conn.send(col.out)
    finally:
        sock.close(0)
        ctx.term()
        ring.close()


# ---- pixels as the ZeroMQ message -------------------------------------------------------------------


def _zmq_producer(plan: Plan, ready: Any, pixels: bool) -> None:
    die_with_parent(signal.SIGKILL)
    import msgpack
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, DEPTH // 2)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(plan.endpoint)
    ready.wait(30)

    def send(frame: np.ndarray[Any, Any], seq: int, t0: int) -> None:
        body = frame.data if pixels else b""  # no pixels: the bare cost of a small ipc message
        sock.send_multipart([msgpack.packb({"q": seq, "t0": t0}), body], copy=False)

    def mark(phase: int) -> None:
        sock.send_multipart([msgpack.packb({"mark": phase}), b""])

    try:
        _schedule(plan, send, mark)
    finally:
        sock.close()
        ctx.term()


def _zmq_consumer(plan: Plan, ready: Any, conn: Connection) -> None:
    die_with_parent(signal.SIGKILL)
    import msgpack
    import zmq

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, DEPTH // 2)
    sock.bind(plan.endpoint)
    ready.set()
    col = _Collector()
    try:
        while True:
            head, body = sock.recv_multipart(copy=False)
            h = msgpack.unpackb(head.bytes)
            if "mark" in h:
                if col.mark(int(h["mark"])):
                    break
                continue
            if len(body.buffer):
                arr = np.frombuffer(body.buffer, np.uint8).reshape(plan.shape)
                _ = arr[0, 0, 0]
            col.frame(int(h["t0"]), int(h["t0"]))
        conn.send(col.out)
    finally:
        sock.close(0)
        ctx.term()


# ---- multiprocessing.Queue ----------------------------------------------------------------------------


def _queue_producer(plan: Plan, ready: Any, q: Any) -> None:
    die_with_parent(signal.SIGKILL)
    ready.wait(30)

    def send(frame: np.ndarray[Any, Any], seq: int, t0: int) -> None:
        q.put((seq, t0, frame))

    def mark(phase: int) -> None:
        q.put((_MARK, phase, None))

    _schedule(plan, send, mark)
    q.close()
    q.join_thread()


def _queue_consumer(plan: Plan, ready: Any, conn: Connection, q: Any) -> None:
    die_with_parent(signal.SIGKILL)
    ready.set()
    col = _Collector()
    while True:
        seq, t0, frame = q.get()
        if seq == _MARK:
            if col.mark(int(t0)):
                break
            continue
        col.frame(int(t0), int(t0))
        _ = frame[0, 0, 0]
    conn.send(col.out)


# ---- orchestration ----------------------------------------------------------------------------------


def _reap(procs: list[Any]) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)


def run_pair(transport: str, plan: Plan, timeout_s: float) -> list[dict[str, Any]]:
    """Run one producer/consumer pair for `plan`; the consumer's per-repetition figures."""
    from mediaengine.runtime.ring import FrameRing

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    parent, child = ctx.Pipe(duplex=False)
    ring: FrameRing | None = None
    procs: list[Any] = []
    try:
        if transport in ("ring", "ring-inplace"):
            nbytes = int(np.prod(plan.shape))
            ring = FrameRing.create(plan.ring_name, slot_bytes=nbytes, consumers=1, depth=DEPTH)
            procs = [ctx.Process(target=_ring_consumer, args=(plan, ready, child)),
                     ctx.Process(target=_ring_producer, args=(plan, ready, transport == "ring-inplace"))]
        elif transport in ("zmq", "zmq-empty"):
            procs = [ctx.Process(target=_zmq_consumer, args=(plan, ready, child)),
                     ctx.Process(target=_zmq_producer, args=(plan, ready, transport == "zmq"))]
        elif transport == "queue":
            q = ctx.Queue(maxsize=DEPTH)
            procs = [ctx.Process(target=_queue_consumer, args=(plan, ready, child, q)),
                     ctx.Process(target=_queue_producer, args=(plan, ready, q))]
        else:
            raise ValueError(f"unknown transport {transport!r}")
        for p in procs:
            p.start()
        child.close()
        if not parent.poll(timeout_s):
            codes = [p.exitcode for p in procs]
            raise RuntimeError(f"{transport} {plan.shape}: no result within {timeout_s:.0f} s (exit codes {codes})")
        out: list[dict[str, Any]] = parent.recv()
        for p in procs:
            p.join(10)
        return out
    finally:
        _reap(procs)
        parent.close()
        if ring is not None:
            with contextlib.suppress(FileNotFoundError):
                ring.unlink()
            ring.close()


def copy_cost(shape: tuple[int, int, int], n: int) -> float:
    """Median seconds of one numpy copy of a frame into a shared-memory slot (the ring's one write)."""
    from mediaengine.runtime.ring import FrameRing

    ring = FrameRing.create(f"/me-bench{os.getpid()}-copy", slot_bytes=int(np.prod(shape)), consumers=1)
    try:
        frames = _frames(shape)
        times = []
        for i in range(n):
            dst = ring.slot_view(i % ring.nslots).reshape(shape)
            t0 = time.perf_counter()
            np.copyto(dst, frames[i % 3])
            times.append(time.perf_counter() - t0)
            del dst
        return sorted(times)[len(times) // 2]
    finally:
        ring.unlink()
        ring.close()


LABELS = {
    "ring": "ring (RingWriter.write: 1 copy in)",
    "ring-inplace": "ring (frame made in the slot)",
    "zmq": "zmq (pixels as message)",
    "queue": "multiprocessing.Queue",
    "zmq-empty": "(zmq, no pixels: bare ipc message)",
}


def remove_stale_segments() -> list[str]:
    """Unlink ring segments an earlier, killed benchmark left ("/me-bench<pid>-...", pid gone)."""
    from mediaengine.runtime.ring import list_segments, unlink_segment
    from mediaengine.supervision.rundir import pid_alive

    removed = []
    for name in list_segments():
        m = re.fullmatch(r"/me-bench(\d+)-.*", name)
        if m and not pid_alive(int(m.group(1))):
            unlink_segment(name)
            removed.append(name)
    return removed


def run(settings: Settings) -> Result:
    stale = remove_stale_segments()
    reps = settings.n(5, 2)
    tput_s = settings.secs(2.0, 0.5)
    lat_s = settings.secs(1.5, 0.3)
    tmp = tempfile.mkdtemp(prefix="bench-ring-", dir=settings.workdir)
    res = Result(NAME)
    if stale:
        res.notes.append(f"removed segments a killed benchmark left: {', '.join(stale)}")
    figures: dict[tuple[str, str], list[dict[str, Any]]] = {}
    copies: dict[str, float] = {}
    try:
        for size, (h, w) in SIZES.items():
            copies[size] = copy_cost((h, w, 3), settings.n(200, 60))
            for transport in TRANSPORTS:
                plan = Plan((h, w, 3), reps, tput_s, lat_s, f"ipc://{tmp}/{transport}-{size}.sock",
                            f"/me-bench{os.getpid()}-ring-{size}")
                budget = 60 + reps * (tput_s + lat_s) * 20
                figures[(size, transport)] = run_pair(transport, plan, budget)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def col(size: str, transport: str, key: str) -> Spread:
        return Spread.of([x[key] for x in figures[(size, transport)]])

    table = Table(["transport", "size", "frames/s", "hop median", "hop p99", "in-shm->array", "saturated hop"])
    for size in SIZES:
        for transport in TRANSPORTS:
            table.add(LABELS[transport], size, col(size, transport, "fps").fmt(fmt_rate),
                      col(size, transport, "hop_median_s").fmt(fmt_us), col(size, transport, "hop_p99_s").fmt(fmt_us),
                      col(size, transport, "transit_median_s").fmt(fmt_us) if transport.startswith("ring") else "-",
                      col(size, transport, "queued_median_s").fmt(fmt_us))
    res.tables.append((
        f"one hop between two processes, RGB24; {reps} repetitions, median [min..max]. hop = producer starts "
        "sending -> consumer holds a numpy array; in-shm->array = ring only, from the pixels being in the "
        "slot; saturated hop includes queueing (4 frames in flight)", table))

    cmp = Table(["size", "ring / Queue", "ring / zmq", "ring in place / ring", "one frame copy"])
    speedups: dict[str, Spread] = {}
    for size in SIZES:
        ring_fps = [x["fps"] for x in figures[(size, "ring")]]
        q = ratios(ring_fps, [x["fps"] for x in figures[(size, "queue")]])
        z = ratios(ring_fps, [x["fps"] for x in figures[(size, "zmq")]])
        ip = ratios([x["fps"] for x in figures[(size, "ring-inplace")]], ring_fps)
        speedups[size] = q
        cmp.add(size, q.fmt(fmt_x), z.fmt(fmt_x), ip.fmt(fmt_x), fmt_us(copies[size]))
    res.tables.append(("throughput ratios (repetition i of each transport paired); numpy copy of one frame "
                       "into a slot measured in the same run", cmp))

    fps_1080 = col("1080p", "ring", "fps")
    hop_1080 = col("1080p", "ring", "hop_median_s")
    transit_1080 = col("1080p", "ring", "transit_median_s")
    fps_1080_ip = col("1080p", "ring-inplace", "fps")
    q_1080_ip = ratios([x["fps"] for x in figures[("1080p", "ring-inplace")]],
                       [x["fps"] for x in figures[("1080p", "queue")]])
    res.targets = [
        # producers that render or draw into the slot (Actor.output_buffer: test_pattern, overlay) ...
        Target("ring 1080p frames/s, frame made in the slot", fps_1080_ip.median, ">=", 1500,
               fmt_rate(fps_1080_ip.median)),
        Target("ring 1080p (made in the slot) / Queue throughput", q_1080_ip.median, ">=", 25,
               fmt_x(q_1080_ip.median)),
        # ... and producers that hand the runtime an array of their own (one copy into the slot)
        Target("ring 1080p frames/s", fps_1080.median, ">=", 1500, fmt_rate(fps_1080.median)),
        Target("ring 1080p / Queue throughput", speedups["1080p"].median, ">=", 25, fmt_x(speedups["1080p"].median)),
        Target("ring 1080p hop median incl. the copy in (us)", hop_1080.median * 1e6, "<=", 100,
               fmt_us(hop_1080.median)),
        Target("ring 1080p hop median, pixels already in the slot (us)", transit_1080.median * 1e6, "<=", 100,
               fmt_us(transit_1080.median)),
    ]
    if fps_1080.median < 1500 or hop_1080.median > 100e-6:
        res.notes.append(
            f"note: one 1080p frame copy costs {fmt_us(copies['1080p'])} on this machine "
            f"({6.22e6 / copies['1080p'] / 1e9:.1f} GB/s), which bounds a copying producer at "
            f"{1 / copies['1080p']:,.0f} frames/s; a producer that renders into the slot reached "
            f"{fmt_rate(col('1080p', 'ring-inplace', 'fps').median)} frames/s")
    res.data = {"figures": {f"{s}/{t}": v for (s, t), v in figures.items()}, "copy_s": copies}
    p99 = col("1080p", "ring", "hop_p99_s")
    res.headline = (f"ring 1080p made in the slot {fmt_rate(fps_1080_ip.median)} frames/s = "
                    f"{fmt_x(q_1080_ip.median)} multiprocessing.Queue; with a copy in "
                    f"{fmt_rate(fps_1080.median)} frames/s = {fmt_x(speedups['1080p'].median)} "
                    f"multiprocessing.Queue; hop median {fmt_us(hop_1080.median)} (p99 {fmt_us(p99.median)}), "
                    f"{fmt_us(transit_1080.median)} once the pixels are in the slot")
    return res
