"""Hostile but well-formed control requests: each one is answered with an error, the engine carries on.

Issue 9.1: a `command` whose map had a non-string key or a key named `msg_type` made the supervisor's
forwarding raise `TypeError` out of its loop, which stopped the engine and every actor.  Issue 9.3: a
client could pose as an actor (send `hello`, `heartbeat`, `event`, `failed` under the routing id
`a:<node>`) or take an actor's route over with `ROUTER_HANDOVER`.  These tests run the real demo engine,
send the hostile messages from a plain DEALER, and check what a user would see: an error reply with a
documented code, every node still running with no restart, the recorder still receiving frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from mediaengine.control import protocol as proto
from mediaengine.sdk.errors import ERRORS_BY_CODE

from tests.enginekit import Engine, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DEMO = "topologies/demo.yaml"


@pytest.fixture
def demo(engine_runner: Callable[..., Engine], tmp_path: Path) -> Iterator[Engine]:
    eng = engine_runner(DEMO, "--set", f"rec.path={tmp_path / 'f.mp4'}", "--set", f"snap.path={tmp_path / 's.png'}")
    eng.wait_running()
    yield eng
    if eng.proc.poll() is None:  # a clean stop unlinks the rings (the runner's SIGKILL cannot)
        with contextlib.suppress(Exception):
            eng.request("stop")
        with contextlib.suppress(AssertionError):
            eng.wait(30)


@pytest.fixture
def dealer(demo: Engine) -> Iterator[Callable[..., zmq.Socket[bytes]]]:
    """Raw DEALER sockets on the engine's control endpoint (optionally with a chosen routing id)."""
    ctx = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []

    def make(identity: bytes | None = None) -> zmq.Socket[bytes]:
        info = demo.info()
        assert info is not None
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if identity is not None:
            sock.setsockopt(zmq.IDENTITY, identity)
        sock.connect(str(info["control"]))
        socks.append(sock)
        return sock

    try:
        yield make
    finally:
        for s in socks:
            s.close(0)
        ctx.term()


def _ask(sock: zmq.Socket[bytes], body: dict[Any, Any], timeout_ms: int = 5000) -> dict[str, Any]:
    sock.send(msgpack.packb(body, use_bin_type=True))
    assert sock.poll(timeout_ms, zmq.POLLIN), f"no reply to {body!r}"
    reply = msgpack.unpackb(sock.recv(), raw=False, strict_map_key=False)
    assert isinstance(reply, dict)
    return reply


def _frames_in(eng: Engine, node: str) -> int:
    return int(sum(eng.node(node)["metrics"].get("frames_in", {}).values()))


def _still_running_and_recording(eng: Engine) -> None:
    """Every node running, none restarted, and the recorder's input counter advancing."""
    assert eng.proc.poll() is None, f"the engine exited ({eng.proc.returncode}):\n{eng.log}"
    before = _frames_in(eng, "rec")
    wait_for(lambda: _frames_in(eng, "rec") > before + 30, 10, "the recorder to receive 30 more frames")
    nodes = eng.ps()["nodes"]
    assert all(n["state"] == "running" for n in nodes), nodes
    assert all(n["restarts"] == 0 for n in nodes), {n["id"]: n["restarts"] for n in nodes}


HOSTILE_FIELDS: list[tuple[str, dict[Any, Any]]] = [
    ("non-string key", {1: "x"}),
    ("key named msg_type", {"msg_type": "x"}),
    ("key named result", {"result": {"forged": True}}),
    ("nil, float and bytes keys", {None: 1, 1.5: 2, b"raw": 3}),
    ("key named fields", {"fields": {}}),
]


@pytest.mark.parametrize("what,extra", HOSTILE_FIELDS, ids=[h[0] for h in HOSTILE_FIELDS])
def test_hostile_extra_fields_in_a_command_get_an_answer_and_stop_nothing(
        demo: Engine, dealer: Callable[..., zmq.Socket[bytes]], what: str, extra: dict[Any, Any]) -> None:
    sock = dealer()
    for rid, (mtype, fields) in enumerate([
        ("command", {"node": "venc", "command": "no_such_command", "args": {}}),
        ("command", {"node": "snap", "command": "stats", "args": {1: "x", "msg_type": 2}}),
        ("set", {"node": "filt", "options": {1: "x"}}),
        ("fault", {"node": "src", "fault": "kill", "args": {}}),
    ], start=1):
        body: dict[Any, Any] = {"v": 1, "type": mtype, "id": rid, **fields, **extra}
        reply = _ask(sock, body)
        assert reply["id"] == rid, reply
        assert reply["type"] in ("ok", "error"), reply
        if reply["type"] == "error":
            assert reply["code"] in ERRORS_BY_CODE, reply
    _still_running_and_recording(demo)


def test_a_command_whose_result_the_node_cannot_encode_is_an_error_not_a_crash(
        demo: Engine, dealer: Callable[..., zmq.Socket[bytes]]) -> None:
    """A hook error inside an actor (here: the snapshot command given a path it cannot take) is an
    error reply; the actor keeps running."""
    sock = dealer()
    reply = _ask(sock, {"v": 1, "type": "command", "id": 7, "node": "snap", "command": "snapshot",
                        "args": {"path": ["not", "a", "string"]}})
    assert reply["type"] == "error" and reply["id"] == 7, reply
    _still_running_and_recording(demo)


def test_protocol_version_field_is_still_checked(demo: Engine, dealer: Callable[..., zmq.Socket[bytes]]) -> None:
    reply = _ask(dealer(), {"v": 1, "type": "ps", "id": 3, 1: "x", "msg_type": "y"})
    assert reply["type"] == "ok" and reply["id"] == 3, reply
    assert reply["v"] == proto.VERSION
