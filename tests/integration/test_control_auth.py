"""Nobody can pose as an actor, and TCP control is never open by accident (issue 9.3).

A client used to be able to send `hello`, `heartbeat`, `event`, `failed` or `metrics` under the routing id
`a:<node>` on the control socket and be taken for that actor (a forged heartbeat hides a hung actor, a
forged event or error reaches every monitor), and `ROUTER_HANDOVER` let a client connecting with
`a:<node>` take the actor's route, so commands for the node went to the client.  Loopback TCP was
treated as private although every local user can reach it.  Each test runs the real demo engine.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from mediaengine.control.client import ControlClient
from mediaengine.sdk.errors import ActorOnlyError
from zmq.utils.monitor import recv_monitor_message

from tests.enginekit import ROOT, Engine, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DEMO = "topologies/demo.yaml"
SPOOFS: list[dict[str, Any]] = [
    {"type": "hello", "node": "src", "pid": 1},
    {"type": "heartbeat", "node": "src"},
    {"type": "event", "node": "src", "name": "spoofed", "data": {"by": "a client"}},
    {"type": "failed", "node": "src", "code": 1502, "message": "spoofed failure"},
    {"type": "metrics", "node": "src", "metrics": {"spoofed": 1}},
    {"type": "done", "node": "src", "reason": "spoofed"},
    {"type": "ok", "id": 1, "result": "spoofed"},
]


def _stop(eng: Engine) -> None:
    """A clean stop unlinks the rings (the runner's SIGKILL cannot)."""
    if eng.proc.poll() is None:
        with contextlib.suppress(Exception):
            eng.request("stop")
        with contextlib.suppress(AssertionError):
            eng.wait(30)


@pytest.fixture
def demo(engine_runner: Callable[..., Engine], tmp_path: Path) -> Iterator[Engine]:
    eng = engine_runner(DEMO, "--set", f"rec.path={tmp_path / 'f.mp4'}", "--set", f"snap.path={tmp_path / 's.png'}")
    eng.wait_running()
    yield eng
    _stop(eng)


def _dealer(ctx: zmq.Context[Any], endpoint: str, identity: bytes | None) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock


def _frames_in(eng: Engine, node: str) -> int:
    return int(sum(eng.node(node)["metrics"].get("frames_in", {}).values()))


@pytest.mark.parametrize("identity", [b"a:src", None], ids=["actor-routing-id", "own-routing-id"])
def test_a_client_cannot_pose_as_an_actor(demo: Engine, identity: bytes | None) -> None:
    info = demo.info()
    assert info is not None
    ctx: zmq.Context[Any] = zmq.Context()
    sock = _dealer(ctx, str(info["control"]), identity)
    try:
        for spoof in SPOOFS:
            sock.send(msgpack.packb({"v": 1, **spoof}))
            assert sock.poll(5000, zmq.POLLIN), f"no reply to a client's {spoof['type']!r}"
            reply = msgpack.unpackb(sock.recv())
            assert reply["type"] == "error" and reply["code"] == ActorOnlyError.code, reply
            assert "own actors" in reply["message"], reply
    finally:
        sock.close(0)
        ctx.term()
    snap = demo.request("snapshot")
    assert not [e for e in snap["events_recent"] if "spoofed" in repr(e)], "a forged actor event was published"
    src = next(n for n in snap["nodes"] if n["id"] == "src")
    assert src["last_error"] is None and "spoofed" not in src["metrics"], src
    assert all(n["state"] == "running" and n["restarts"] == 0 for n in snap["nodes"]), snap["nodes"]


def _handshaken(sock: zmq.Socket[Any], timeout_s: float) -> bool:
    """Wait for the ZeroMQ handshake of `sock`'s connection (its monitor says so), without sleeping."""
    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        return bool(mon.poll(int(timeout_s * 1000), zmq.POLLIN)) and \
            recv_monitor_message(mon)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    finally:
        sock.disable_monitor()
        mon.close(0)


def test_a_client_cannot_take_over_an_actors_route(demo: Engine) -> None:
    """A client connecting with the routing id `a:src` (on the control socket, or on the actors' socket
    without the run's keys) gets none of src's commands; src still answers them."""
    info = demo.info()
    assert info is not None
    actors_sock = Path(str(info["control"])[len("ipc://"):]).with_name("actors.sock")
    ctx: zmq.Context[Any] = zmq.Context()
    on_control = _dealer(ctx, str(info["control"]), b"a:src")
    try:
        assert _handshaken(on_control, 5), "the hijacker's connection to the control socket was not set up"
        on_actors = _dealer(ctx, f"ipc://{actors_sock}", b"a:src")  # no CURVE keys: the handshake fails
        on_actors.send(msgpack.packb({"v": 1, "type": "heartbeat", "node": "src"}))
        before = _frames_in(demo, "rec")
        with ControlClient(str(info["control"]), timeout_s=4) as client:
            for _ in range(5):
                stats = client.request("command", node="src", command="stats", args={})
                assert "frames_out" in stats, stats
        assert not on_control.poll(300, zmq.POLLIN), "a command for src reached the client posing as src"
        assert not on_actors.poll(10, zmq.POLLIN), "the actors' socket answered a connection without keys"
        on_actors.close(0)
    finally:
        on_control.close(0)
        ctx.term()
    wait_for(lambda: _frames_in(demo, "rec") > before + 30, 10, "the recorder to receive 30 more frames")
    assert all(n["state"] == "running" and n["restarts"] == 0 for n in demo.ps()["nodes"])
    assert "refused a connection" not in demo.log or "(error 1412)" in demo.log


def _cli(runtime_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(runtime_dir)}
    return subprocess.run([sys.executable, "-m", "mediaengine.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_loopback_tcp_needs_keys_or_an_explicit_insecure_flag(engine_runner: Callable[..., Engine],
                                                              tmp_path: Path) -> None:
    rdir = tmp_path / "refused"
    rdir.mkdir(mode=0o700)
    for flag in ("--control", "--events"):
        out = _cli(rdir, "run", DEMO, flag, "tcp://127.0.0.1:*", "--duration", "1")
        assert out.returncode == 1, out.stderr
        assert "without keys would let every local user drive the engine" in out.stderr, out.stderr
        assert "--insecure-loopback" in out.stderr and "--curve-keys" in out.stderr
        assert out.stderr.rstrip().endswith("(error 1411 InsecureEndpointError)"), out.stderr
        assert "started pid=" not in out.stderr  # refused before anything ran
    assert not any(rdir.iterdir()), "no runtime directory was created"

    eng = engine_runner(DEMO, "--control", "tcp://127.0.0.1:*", "--insecure-loopback",
                        "--set", f"rec.path={tmp_path / 'f.mp4'}", "--set", f"snap.path={tmp_path / 's.png'}")
    try:
        status = eng.wait_running()
        tcp = str(status["control_public"])
        assert tcp.startswith("tcp://127.0.0.1:") and not tcp.endswith(":*"), tcp
        with ControlClient(tcp, timeout_s=3) as c:
            assert c.request("ping")["engine_id"] == status["engine_id"]
        assert "tcp://127.0.0.1:* has no CURVE keys (--insecure-loopback): every local user can connect" \
            in eng.log, eng.log
    finally:
        _stop(eng)
    assert eng.proc.returncode == 0, eng.log
