"""Benchmark `ring`: one hop of raw RGB frames between two processes, through the runtime's own code.

Producers that really produce every frame (all 6.2 MB of a 1080p picture are written per frame):

1. **ring, copy in**: the producer owns its frame (a numpy array) and hands it to the runtime's
   `mediaengine.runtime.dataplane.emit_frame`, which copies it into a slot (`RingWriter.write`,
   consumer policy `block`, depth 4) and sends a msgpack descriptor to the consumer over ZeroMQ ipc
   with `send_desc`; the consumer runs the runtime's `deliver_frame` (decode, zero-copy view of the
   slot, hook, release).  This is what every actor that emits an array of its own pays.
2. **ring, rendered in the slot**: the producer borrows a slot with the runtime's `lend_buffer` (what
   `Actor.output_buffer` does), renders the picture into it (every byte written: a flat colour that
   changes per frame, the cheapest real picture) and `emit_frame` commits it in place.
3. **zmq**: the pixels themselves as a ZeroMQ ipc message (`copy=False`), high-water marks of 2 on
   both ends (4 frames in flight, like the ring's depth).
4. **queue**: `multiprocessing.Queue(maxsize=4)` of the numpy array (pickled).

Two baselines that carry no pixels, reported per *descriptor* or *message*, never as video frames:

5. **ring machinery, no pixels**: `lend_buffer` + `emit_frame` + `deliver_frame` with nothing written
   into the slot: the ring's and the descriptor's own cost per frame, the ceiling of any producer;
6. **bare ipc message**: the same ZeroMQ pair carrying only a small header: the machine's floor for
   waking another process (the ring's descriptor pays it too).

Producer and consumer are fresh `spawn`ed processes (nothing inherited), one pair per repetition and
transport, and the transports alternate within each repetition so a drift in machine load hits all of
them.  Each pair has two phases: *throughput* (the producer sends as fast as the transport takes
frames for a fixed time; the consumer's receive rate is the figure) and *latency* (frames paced at
2.5x the measured frame time, so nothing queues; hop = from the producer starting to make the frame
(before the copy or the render) to the consumer holding a numpy array of it, both on CLOCK_MONOTONIC;
*in-shm->array* starts once the pixels are in the slot, so it is the ring's and the wake-up's cost).
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
TRANSPORTS = ("ring", "ring-render", "zmq", "queue", "ring-machinery", "zmq-empty")
#: rows that carry no pixels: reported per descriptor / message, never as frames of video
NO_PIXELS = ("ring-machinery", "zmq-empty")
RING_MODES = {"ring": "copy", "ring-render": "render", "ring-machinery": "machinery"}
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


# ---- ring + descriptor: the runtime's own emit / deliver ---------------------------------------------


def _video_format(shape: tuple[int, int, int]) -> Any:
    from mediaengine.sdk.formats import VideoFormat

    return VideoFormat(shape[1], shape[0], 30.0)


def _no_drop(name: str) -> None:
    raise RuntimeError(f"the ring dropped a frame ({name}) with a block-policy consumer: the runtime is broken")


def _ring_producer(plan: Plan, ready: Any, mode: str) -> None:
    """`mode`: "copy" (emit an array of our own), "render" (fill a lent slot), "machinery" (lent slot, no pixels)."""
    die_with_parent(signal.SIGKILL)
    import msgpack
    import zmq
    from mediaengine.runtime.dataplane import Consumer, Output, emit_frame, lend_buffer, send_desc
    from mediaengine.runtime.ring import FrameRing, RingWriter
    from mediaengine.runtime.wire import eos_desc
    from mediaengine.sdk.formats import Frame

    ring = FrameRing.attach(plan.ring_name)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 2000)  # as the runtime's data sockets
    sock.setsockopt(zmq.LINGER, -1)  # the end marks must arrive however starved the consumer (the parent times out)
    sock.connect(plan.endpoint)
    consumer = Consumer("sink", "in", 0, "block", sock)
    out = Output("out", _video_format(plan.shape), RingWriter(ring, ["block"], block_timeout_s=5.0), ring,
                 [consumer])
    ready.wait(30)

    def deliver(c: Any, raw: bytes) -> None:
        send_desc(c, raw, lambda: None, _no_drop)

    def send(frame: np.ndarray[Any, Any], seq: int, t0: int) -> None:
        if mode == "copy":  # the runtime copies our array into a slot (RingWriter.write)
            emit_frame(out, Frame(frame, seq, seq, {"t0": t0}), "bench.out", deliver, _no_drop)
            return
        buf = lend_buffer(out)
        if buf is None:
            raise RuntimeError("lend_buffer gave no slot")
        if mode == "render":  # every byte of the picture written into the slot
            buf.fill(seq & 0xFF)
        emit_frame(out, Frame(buf, seq, seq, {"t0": t0, "t1": time.monotonic_ns()}), "bench.out", deliver,
                   _no_drop)

    def mark(phase: int) -> None:
        raw = eos_desc("in") if phase == 2 else msgpack.packb({"p": "in", "mark": phase})
        sock.send(raw)

    try:
        _schedule(plan, send, mark)
    finally:
        sock.close()
        ctx.term()
        ring.close()


def _ring_consumer(plan: Plan, ready: Any, conn: Connection, mode: str) -> None:
    die_with_parent(signal.SIGKILL)
    import msgpack
    import zmq
    from mediaengine.runtime.dataplane import Input, deliver_frame
    from mediaengine.runtime.ring import FrameRing, RingReader
    from mediaengine.runtime.wire import EosDesc, FrameDesc, decode_desc
    from mediaengine.sdk.errors import MalformedDescriptorError
    from mediaengine.sdk.formats import Frame

    ring = FrameRing.attach(plan.ring_name)
    inp = Input("in", _video_format(plan.shape), "block", RingReader(ring, 0), ring, plan.shape, "uint8")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, 10000)  # as the runtime's data socket
    sock.bind(plan.endpoint)
    ready.set()
    col = _Collector()

    def hook(frame: Frame) -> None:
        meta = frame.meta
        t0 = int(meta["t0"])
        col.frame(t0, int(meta.get("t1", t0)))
        if mode == "render" and int(frame.data[-1, -1, -1]) != frame.seq & 0xFF:
            raise RuntimeError(f"frame {frame.seq}: the slot does not hold the rendered picture")

    def count(what: str) -> None:
        raise RuntimeError(f"deliver_frame counted {what}: the ring or the descriptor is broken")

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
            deliver_frame(inp, d, hook, count)
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
    sock.setsockopt(zmq.LINGER, -1)  # the end marks must arrive however starved the consumer (the parent times out)
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
        if transport in RING_MODES:
            nbytes = int(np.prod(plan.shape))
            ring = FrameRing.create(plan.ring_name, slot_bytes=nbytes, consumers=1, depth=DEPTH)
            mode = RING_MODES[transport]
            procs = [ctx.Process(target=_ring_consumer, args=(plan, ready, child, mode)),
                     ctx.Process(target=_ring_producer, args=(plan, ready, mode))]
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
    "ring": "ring, copy in (emit_frame -> RingWriter.write)",
    "ring-render": "ring, rendered in the slot (lend_buffer + emit_frame)",
    "zmq": "zmq (pixels as message)",
    "queue": "multiprocessing.Queue",
    "ring-machinery": "(ring machinery, no pixels: per descriptor)",
    "zmq-empty": "(bare ipc message, no pixels: per message)",
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
    tput_s = settings.secs(2.0, 0.4)
    lat_s = settings.secs(1.5, 0.25)
    tmp = tempfile.mkdtemp(prefix="bench-ring-", dir=settings.workdir)
    res = Result(NAME)
    if stale:
        res.notes.append(f"removed segments a killed benchmark left: {', '.join(stale)}")
    figures: dict[tuple[str, str], list[dict[str, Any]]] = {(s, t): [] for s in SIZES for t in TRANSPORTS}
    copies: dict[str, float] = {}
    sizes = {"1080p": SIZES["1080p"]} if settings.quick else SIZES  # the smoke run: the size the targets use
    figures = {k: v for k, v in figures.items() if k[0] in sizes}
    try:
        for size, (h, w) in sizes.items():
            copies[size] = copy_cost((h, w, 3), settings.n(200, 60))
            for rep in range(reps):  # the transports alternate: one pair each per repetition
                for transport in TRANSPORTS:
                    plan = Plan((h, w, 3), 1, tput_s, lat_s, f"ipc://{tmp}/{transport}-{size}-{rep}.sock",
                                f"/me-bench{os.getpid()}-ring-{size}")
                    figures[(size, transport)] += run_pair(transport, plan, 60 + (tput_s + lat_s) * 20)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report(figures, copies, reps, res, list(sizes))


def report(figures: dict[tuple[str, str], list[dict[str, Any]]], copies: dict[str, float], reps: int,
           res: Result, sizes: list[str]) -> Result:
    """Tables, targets and headline from the consumer's per-repetition figures (pure)."""

    def col(size: str, transport: str, key: str) -> Spread:
        return Spread.of([x[key] for x in figures[(size, transport)]])

    def fps(size: str, transport: str) -> list[float]:
        return [x["fps"] for x in figures[(size, transport)]]

    table = Table(["transport", "size", "frames/s", "hop median", "hop p99", "in-shm->array", "saturated hop"])
    for size in sizes:
        for transport in TRANSPORTS:
            unit = "/s" if transport in NO_PIXELS else ""
            table.add(LABELS[transport], size, col(size, transport, "fps").fmt(lambda x, u=unit: fmt_rate(x) + u),
                      col(size, transport, "hop_median_s").fmt(fmt_us), col(size, transport, "hop_p99_s").fmt(fmt_us),
                      col(size, transport, "transit_median_s").fmt(fmt_us)
                      if transport in ("ring-render", "ring-machinery") else "-",
                      col(size, transport, "queued_median_s").fmt(fmt_us))
    res.tables.append((
        f"one hop between two processes, RGB24; {reps} repetitions, median [min..max]. hop = producer starts "
        "making the frame -> consumer holds a numpy array; in-shm->array = from the pixels being in the slot; "
        "saturated hop includes queueing (4 frames in flight). Rows in parentheses carry no pixels: their "
        "rate is descriptors or messages per second, not frames of video", table))

    cmp = Table(["size", "copy in / Queue", "rendered in slot / Queue", "copy in / zmq", "copy in / copy bound",
                 "one frame copy"])
    for size in sizes:
        bound = [1.0 / copies[size]] * len(fps(size, "ring"))
        cmp.add(size, ratios(fps(size, "ring"), fps(size, "queue")).fmt(fmt_x),
                ratios(fps(size, "ring-render"), fps(size, "queue")).fmt(fmt_x),
                ratios(fps(size, "ring"), fps(size, "zmq")).fmt(fmt_x),
                ratios(fps(size, "ring"), bound).fmt(fmt_x), fmt_us(copies[size]))
    res.tables.append(("throughput ratios (repetition i of each transport paired); copy bound = 1 / the time of "
                       "one numpy copy of a frame into a slot, measured in the same run", cmp))

    q_copy = ratios(fps("1080p", "ring"), fps("1080p", "queue"))
    q_render = ratios(fps("1080p", "ring-render"), fps("1080p", "queue"))
    fps_copy = col("1080p", "ring", "fps")
    fps_render = col("1080p", "ring-render", "fps")
    hop_copy = col("1080p", "ring", "hop_median_s")
    transit = col("1080p", "ring-render", "transit_median_s")
    floor = col("1080p", "zmq-empty", "hop_median_s")
    transit_vs_floor = ratios([x["transit_median_s"] for x in figures[("1080p", "ring-render")]],
                              [x["hop_median_s"] for x in figures[("1080p", "zmq-empty")]])
    res.targets = [
        # every target is held against a producer that writes all of each frame (copy in or render)
        Target("ring 1080p copy in / multiprocessing.Queue throughput", q_copy.median, ">=", 25, fmt_x(q_copy.median)),
        Target("ring 1080p rendered in the slot / multiprocessing.Queue throughput", q_render.median, ">=", 25,
               fmt_x(q_render.median)),
        Target("ring 1080p frames/s, copy in (absolute)", fps_copy.median, ">=", 1500, fmt_rate(fps_copy.median)),
        Target("ring 1080p frames/s, rendered in the slot (absolute)", fps_render.median, ">=", 1500,
               fmt_rate(fps_render.median)),
        Target("ring 1080p hop median incl. the copy in (us, absolute)", hop_copy.median * 1e6, "<=", 100,
               fmt_us(hop_copy.median)),
        Target("ring 1080p in-shm->array (rendered) / bare ipc message hop", transit_vs_floor.median, "<=", 1.5,
               fmt_x(transit_vs_floor.median)),
    ]
    res.notes.append(
        f"one 1080p frame copy costs {fmt_us(copies['1080p'])} here ({6.22e6 / copies['1080p'] / 1e9:.1f} GB/s), "
        f"which bounds a copying producer at {1 / copies['1080p']:,.0f} frames/s; the ring's machinery without "
        f"pixels carries {fmt_rate(col('1080p', 'ring-machinery', 'fps').median)} descriptors/s; "
        f"the bare ipc message hop is {fmt_us(floor.median)}")
    res.data = {"figures": {f"{s}/{t}": v for (s, t), v in figures.items()}, "copy_s": copies,
                "labels": LABELS, "no_pixels": list(NO_PIXELS)}
    res.headline = (f"ring 1080p: copy in {fmt_rate(fps_copy.median)} frames/s = {fmt_x(q_copy.median)} "
                    f"multiprocessing.Queue; rendered in the slot {fmt_rate(fps_render.median)} frames/s = "
                    f"{fmt_x(q_render.median)}; hop median {fmt_us(hop_copy.median)} with the copy, "
                    f"{fmt_us(transit.median)} once the pixels are in the slot ({fmt_x(transit_vs_floor.median)} "
                    f"the bare ipc message)")
    return res
