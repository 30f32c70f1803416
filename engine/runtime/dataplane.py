"""The runtime's data plane for raw frames: one edge's emit (ring write + descriptors) and deliver.

These are the functions `ActorRuntime` calls for every raw frame, taken out of its class so that they
can run on their own: the ring benchmark (`tools/bench/ring.py`) measures exactly this code between
two processes, not a copy of it.  They hold no state of their own; what they count (drops, stale or
bad descriptors) they report through the callbacks the caller passes.

    emit_frame(out, frame, where, send, drop)     producer: slot (lent or written) -> descriptor per consumer
    deliver_frame(inp, desc, hook, count)          consumer: descriptor -> zero-copy Frame -> hook -> release
    send_desc(consumer, raw, idle, drop)           one descriptor to one consumer, honouring its policy
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq

from ..sdk.errors import ActorFailedError
from ..sdk.formats import Format, Frame
from .decisions import lent_buffer_fate, still_stalled
from .ring import FrameRing, Reservation, RingReader, RingWriter
from .wire import FrameDesc, frame_desc

#: how long a descriptor for a `block`-policy consumer may wait on a full socket before it counts as dropped
BLOCK_SEND_S = 0.5


@dataclass
class Consumer:
    """One consumer of an output pad: its node, input pad, index in the ring, policy and data socket."""

    node: str
    pad: str
    index: int
    policy: str
    sock: zmq.Socket[bytes]
    #: a send to it timed out (the consumer is probably dead, restarting or stopped for good): it is not
    #: waited on again until a send goes through, or every packet would wait the whole block timeout
    stalled: bool = False


@dataclass
class Output:
    """One output pad of an actor: its format, ring writer and consumers."""

    pad: str
    fmt: Format
    writer: RingWriter | None
    ring: FrameRing | None
    consumers: list[Consumer]
    ended: bool = False
    stalled: set[int] = field(default_factory=set)  # block-policy consumers that timed out (likely down)
    reserved: tuple[Reservation, npt.NDArray[Any]] | None = None  # a slot lent out by output_buffer()
    abandoned: npt.NDArray[Any] | None = None  # a lent slot given back unused (must not be emitted later)


@dataclass
class Input:
    """One input pad of an actor: its format, policy and ring reader."""

    pad: str
    fmt: Format
    policy: str
    reader: RingReader | None
    ring: FrameRing | None
    shape: tuple[int, ...] = ()
    dtype: str = "uint8"
    ended: bool = False


def lend_buffer(out: Output) -> npt.NDArray[Any] | None:
    """Reserve a free slot of `out`'s ring for the actor to fill in place (see Actor.output_buffer).

    One lent slot per pad at a time: a second request, a packet pad or an ended pad gets None.
    """
    if out.writer is None or out.reserved is not None or out.ended:
        return None
    fmt = out.fmt
    res = out.writer.reserve()
    arr = res.array(tuple(fmt.shape), getattr(fmt, "dtype", "uint8"))  # type: ignore[union-attr]
    out.reserved = (res, arr)
    return arr


def emit_frame(out: Output, media: Frame, where: str, send: Callable[[Consumer, bytes], None],
               drop: Callable[[str], None]) -> None:
    """Publish one raw frame on `out`: commit the lent slot in place when `media.data` is it, else copy
    the frame into a slot (`RingWriter.write`); then one descriptor per consumer the slot went to.

    `where` ("node.pad") names the place in errors; `drop(name)` counts a frame a consumer did not get.
    """
    if out.writer is None:
        raise ActorFailedError(f"{where}: the pad carries packets, got a raw frame")
    data = media.data
    if data.dtype != np.dtype(getattr(out.fmt, "dtype", "uint8")) or data.shape != tuple(out.fmt.shape):  # type: ignore[union-attr]
        raise ActorFailedError(f"{where}: frame {data.shape} {data.dtype} does not match {out.fmt.describe()}")
    # a block-policy consumer that timed out is probably restarting: do not wait on it again until it
    # has released something, or every frame would wait the whole block timeout
    if out.stalled and out.ring is not None:
        ring = out.ring
        out.stalled = still_stalled(out.stalled, [ring.held(i) for i in range(ring.consumers)], ring.depth)
    reserved, out.reserved = out.reserved, None
    if out.abandoned is not None and data is out.abandoned:
        raise ActorFailedError(f"{where}: a buffer from output_buffer() was emitted after another frame on the "
                               "same pad; emit it first (its slot was reused)")
    fate = lent_buffer_fate(reserved[1] if reserved is not None else None, data)
    if fate == "commit" and reserved is not None:
        # the actor rendered straight into the slot (output_buffer): publish it, no copy
        result = out.writer.commit(reserved[0], media.pts_ns, data.nbytes, exclude=out.stalled)
    else:
        if fate == "abandon" and reserved is not None:
            out.abandoned = reserved[1]  # the actor chose not to use it: the slot goes back to the ring
        result = out.writer.write(data, media.pts_ns, exclude=out.stalled)
    for idx in out.stalled:
        drop(f"{out.pad}->{out.consumers[idx].node}")
    for idx in result.dropped:
        drop(f"{out.pad}->{out.consumers[idx].node}")
        if out.consumers[idx].policy == "block":
            out.stalled.add(idx)
    for idx in result.delivered:
        c = out.consumers[idx]
        send(c, frame_desc(c.pad, result.slot, result.seq, media.pts_ns, media.meta))


def send_desc(c: Consumer, raw: bytes, idle: Callable[[], None], drop: Callable[[str], None],
              wait_s: float | None = None) -> None:
    """Send one descriptor to `c`: a `block` consumer is waited on up to BLOCK_SEND_S (calling `idle`
    meanwhile), any other is dropped at once when its socket is full; `wait_s` overrides the wait (a
    format change is never dropped like a frame).  A consumer whose last send timed out is not waited
    on until one of its sends goes through again (`Consumer.stalled`): a dead `temporary` consumer of
    encoded packets must not hold its producer for the block timeout on every packet."""
    wait = wait_s if wait_s is not None else BLOCK_SEND_S if c.policy == "block" and not c.stalled else 0.0
    deadline = time.monotonic() + wait
    while True:
        try:
            c.sock.send(raw, zmq.NOBLOCK)
            c.stalled = False
            return
        except zmq.Again:
            if time.monotonic() >= deadline:
                c.stalled = c.stalled or wait > 0
                drop(f"send->{c.node}")
                return
            idle()
            time.sleep(0.001)


def deliver_frame(inp: Input, d: FrameDesc, hook: Callable[[Frame], None],
                  count: Callable[[str], None]) -> None:
    """Hand the raw frame descriptor `d` points to to `hook` as a zero-copy view, then release the slot.

    A descriptor outside the ring counts `bad_descriptors`, one whose slot was reused since
    `stale_descriptors`; neither reaches the hook.  The view is valid only during the hook call.
    """
    if inp.reader is None:
        count("bad_descriptors")
        return
    try:
        view = inp.reader.view(d.slot, d.seq, inp.shape, inp.dtype)
    except (ValueError, IndexError):
        count("bad_descriptors")
        return
    if view is None:
        count("stale_descriptors")
        return
    try:
        hook(Frame(view, d.pts_ns, d.seq, d.meta))
    finally:
        del view
        inp.reader.release(d.slot, d.seq)
