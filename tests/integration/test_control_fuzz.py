"""Fuzzing the control endpoint of a running engine: garbage gets an error reply, the engine keeps going.

More than 10,000 random, truncated, oversized and wrongly typed messages go to the supervisor's ROUTER
from DEALER sockets while the demo topology runs.  Every message on the main socket must get exactly
one reply (an `error` with a documented code, or an `ok` for the few valid requests), messages over
the 1 MiB limit are dropped (the connection is cut by ZeroMQ's MAXMSGSIZE), and afterwards the engine
still answers `ps`, every node is still running with frames flowing, and the supervisor's memory has
not grown by more than a small bound.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
import zmq
from mediaengine.control import protocol as proto
from mediaengine.sdk.errors import ERRORS_BY_CODE

from tests.enginekit import Engine, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEMO = "topologies/demo.yaml"
NODES = ["src", "tone", "filt", "venc", "aenc", "rec", "snap"]
MESSAGES = 20_000
WINDOW = 200
RSS_GROWTH_LIMIT = 20 * 1024 * 1024


class Fuzzer:
    """Deterministic generator of bad (and a few good) control messages."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_id = 1

    def _rid(self) -> int:
        self.next_id += 1
        return self.next_id

    def _scalar(self) -> Any:
        r = self.rng
        return r.choice([
            None, True, False, r.randint(-(2**63), 2**64 - 1), r.random() * 1e9, float("inf"), float("nan"),
            "", "x" * r.randint(1, 300), bytes(r.getrandbits(8) for _ in range(r.randint(0, 40))),
            [1, "a", None], {"k": [1, 2]}, {1: 2, None: 3}, msgpack.ExtType(5, b"ext"),
        ])

    def _valid(self) -> dict[str, Any]:
        """A well-formed request that must not change the engine (stop/pause/valid set are excluded)."""
        r = self.rng
        rid = self._rid()
        kind = r.choice(["ps", "ping", "snapshot", "command", "set", "fault", "unknown_node"])
        if kind in ("ps", "ping", "snapshot"):
            return {"v": 1, "type": kind, "id": rid}
        if kind == "command":
            return {"v": 1, "type": "command", "id": rid, "node": r.choice(NODES),
                    "command": r.choice(["frobnicate", "stats", "", "💥"]), "args": {"a": self._scalar()}}
        if kind == "set":
            return {"v": 1, "type": "set", "id": rid, "node": r.choice(NODES),
                    "options": {f"no_such_option_{r.randint(0, 9)}": self._scalar()}}
        if kind == "fault":  # refused: the engine runs without --allow-faults
            return {"v": 1, "type": "fault", "id": rid, "node": r.choice(NODES), "fault": "kill", "args": {}}
        return {"v": 1, "type": "command", "id": rid, "node": f"ghost{r.randint(0, 99)}", "command": "x", "args": {}}

    def message(self) -> list[bytes]:
        """One message as a list of frames (usually one frame)."""
        r = self.rng
        choice = r.random()
        if choice < 0.15:  # random bytes
            return [bytes(r.getrandbits(8) for _ in range(r.randint(0, 200)))]
        if choice < 0.25:  # msgpack, but not a map
            return [msgpack.packb(self._scalar(), use_bin_type=True)]
        if choice < 0.55:  # a map with wrong or missing fields and types
            msg = self._valid()
            for _ in range(r.randint(1, 3)):
                key = r.choice(["v", "type", "id", "node", "command", "args", "options", "fault"])
                if r.random() < 0.3:
                    msg.pop(key, None)
                else:
                    msg[key] = self._scalar()
            if r.random() < 0.3:
                msg["type"] = r.choice(["hello", "heartbeat", "metrics", "ok", "error", "shutdown", "done",
                                        "STOP", "nonsense", 7])
            return [msgpack.packb(msg, use_bin_type=True)]
        if choice < 0.75:  # truncated valid requests
            raw = msgpack.packb(self._valid(), use_bin_type=True)
            return [raw[: r.randint(0, len(raw) - 1)]]
        if choice < 0.80:  # several frames, or an empty one
            return [b"", msgpack.packb(self._valid())] if r.random() < 0.5 else [b"a", b"b", b"c"]
        if choice < 0.81:  # big but under the limit
            return [msgpack.packb({"v": 1, "type": "ping", "id": self._rid(), "pad": "p" * r.randint(1, 900_000)})]
        if choice < 0.83:  # deeply nested arrays (by hand: the packer refuses such depth)
            deep = b"\x91" * r.randint(100, 5000) + b"\x01"
            if r.random() < 0.5:
                return [deep]
            head = b"".join(msgpack.packb(x) for x in ("v", 1, "type", "ps", "id", self._rid(), "deep"))
            return [b"\x84" + head + deep]
        return [msgpack.packb(self._valid(), use_bin_type=True)]


def _reply_ok(raw: bytes) -> dict[str, Any]:
    reply = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    assert isinstance(reply, dict) and reply.get("v") == proto.VERSION, reply
    assert reply["type"] in ("ok", "error"), reply
    if reply["type"] == "error":
        assert reply["code"] in ERRORS_BY_CODE, reply
        assert ERRORS_BY_CODE[reply["code"]].__name__.rstrip("_") == reply["name"], reply
        assert isinstance(reply["message"], str) and reply["message"], reply
    return reply


@pytest.fixture
def demo(engine_runner: Callable[..., Engine], tmp_path: Path) -> Iterator[Engine]:
    eng = engine_runner(DEMO, "--set", f"rec.path={tmp_path / 'f.mp4'}", "--set", f"snap.path={tmp_path / 's.png'}")
    eng.wait_running()
    yield eng


def _fuzz(sock: zmq.Socket[bytes], fuzzer: Fuzzer, count: int) -> tuple[int, int, dict[int, int]]:
    """Send `count` messages with at most WINDOW unanswered; returns (sent, replies, codes seen)."""
    sent = replies = 0
    codes: dict[int, int] = {}
    deadline = time.monotonic() + 45
    while replies < count:
        assert time.monotonic() < deadline, f"only {replies} replies to {sent} messages"
        while sent < count and sent - replies < WINDOW:
            sock.send_multipart(fuzzer.message())
            sent += 1
        if sock.poll(6000, zmq.POLLIN):
            while True:
                try:
                    raw = sock.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                reply = _reply_ok(raw)
                replies += 1
                code = int(reply.get("code", 0))
                codes[code] = codes.get(code, 0) + 1
        else:
            raise AssertionError(f"no reply for 6 s: {sent} sent, {replies} replies")
    assert not sock.poll(300, zmq.POLLIN), "more replies than messages"
    return sent, replies, codes


def test_ten_thousand_bad_messages_leave_the_engine_running(demo: Engine) -> None:
    info = demo.info()
    assert info is not None
    sup = psutil.Process(demo.proc.pid)
    ctx = zmq.Context()
    main = ctx.socket(zmq.DEALER)
    main.setsockopt(zmq.LINGER, 0)
    main.connect(str(info["control"]))
    big = ctx.socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(str(info["control"]))
    try:
        fuzzer = Fuzzer(seed=20240601)
        _fuzz(main, fuzzer, 500)  # warm-up: first-use allocations are not growth
        rss_before = sup.memory_info().rss
        t0 = time.monotonic()
        sent, replies, codes = _fuzz(main, fuzzer, MESSAGES)
        elapsed = time.monotonic() - t0
        # oversized: ZeroMQ drops the message and the connection (MAXMSGSIZE); nobody answers, nobody crashes
        for size in (proto.MAX_MESSAGE_BYTES + 1, 3 * proto.MAX_MESSAGE_BYTES):
            big.send(msgpack.packb({"v": 1, "type": "ps", "id": 1, "pad": b"\0" * size}))
        assert not big.poll(500, zmq.POLLIN)
        rss_after = sup.memory_info().rss
    finally:
        main.close(0)
        big.close(0)
        ctx.term()

    assert sent == replies == MESSAGES
    # the garbage was recognised as such: all protocol error classes showed up
    for code in (1401, 1402, 1403, 1404, 1405, 1407, 1108):
        assert codes.get(code, 0) > 0, f"no error {code} among {codes}"
    assert codes.get(0, 0) > 0, "the valid requests got no ok"
    growth = rss_after - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"supervisor RSS grew by {growth / 1e6:.1f} MB"
    print(f"\n{MESSAGES} messages in {elapsed:.1f}s, replies by code {dict(sorted(codes.items()))}, "
          f"supervisor RSS {rss_before / 1e6:.1f} -> {rss_after / 1e6:.1f} MB")

    # the engine carries on: ps answers, every node runs, not one restarted, frames still flow
    t_fuzzed = time.monotonic()

    def flowing() -> dict[str, Any] | None:
        st = demo.ps()
        nodes = {n["id"]: n for n in st["nodes"]}
        fresh = all(n["metrics"].get("uptime_s", 0) > 0 for n in nodes.values())
        ok = fresh and all(n["state"] == "running" and n["fps"] > 0 for n in nodes.values())
        return nodes if ok and time.monotonic() - t_fuzzed > 1.2 else None

    nodes = wait_for(flowing, 10, "every node running with frames flowing after the fuzzing")
    assert all(n["restarts"] == 0 for n in nodes.values()), {k: n["restarts"] for k, n in nodes.items()}
    assert nodes["src"]["fps_out"] > 20 and nodes["venc"]["fps_out"] > 20 and nodes["rec"]["fps_in"] > 50
    assert demo.proc.poll() is None
    demo.request("stop")
    assert demo.wait(30) == 0, demo.log
