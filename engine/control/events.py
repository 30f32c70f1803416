"""The SUB side of the control plane: subscribe to an engine's events and metrics.

An engine publishes on its PUB endpoint under hierarchical topics (`events.<node>`, `metrics.<node>`;
docs/protocol.md).  A `Subscriber` connects a SUB socket and waits until the connection is really up, so a
client can then fetch the `snapshot` over control without missing anything published in between;
`Replay` drops the events that the snapshot and the live feed both carry.  Used by the Python API
(`mediaengine.control.api`) and by `mediaengine monitor`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack
import zmq
from zmq.utils.monitor import recv_monitor_message

from ..sdk.errors import TimeoutError_
from ..supervision.curve import configure_client

TOPICS = ("events.", "metrics.")

_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

def event_key(ev: Mapping[str, Any]) -> tuple[str, str, float]:
    """Identity of one published event (node, name, Unix time): the same event seen twice has one key."""
    t = ev.get("t")
    return (str(ev.get("node")), str(ev.get("name")), float(t) if isinstance(t, int | float) else 0.0)


def topic_matches(topic: str, topics: Iterable[str]) -> bool:
    return any(topic.startswith(t) for t in topics)


class Replay:
    """Events from a `snapshot`, then live ones, each once (what a late subscriber needs)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, float]] = set()

    def replayed(self, events_recent: Iterable[Mapping[str, Any]], topics: Sequence[str]) -> list[dict[str, Any]]:
        out = []
        for ev in events_recent:
            if topic_matches(f"events.{ev.get('node')}", topics):
                self.seen.add(event_key(ev))
                out.append(dict(ev))
        return out

    def is_duplicate(self, topic: str, payload: Mapping[str, Any]) -> bool:
        return topic.startswith("events.") and event_key(payload) in self.seen


def decode_pub(frames: Sequence[bytes]) -> tuple[str, dict[str, Any]] | None:
    """(topic, payload) of one PUB message, or None for anything malformed."""
    if len(frames) != 2:
        return None
    try:
        payload = msgpack.unpackb(frames[1], raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError):
        return None
    if not isinstance(payload, dict):
        return None
    return frames[0].decode(errors="replace"), payload


class Subscriber:
    """A SUB socket on an engine's events endpoint; `wait_connected()` before fetching the snapshot."""

    def __init__(self, endpoint: str, topics: Sequence[str] = TOPICS, *,
                 curve_keys: str | os.PathLike[str] | None = None,
                 ctx: zmq.Context[zmq.Socket[bytes]] | None = None) -> None:
        self.endpoint = endpoint
        self.topics = tuple(topics)
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        configure_client(self.sock, curve_keys)
        for t in self.topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self._mon: zmq.Socket[bytes] | None = self.sock.get_monitor_socket(_HANDSHAKE_EVENTS)
        self.sock.connect(endpoint)

    def wait_connected(self, timeout_s: float) -> None:
        """Block until the ZMTP (and CURVE) handshake succeeded; raise TimeoutError_ if it does not."""
        deadline = time.monotonic() + timeout_s
        assert self._mon is not None, "wait_connected() called twice"
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self._mon.poll(int(left * 1000) + 1):
                    raise TimeoutError_(f"no connection to the events endpoint {self.endpoint} within "
                                        f"{timeout_s:g}s (engine gone, or CURVE keys missing or not authorized)")
                ev = recv_monitor_message(self._mon)
                if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return
        finally:
            self.sock.disable_monitor()
            self._mon.close(0)
            self._mon = None

    def recv(self, timeout_ms: int) -> tuple[str, dict[str, Any]] | None:
        """The next well-formed message, or None after `timeout_ms` without one."""
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            if not self.sock.poll(left, zmq.POLLIN):
                return None
            msg = decode_pub(self.sock.recv_multipart())
            if msg is not None:
                return msg

    def close(self) -> None:
        if self._mon is not None:
            self.sock.disable_monitor()
            self._mon.close(0)
            self._mon = None
        self.sock.close(0)


# ---- the model: what a monitor knows about an engine ----------------------------------------------------

