"""The RTMP sender under network faults, against a real nginx-rtmp: the server killed and restarted, the
server gone for longer than the reconnect budget (both `on_reconnect_fail` policies), and a server that
accepts but stops reading (a TCP proxy in front of nginx that stalls).  Events are watched on the
engine's PUB socket; what the server relays is checked with ffprobe; the engine keeps running."""

from __future__ import annotations

import contextlib
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.enginekit import Engine, wait_for
from tests.helpers import ffprobe_json
from tests.integration.test_rtmp_push import PUSH, EventWatcher, assert_key_nowhere, stream_key
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.fault, pytest.mark.rtmp]

SMALL = ("--set", "src.width=320", "--set", "src.height=180")  # the network is under test, not the encoder


def nodes(engine: Engine) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in engine.ps()["nodes"]}


def assert_all_running_never_restarted(engine: Engine) -> None:
    assert engine.proc.poll() is None, engine.log
    for nid, n in nodes(engine).items():
        assert n["state"] == "running" and n["restarts"] == 0, (nid, n["state"], n["restarts"], n["last_error"])


def probe_until_ok(url: str, timeout_s: float) -> tuple[dict[str, Any], float, int]:
    """ffprobe `url` until it works; returns the result, when the successful ffprobe was started, and how
    many ffprobe runs it took."""
    deadline = time.monotonic() + timeout_s
    runs = 0
    while True:
        started = time.time()
        runs += 1
        try:
            return ffprobe_json(url, "-show_streams", "-rw_timeout", "3000000", timeout_s=10), started, runs
        except (AssertionError, subprocess.TimeoutExpired):
            if time.monotonic() > deadline:
                raise


def stop_engine(engine: Engine) -> None:
    engine.request("stop")
    assert engine.wait(30) == 0, engine.log


def test_nginx_killed_and_back_3s_later(engine_runner: Callable[..., Engine], rtmp_server: RtmpServer) -> None:
    key = stream_key()
    url = rtmp_server.url(stream=key)
    eng = engine_runner(PUSH, env={"PUSH_URL": url})
    events = EventWatcher(eng)
    try:
        events.wait("connected", 20)
        wait_for(lambda: nodes(eng)["push"]["metrics"].get("actor", {}).get("packets_sent", 0) > 30, 10, "pushing")
        killed = time.time()
        rtmp_server.kill()
        lost = events.wait("connection_lost", 5, after=killed)
        time.sleep(3)  # the outage under test
        rtmp_server.restart()
        back = time.time()
        success = events.wait("reconnect_success", 10, after=back - 0.5)
        probe, probed_at, probe_runs = probe_until_ok(url, 10)
        kinds = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
        print(f"loss seen {lost['t'] - killed:.3f}s after the kill; nginx back after {back - killed:.2f}s; "
              f"reconnect_success {success['t'] - back:.3f}s after it ({success['data']}); an ffprobe started "
              f"{probed_at - back:.3f}s after it saw {kinds}")
        # no wall-clock bounds (a loaded machine stretches them): the order of events and the sender's schedule
        assert lost["data"]["reason"] == "error"  # the socket error was noticed, not a send timeout later
        starts = [e for e in events.named("reconnect_start") if e["t"] >= killed]
        assert starts and all(e["t"] <= success["t"] for e in starts)
        assert not events.named("reconnect_fail")  # 5 attempts x 1 s cover a 3 s outage
        # the first attempt that could succeed did: at most one attempt began after nginx was back
        assert len([e for e in starts if e["t"] >= back]) <= 1, [e["t"] - back for e in starts]
        # and the stream was there for a viewer that asked after the reconnect (a second ffprobe is allowed:
        # on a busy machine the first may time out before the next keyframe reaches it)
        assert probe_runs <= 2 and kinds == {"video": "h264", "audio": "aac"}
        names = [e["name"] for e in events.events if e.get("node") == "push" and e["t"] >= killed]
        assert names.index("connection_lost") < names.index("reconnect_start") < names.index("reconnect_success")
        assert_all_running_never_restarted(eng)
        push = nodes(eng)["push"]["metrics"]["actor"]
        print(f"after the outage: state {push['state']}, reconnects {push['reconnects']}, dropped {push['dropped']} "
              f"{push['dropped_reasons']}, queued {push['queued_ms']} ms")
        assert push["reconnects"] == 1 and push["state"] == "connected"
        assert_key_nowhere(eng, key, watcher=events)
        stop_engine(eng)
        assert_key_nowhere(eng, key, watcher=events)  # the log after the stop
        assert events.wait("stream_ended", 5)["data"]["trailer"] is True
        assert key not in eng.log
    finally:
        events.close()


def test_down_longer_than_the_budget_keeps_retrying(engine_runner: Callable[..., Engine],
                                                   rtmp_server: RtmpServer) -> None:
    key = stream_key()
    url = rtmp_server.url(stream=key)
    eng = engine_runner(PUSH, *SMALL, "--set", "push.reconnect_count=3", "--set", "push.reconnect_interval_ms=300",
                        env={"PUSH_URL": url})
    events = EventWatcher(eng)
    try:
        events.wait("connected", 20)
        killed = time.time()
        rtmp_server.kill()
        fail = events.wait("reconnect_fail", 5, after=killed)
        assert fail["data"]["attempts"] == 3 and fail["data"]["action"] == "retry"
        assert key not in str(fail["data"]) and "/live/***" in fail["data"]["url"]
        # still trying after the budget, and nothing else in the engine noticed
        events.wait("reconnect_start", 5, after=fail["t"])
        assert_all_running_never_restarted(eng)
        assert nodes(eng)["push"]["metrics"]["actor"]["state"] == "reconnecting"
        rtmp_server.restart()
        back = time.time()
        success = events.wait("reconnect_success", 5, after=back - 0.5)
        print(f"reconnect_fail after {fail['t'] - killed:.2f}s; reconnect_success {success['t'] - back:.2f}s "
              f"after nginx was back ({success['data']})")
        assert probe_until_ok(url, 10)[2] <= 2
        assert_all_running_never_restarted(eng)
        assert_key_nowhere(eng, key, watcher=events)
        stop_engine(eng)
        assert_key_nowhere(eng, key, watcher=events)  # the log after the stop
    finally:
        events.close()


def test_stop_policy_stops_the_sender_and_the_supervisor_decides(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, tmp_path: Path) -> None:
    key = stream_key()
    url = rtmp_server.url(stream=key)
    topo = tmp_path / "push_once.yaml"
    # `restart: temporary`: the supervisor leaves a failed sender stopped; the rest keeps running
    topo.write_text(Path(PUSH).read_text().replace(
        'options: {url: "${PUSH_URL}"}',
        'restart: temporary, options: {url: "${PUSH_URL}", reconnect_count: 2, reconnect_interval_ms: 200, '
        'on_reconnect_fail: stop}'))
    assert "on_reconnect_fail: stop" in topo.read_text()
    eng = engine_runner(topo, *SMALL, env={"PUSH_URL": url})
    events = EventWatcher(eng)
    try:
        events.wait("connected", 20)
        killed = time.time()
        rtmp_server.kill()
        fail = events.wait("reconnect_fail", 5, after=killed)
        assert fail["data"]["action"] == "stop"
        error = events.wait("error", 5, after=killed)
        assert error["data"]["code"] == 1302 and "/live/***" in error["data"]["message"]
        exited = events.wait("exited", 5, after=killed)
        assert exited["data"]["exit"] != 0
        push = wait_for(lambda: nodes(eng)["push"] if nodes(eng)["push"]["state"] != "running" else None, 5,
                        "push stopped")
        print(f"push: {push['state']}, last_error: {push['last_error']}")
        assert push["state"] in ("stopped", "failed") and push["restarts"] == 0 and push["pid"] is None
        assert "cannot reach" in push["last_error"] and "/live/***" in push["last_error"]
        assert key not in push["last_error"]
        for nid, n in nodes(eng).items():  # the rest of the engine keeps running
            if nid != "push":
                assert n["state"] == "running" and n["restarts"] == 0, (nid, n)
        assert eng.proc.poll() is None
        assert_key_nowhere(eng, key, watcher=events)
        rtmp_server.restart()  # the fixture stops it; a running server keeps teardown uniform
        stop_engine(eng)
        assert_key_nowhere(eng, key, watcher=events)  # the log after the stop
    finally:
        events.close()


class StallingProxy:
    """A TCP proxy on 127.0.0.1 in front of `upstream_port`.  `stall()` makes it stop reading from the
    clients connected now (their sockets stay open; tiny receive buffers, so the sender's side fills at
    once) and closes their upstream side, so nginx drops that publisher.  New clients are proxied
    normally."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by accepted sockets
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port: int = self.srv.getsockname()[1]
        self.pairs: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def stall(self) -> None:
        with self.lock:
            for p in self.pairs:
                p["stalled"] = True
                if p["up"] is not None:
                    p["up"].close()
                    p["up"] = None

    def _loop(self) -> None:
        while not self.done.is_set():
            with self.lock:
                watch: dict[socket.socket, tuple[str, dict[str, Any] | None]] = {self.srv: ("accept", None)}
                for pair in self.pairs:
                    if not pair["stalled"] and pair["cli"] is not None:
                        watch[pair["cli"]] = ("cli", pair)
                    if pair["up"] is not None:
                        watch[pair["up"]] = ("up", pair)
            ready, _, _ = select.select(list(watch), [], [], 0.05)
            with self.lock:
                for sock in ready:
                    role, p = watch[sock]
                    if role == "accept":
                        cli, _ = self.srv.accept()
                        up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
                        self.pairs.append({"cli": cli, "up": up, "stalled": False})
                        continue
                    assert p is not None
                    if p["stalled"] and role == "cli":
                        continue
                    src, dst = (p["cli"], p["up"]) if role == "cli" else (p["up"], p["cli"])
                    if src is None or dst is None:
                        continue
                    try:
                        data = src.recv(65536)
                        if data:
                            dst.sendall(data)
                            continue
                    except OSError:
                        pass
                    for end in ("cli", "up"):  # one side closed: close the pair
                        if p[end] is not None:
                            p[end].close()
                            p[end] = None

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        with self.lock:
            for p in self.pairs:
                for end in ("cli", "up"):
                    if p[end] is not None:
                        with contextlib.suppress(OSError):
                            p[end].close()
        self.srv.close()


def test_server_that_stops_reading_is_detected_then_reconnected(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer) -> None:
    key = stream_key()
    proxy = StallingProxy(rtmp_server.port)
    url = f"rtmp://127.0.0.1:{proxy.port}/live/{key}"
    try:
        eng = engine_runner(PUSH, *SMALL, env={"PUSH_URL": url})
        events = EventWatcher(eng)
        try:
            events.wait("connected", 20)
            wait_for(lambda: nodes(eng)["push"]["metrics"].get("actor", {}).get("packets_sent", 0) > 30, 10,
                     "pushing")
            stalled = time.time()
            proxy.stall()
            timeout = events.wait("send_timeout", 6, after=stalled)
            lost = events.wait("connection_lost", 3, after=stalled)
            success = events.wait("reconnect_success", 5, after=stalled)
            print(f"send_timeout {timeout['t'] - stalled:.2f}s after the stall ({timeout['data']}); "
                  f"connection_lost {lost['data']}; reconnect_success {success['t'] - stalled:.2f}s after the stall")
            assert timeout["t"] - stalled <= 3.0 + 1.0  # send_timeout_ms + 1 s
            assert lost["data"]["reason"] == "send_timeout"
            probe, _, _ = probe_until_ok(rtmp_server.url(stream=key), 10)  # the new publisher reaches nginx
            assert {s["codec_type"] for s in probe["streams"]} == {"video", "audio"}
            assert_all_running_never_restarted(eng)
            assert_key_nowhere(eng, key, watcher=events)
            stop_engine(eng)
            assert_key_nowhere(eng, key, watcher=events)  # the log after the stop
        finally:
            events.close()
    finally:
        proxy.close()
