"""`send_desc`, the runtime's one way of sending a descriptor to a consumer, against real ZeroMQ sockets.

A consumer that takes nothing (dead, restarting, or a `temporary` node stopped for good) fills its
socket.  A `block` consumer is waited on for the block timeout once; after that timeout it is not
waited on again until a send goes through, so a producer of encoded packets (which have no ring, and
so no ring-side stall tracking) is not held for the whole timeout on every packet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from mediaengine.runtime.dataplane import Consumer, send_desc


@pytest.fixture
def sockets(tmp_path: Path) -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push, pull = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    for s in (push, pull):
        s.setsockopt(zmq.SNDHWM, 1)
        s.setsockopt(zmq.RCVHWM, 1)
        s.setsockopt(zmq.LINGER, 0)
    endpoint = f"ipc://{tmp_path}/data.sock"
    pull.bind(endpoint)
    push.connect(endpoint)
    try:
        yield push, pull
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()


def _fill(c: Consumer) -> None:
    """Send until the socket stays full: ZeroMQ's I/O thread moves messages on to the peer and the
    kernel's buffers, so it is full once sends have been refused for a whole 100 ms."""
    refused_since: float | None = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            c.sock.send(b"x" * 65536, zmq.NOBLOCK)
            refused_since = None
        except zmq.Again:
            refused_since = refused_since or time.monotonic()
            if time.monotonic() - refused_since >= 0.1:
                return
            time.sleep(0.005)
    raise AssertionError("the socket never filled")


def test_a_block_consumer_that_timed_out_is_not_waited_on_again_until_it_reads(
        sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    push, pull = sockets
    c = Consumer("push", "video", 0, "block", push)
    _fill(c)
    idles: list[int] = []
    drops: list[str] = []

    def idle() -> None:
        idles.append(1)

    send_desc(c, b"d1", idle, drops.append)  # waited the block timeout, then dropped
    waited = len(idles)
    assert waited > 50 and drops == ["send->push"] and c.stalled
    send_desc(c, b"d2", idle, drops.append)  # stalled: dropped at once, no waiting
    assert len(idles) == waited and drops == ["send->push"] * 2
    while pull.poll(100):  # the consumer reads everything again
        pull.recv()
    send_desc(c, b"d3", idle, drops.append)
    assert not c.stalled and drops == ["send->push"] * 2


def test_other_policies_never_wait_and_never_stall(sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes]]) -> None:
    push, _ = sockets
    c = Consumer("snap", "in", 0, "drop_newest", push)
    _fill(c)
    idles: list[int] = []
    drops: list[str] = []
    send_desc(c, b"d", lambda: idles.append(1), drops.append)
    assert idles == [] and drops == ["send->snap"] and not c.stalled
