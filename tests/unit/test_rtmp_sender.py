"""rtmp_sender without a server: pure helpers, the drop policy, the start gate, SEI attachment, and the
writer/watchdog threads driven through a fake connection (real threads, no network, no sleeps: every
wait is on a condition with a deadline)."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from mediaengine.actors.rtmp_sender import (
    RtmpSender,
    RtmpSenderOptions,
    describe_error,
    message_args,
    reconnect_delay_ms,
    redact_url,
)
from mediaengine.actors.rtmp_sender.connection import FlvConnection
from mediaengine.actors.rtmp_sender.queue import Backlog, Item, RateWindow, StartGate
from mediaengine.actors.rtmp_sender.socket import (
    find_socket,
    limit_in_flight,
    probe_rtmp,
    shutdown_socket,
    socket_stats,
)
from mediaengine.actors.video_encoder import VideoEncoder
from mediaengine.sdk.actor import Actions, Context, Emit, Event, Reply
from mediaengine.sdk.errors import ConnectError, FieldError, OptionError
from mediaengine.sdk.formats import AAC, H264, NS, Frame, Packet, VideoFormat
from mediaengine.sdk.options import check_instance
from mediaengine.sdk.sei import OUR_UUID, parse_sei_payloads
from mediaengine.testing import ActorHarness

from tests.helpers import wait_for

URL = "rtmp://127.0.0.1:1935/live/sk_live_0123456789"
TB_V = Fraction(1, 90_000)
TB_A = Fraction(1, 48_000)
SLICE = b"\x00\x00\x00\x01\x65\x88\x84\x00"  # an IDR slice NAL (enough for the SEI insertion point)
VPARAMS = {"codec": "h264", "width": 64, "height": 64, "time_base": [1, 90000], "extradata": b"\x00\x00\x00\x01gSPS"}
APARAMS = {"codec": "aac", "rate": 48000, "channels": 1, "time_base": [1, 48000], "extradata": b"\x11\x90"}


def reply(actions: Actions) -> Any:
    """The value of the `Reply` among a control hook's actions."""
    replies = [a.value for a in actions or [] if isinstance(a, Reply)]
    assert len(replies) == 1, actions
    return replies[0]


def vpkt(i: int, key: bool = False, params: bool = False) -> Packet:
    return Packet(SLICE + bytes([i % 256]), i * 3000, i * 3000, TB_V, key, VPARAMS if params else None)


def apkt(i: int, params: bool = False) -> Packet:
    return Packet(b"\x21\x00" + bytes([i % 256]), i * 1024, i * 1024, TB_A, True, APARAMS if params else None)


def vitem(ms: int, key: bool = False) -> Item:
    return Item("video", Packet(SLICE, ms * 90, ms * 90, TB_V, key), ms * 1_000_000)


def aitem(ms: int) -> Item:
    return Item("audio", Packet(b"a", ms * 48, ms * 48, TB_A, True), ms * 1_000_000)


# ---- pure helpers ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    ("rtmp://127.0.0.1:1935/live/secretkey", "rtmp://127.0.0.1:1935/live/***"),
    ("rtmps://live.example.com/app/inst/key?token=abc", "rtmps://live.example.com/app/***"),
    ("rtmp://user:pw@host/live", "rtmp://***@host/live"),
    ("rtmp://host/live", "rtmp://host/live"),
    ("rtmp://host/live?key=abc", "rtmp://host/live/***"),
    ("rtmp://[::1]:1935/live/k", "rtmp://[::1]:1935/live/***"),
    ("not a url", "***"),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_reconnect_delays_follow_interval_backoff_and_cap() -> None:
    o = RtmpSenderOptions(url=URL, reconnect_interval_ms=1000, reconnect_backoff=1.5,
                          reconnect_max_interval_ms=3000)
    assert [reconnect_delay_ms(n, o) for n in range(1, 7)] == [0, 1000, 1500, 2250, 3000, 3000]
    flat = RtmpSenderOptions(url=URL)
    assert [reconnect_delay_ms(n, flat) for n in range(1, 5)] == [0, 1000, 1000, 1000]


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"url": "http://host/live/key"}, "rtmp://"),
    ({"url": "rtmp:///live/key"}, "no host"),
    ({"reconnect_count": 0}, "reconnect_count"),
    ({"reconnect_backoff": 0.5}, "reconnect_backoff"),
    ({"backlog_ms": 50}, "backlog_ms"),
    ({"video_drop_ms": 5000}, "video_drop_ms"),
    ({"send_timeout_ms": 0}, "send_timeout_ms"),
    ({"audio_offset_ms": 900.0}, "audio_offset_ms"),
])
def test_bad_options_are_rejected_at_load_time(changes: dict[str, Any], fragment: str) -> None:
    o = RtmpSenderOptions(**{"url": URL, **changes})
    with pytest.raises(OptionError, match=fragment) as info:  # what the loader checks: declarations, validate()
        check_instance(o)
        RtmpSender.validate(o, {"video": H264})
    assert "secret" not in str(info.value) and "key" not in str(info.value).replace("/***", "")


def test_needs_a_linked_input() -> None:
    with pytest.raises(OptionError, match="at least one linked input"):
        RtmpSender.validate(RtmpSenderOptions(url=URL), {})
    RtmpSender.validate(RtmpSenderOptions(url=URL), {"audio": AAC})


def test_errors_are_described_without_the_url() -> None:
    err = av.error.ConnectionRefusedError(111, "Connection refused", URL)
    assert URL in str(err)  # PyAV puts the URL in the message...
    text = describe_error(err)  # ...we do not
    assert "sk_live" not in text and "Connection refused" in text and "111" in text
    assert "sk_live" not in describe_error(BrokenPipeError(32, "Broken pipe"))


def test_rate_window() -> None:
    w = RateWindow(1000)
    w.add(0, 5)
    w.add(500, 7)
    assert w.total(900) == 12
    assert w.total(1200) == 7  # the sample at 0 left the window
    assert w.values(2000) == []


# ---- drop policy --------------------------------------------------------------------------------------

def kinds(items: list[Item]) -> list[str]:
    return [("K" if it.key else "v") if it.kind == "video" else "a" for it in items]


def test_backlog_within_budget_keeps_everything() -> None:
    b = Backlog(limit_ns=3000 * 1_000_000, video_drop_ns=1000 * 1_000_000)
    dropped = []
    for ms in range(0, 900, 30):
        dropped += b.push(vitem(ms, key=ms == 0))
        dropped += b.push(aitem(ms + 5))
    assert dropped == [] and len(b) == 60 and 0 < b.span_ns() <= 900 * 1_000_000


def test_backlog_drops_non_keyframe_video_first_then_until_the_next_keyframe() -> None:
    b = Backlog(limit_ns=3000 * 1_000_000, video_drop_ns=500 * 1_000_000)
    dropped: list[Item] = []
    for ms in range(0, 1200, 100):  # keyframe every 400 ms, audio every 100 ms
        dropped += b.push(vitem(ms, key=ms % 400 == 0))
        dropped += b.push(aitem(ms))
    # audio and keyframes are never dropped at this level
    assert all(it.kind == "video" and not it.key for it in dropped)
    assert sum(1 for it in b.items if it.kind == "audio") == 12
    assert [it.dts_ns // 1_000_000 for it in b.items if it.kind == "video"] == [0, 400, 800]
    # a non-keyframe arriving while the queue is over budget and no keyframe follows in it is dropped,
    # and so is the next one: video waits for a keyframe
    assert b.need_key
    assert b.push(vitem(1250)) != []
    assert b.push(vitem(1300, key=True)) == [] and not b.need_key


def test_backlog_drops_the_oldest_beyond_its_limit_with_the_frames_that_depend_on_a_keyframe() -> None:
    b = Backlog(limit_ns=1000 * 1_000_000, video_drop_ns=0)
    dropped: list[Item] = []
    for ms in range(0, 1500, 100):
        dropped += b.push(vitem(ms, key=ms % 500 == 0))
        dropped += b.push(aitem(ms + 10))
    assert b.span_ns() <= 1000 * 1_000_000
    # video in the queue starts at a keyframe: nothing undecodable is left at its head
    first_video = next(it for it in b.items if it.kind == "video")
    assert first_video.key
    assert dropped and dropped[0].dts_ns == 0
    assert b.bytes == sum(len(it.packet.data) for it in b.items)


def test_video_drop_counts_the_queued_video_not_the_audio_ahead_of_it() -> None:
    """After a cut dropped the queued video, 1.5 s of audio still waits; fresh video behind it is not
    dropped (dropping it would not shorten that queue, and each picture would wait for the next keyframe);
    once the video itself spans more than video_drop_ms, non-keyframe video goes as before."""
    b = Backlog(limit_ns=3000 * 1_000_000, video_drop_ns=1000 * 1_000_000)
    for ms in range(0, 1500, 20):
        assert b.push(aitem(ms)) == []
    assert b.push(vitem(1500, key=True)) == []
    for ms in range(1533, 2400, 33):
        assert b.push(vitem(ms)) == [], ms
    assert b.span_ns() > 2000 * 1_000_000 and not b.need_key
    dropped = [it for ms in range(2400, 2700, 33) for it in b.push(vitem(ms))]
    assert dropped and all(it.kind == "video" and not it.key for it in dropped)


def test_backlog_drop_video_keeps_audio_and_keyframes_and_waits_for_the_next_keyframe() -> None:
    """After a cut the rate controller drops what the old link queued: every non-keyframe video packet
    (audio and keyframes stay, so what is left decodes), then incoming video until a keyframe."""
    b = Backlog(limit_ns=3000 * 1_000_000, video_drop_ns=0)
    for ms in range(0, 800, 100):
        b.push(vitem(ms, key=ms == 300))
        b.push(aitem(ms + 5))
    dropped = b.drop_video()
    assert [it.dts_ns // 1_000_000 for it in dropped] == [0, 100, 200, 400, 500, 600, 700]
    assert [(it.kind, it.dts_ns // 1_000_000) for it in b.items if it.kind == "video"] == [("video", 300)]
    assert sum(1 for it in b.items if it.kind == "audio") == 8
    assert b.bytes == sum(len(it.packet.data) for it in b.items)
    assert b.push(vitem(800)) != [] and b.push(aitem(805)) == []  # video waits for a keyframe, audio does not
    assert b.push(vitem(900, key=True)) == [] and not b.need_key


# ---- the start gate ---------------------------------------------------------------------------------------

MS = 1_000_000


def test_gate_waits_for_a_keyframe_but_sends_audio_at_once() -> None:
    g = StartGate(has_video=True)
    assert g.admit("audio", 100 * MS, True)[0]
    assert g.admit("video", 110 * MS, False) == (False, 0, "waiting_keyframe")
    assert g.admit("video", 143 * MS, True) == (True, 0, "")
    assert g.admit("video", 176 * MS, False) == (True, 0, "")


def test_gate_shifts_video_that_is_a_little_older_than_the_first_audio() -> None:
    g = StartGate(has_video=True)
    assert g.admit("audio", 100 * MS, True)[0]
    assert g.admit("video", 80 * MS, True) == (True, 20 * MS, "")
    assert g.admit("video", 113 * MS, False) == (True, 20 * MS, "")  # shift stays for the connection
    assert g.admit("audio", 121 * MS, True) == (True, 0, "")


def test_gate_drops_what_flv_would_reject() -> None:
    g = StartGate(has_video=True, max_shift_ns=50 * MS)
    assert g.admit("audio", 1000 * MS, True)[0]
    assert g.admit("video", 500 * MS, True) == (False, 0, "late")  # too old to shift: next keyframe
    assert g.admit("audio", 990 * MS, True) == (False, 0, "late")  # older than the connection's start
    assert g.admit("video", 1010 * MS, True)[0]
    assert g.admit("video", 1010 * MS, False) == (False, 0, "late")  # not after the previous one
    assert g.admit("video", 1043 * MS, False) == (False, 0, "waiting_keyframe")  # its reference is gone
    audio_only = StartGate(has_video=False)
    assert audio_only.admit("audio", 5 * MS, True)[0]


# ---- send_message ------------------------------------------------------------------------------------------

def test_message_args_are_checked() -> None:
    assert message_args({"text": "hi"}) == ("hi", 1, 0.0, False)
    assert message_args({"text": 42, "repeat_count": 5, "delay_ms": 10, "keyframe_only": True}) == (
        "42", 5, 10.0, True)
    for bad, fragment in (({}, "text"), ({"text": "x", "repeat_count": 0}, "repeat_count"),
                          ({"text": "x", "repeat_count": True}, "repeat_count"),
                          ({"text": "x", "delay_ms": -1}, "delay_ms"),
                          ({"text": "x", "keyframe_only": "yes"}, "keyframe_only"),
                          ({"text": "x", "colour": 1}, "colour"),
                          ({"text": "x" * 20000}, "bytes")):
        with pytest.raises(FieldError, match=fragment):
            message_args(bad)


# ---- the actor with a fake network ------------------------------------------------------------------------

class FakeNet:
    """Scripted connections: `refuse` attempts fail, `fail_mux_after` breaks a connection, `block`
    makes mux hang until aborted, `stats` is what the socket reports."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.refuse = 0
        self.refuse_always = False
        self.fail_mux_after: int | None = None
        self.block = False
        self.stats: tuple[int, int] | None = None
        self.conns: list[FakeConn] = []

    def __call__(self, url: str, params: Mapping[str, dict[str, Any]]) -> FakeConn:
        conn = FakeConn(self, url, dict(params))
        self.conns.append(conn)
        return conn

    def muxed(self) -> list[tuple[str, Packet, int, bytes | None]]:
        return [m for c in self.conns for m in c.muxed]


class FakeConn:
    def __init__(self, net: FakeNet, url: str, params: dict[str, dict[str, Any]]) -> None:
        self.net, self.url, self.params = net, url, params
        self.muxed: list[tuple[str, Packet, int, bytes | None]] = []
        self.new_headers: list[int] = []  # dts of the packets a new sequence header went before
        self.closed = False
        self.aborted = threading.Event()
        self.in_flight_limits: list[tuple[float, float, int]] = []

    def start(self) -> None:
        with self.net.lock:
            if self.net.refuse_always or self.net.refuse > 0:
                self.net.refuse -= 1
                raise av.error.ConnectionRefusedError(111, "Connection refused", self.url)

    def mux(self, kind: str, packet: Packet, offset: int, data: bytes | None = None,
            new_header: bool = False) -> None:
        if self.aborted.is_set():
            raise av.error.BrokenPipeError(32, "Broken pipe", self.url)
        if self.net.block:
            self.aborted.wait(10)
            raise av.error.BrokenPipeError(32, "Broken pipe", self.url)
        if self.net.fail_mux_after is not None and len(self.muxed) >= self.net.fail_mux_after:
            self.net.fail_mux_after = None
            raise av.error.BrokenPipeError(32, "Broken pipe", self.url)
        self.muxed.append((kind, packet, offset, data))
        if new_header:
            self.new_headers.append(packet.dts)

    def close(self) -> None:
        self.closed = True

    def locate(self, port: int, addresses: set[str]) -> None:
        return None

    def stats(self) -> tuple[int, int] | None:
        return self.net.stats

    def abort(self) -> bool:
        self.aborted.set()
        return True

    def limit_in_flight(self, bytes_per_s: float, slack_s: float, floor: int) -> int | None:
        self.in_flight_limits.append((bytes_per_s, slack_s, floor))
        return max(floor, int(bytes_per_s * slack_s))


class Harness:
    """A RtmpSender with a fake network; `events()` collects what the hooks returned."""

    def __init__(self, sender: RtmpSender, net: FakeNet) -> None:
        self.sender, self.net = sender, net
        self.seen: list[Event] = []

    def collect(self, actions: Any) -> None:
        self.seen += [a for a in actions or [] if isinstance(a, Event)]

    def tick(self) -> None:
        self.collect(self.sender.on_tick(0))

    def names(self) -> list[str]:
        return [e.name for e in self.seen]

    def wait_event(self, name: str, count: int = 1, timeout_s: float = 5.0) -> None:
        def seen() -> bool:
            self.tick()
            return self.names().count(name) >= count
        wait_for(seen, timeout_s, f"event {name} x{count}; got {self.names()}")

    def feed(self, frames: int, start: int = 0) -> None:
        """`frames` video frames (keyframe every 10, params on keyframes) with audio in between."""
        for i in range(start, start + frames):
            self.collect(self.sender.on_frame("video", vpkt(i, key=i % 10 == 0, params=i % 10 == 0)))
            self.collect(self.sender.on_frame("audio", apkt(i * 3 // 2, params=i == start)))


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(**options: Any) -> Harness:
        net = FakeNet()
        monkeypatch.setattr(RtmpSender, "connector", net)
        monkeypatch.setattr(RtmpSender, "prober", None)
        opts = RtmpSenderOptions(**{"url": URL, "reconnect_interval_ms": 20, **options})
        sender = RtmpSender(opts)
        sender.setup(Context(node_id="push", input_formats={"video": H264, "audio": AAC}))
        h = Harness(sender, net)
        made.append(h)
        return h

    yield build
    for h in made:
        h.net.block = False
        for c in h.net.conns:
            c.aborted.set()
        if h.sender.link is not None:
            h.sender.link.finish("stop", 2.0)
            assert h.sender.link.ended.is_set()


def test_connects_once_both_inputs_sent_params_and_sends_in_arrival_order(make: Callable[..., Harness]) -> None:
    h = make()
    h.feed(30)
    h.wait_event("connected")
    wait_for(lambda: len(h.net.muxed()) == 60, 5, "all packets muxed")
    conn = h.net.conns[0]
    assert set(conn.params) == {"video", "audio"}
    muxed = conn.muxed
    assert muxed[0][0] == "video" and muxed[0][1].keyframe
    # the first packet muxed is time zero on the wire; audio is moved 40 ms later
    v0 = muxed[0][1]
    assert v0.dts - muxed[0][2] == 0
    a = next(m for m in muxed if m[0] == "audio")
    assert (a[1].dts - a[2]) * TB_A == pytest.approx(a[1].dts * TB_A - v0.dts * TB_V + Fraction(40, 1000), abs=1e-4)
    h.collect(h.sender.stop())
    assert h.names()[-1] == "stream_ended"
    ended = h.seen[-1].data
    assert ended["reason"] == "stop" and ended["trailer"] is True and ended["packets"] == 60
    assert conn.closed
    m = h.sender.metrics()
    assert m["state"] == "ended" and m["packets_sent"] == 60 and m["dropped"]["total"] == 0
    assert "sk_live" not in repr(h.seen) and "sk_live" not in repr(m)


def test_lost_connection_reconnects_and_waits_for_a_keyframe(make: Callable[..., Harness]) -> None:
    h = make()
    h.net.fail_mux_after = 12
    h.feed(20)
    h.wait_event("reconnect_success")
    names = h.names()
    assert names.index("connected") < names.index("connection_lost") < names.index("reconnect_start") \
        < names.index("reconnect_success")
    lost = h.seen[names.index("connection_lost")].data
    assert lost["reason"] == "error" and "Broken pipe" in lost["error"] and "sk_live" not in repr(lost)
    h.feed(20, start=20)
    wait_for(lambda: any(m[0] == "video" for m in h.net.conns[1].muxed), 5, "video on the new connection")
    second = h.net.conns[1].muxed
    first_video = next(m for m in second if m[0] == "video")
    assert first_video[1].keyframe
    # timestamps keep going forward across the reconnect
    last_old = max((m[1].dts - m[2]) * m[1].time_base for m in h.net.conns[0].muxed if m[0] == "video")
    assert (first_video[1].dts - first_video[2]) * TB_V > last_old
    assert h.sender.metrics()["reconnects"] == 1 and h.sender.metrics()["connection_losses"] == 1


def test_refused_attempts_then_reconnect_fail_and_retry_goes_on(make: Callable[..., Harness]) -> None:
    h = make(reconnect_count=3)
    h.net.refuse = 4
    h.feed(5)
    h.wait_event("connected")
    names = h.names()
    assert names.count("connect_failed") == 4
    assert names.count("reconnect_fail") == 1
    fail = h.seen[names.index("reconnect_fail")].data
    assert fail["attempts"] == 3 and fail["action"] == "retry" and "refused" in fail["error"]
    assert names.count("reconnect_start") == 4  # attempts 2..5
    assert names.index("reconnect_fail") < names.index("connected") < names.index("reconnect_success")


def test_stop_policy_reports_connect_error_and_the_actor_stops(make: Callable[..., Harness]) -> None:
    h = make(reconnect_count=2, on_reconnect_fail="stop")
    h.net.refuse_always = True
    h.feed(5)
    h.wait_event("reconnect_fail")
    assert h.seen[h.names().index("reconnect_fail")].data["action"] == "stop"
    with pytest.raises(ConnectError, match="after 2 attempts") as info:
        for _ in range(100):
            h.tick()
    assert "sk_live" not in str(info.value) and "rtmp://127.0.0.1:1935/live/***" in str(info.value)
    assert h.sender.metrics()["state"] == "failed"


def test_blocked_mux_is_a_send_timeout_then_a_reconnect(make: Callable[..., Harness]) -> None:
    h = make(send_timeout_ms=200)
    h.feed(5)
    h.wait_event("connected")
    wait_for(lambda: len(h.net.muxed()) > 0, 5, "first packets")
    h.net.block = True
    h.feed(5, start=5)
    h.wait_event("send_timeout")
    h.net.block = False
    h.wait_event("reconnect_success")
    names = h.names()
    assert names.index("send_timeout") < names.index("connection_lost") < names.index("reconnect_success")
    assert h.seen[names.index("send_timeout")].data["cause"] == "mux_blocked"
    assert h.seen[names.index("connection_lost")].data["reason"] == "send_timeout"


def test_no_acknowledgement_while_bytes_wait_is_a_send_timeout(make: Callable[..., Harness]) -> None:
    h = make(send_timeout_ms=200)
    h.feed(5)
    h.wait_event("connected")
    h.net.stats = (5000, 777)  # 5000 bytes waiting, the server acknowledges nothing more
    h.wait_event("send_timeout")
    assert h.seen[h.names().index("send_timeout")].data["cause"] == "no_ack"
    h.net.stats = None
    h.wait_event("reconnect_success")
    assert h.sender.metrics()["send_timeouts"] == 1


def test_send_message_goes_into_the_next_video_frames(make: Callable[..., Harness]) -> None:
    h = make()
    clock = [0]
    h.sender.clock = lambda: clock[0]
    first = reply(h.sender.on_control("send_message", {"text": "q\x00\x00\x01?", "repeat_count": 3}))
    assert first == {"id": 1, "frames": 3}
    assert reply(h.sender.on_control("send_message", {"text": "later", "delay_ms": 100})) == {"id": 2, "frames": 1}
    assert reply(h.sender.on_control("send_message", {"text": "key", "repeat_count": 2, "keyframe_only": True})) == {
        "id": 3, "frames": 2}
    h.feed(5)  # frame 0 is a keyframe
    clock[0] = 100_000_000
    h.feed(20, start=5)  # frames 10 and 20 are keyframes
    wait_for(lambda: sum(1 for m in h.net.muxed() if m[0] == "video") == 25, 5, "video muxed")
    carried: dict[int, list[bytes]] = {}
    for kind, pkt, _, _ in h.net.muxed():
        if kind == "video":
            carried[pkt.dts // 3000] = [p for u, p in parse_sei_payloads(pkt.data) if u == OUR_UUID]
    assert carried[0] == [b"q\x00\x00\x01?", b"key"]
    assert carried[1] == carried[2] == [b"q\x00\x00\x01?"]
    assert carried[3] == carried[4] == []
    assert carried[5] == [b"later"]
    assert carried[10] == [b"key"]
    assert carried[20] == []
    h.wait_event("sei_sent", count=3)
    sent = {e.data["id"]: e.data for e in h.seen if e.name == "sei_sent"}
    assert sent[1]["frames"] == 3 and sent[2]["frames"] == 1 and sent[3]["frames"] == 2
    assert h.sender.metrics()["sei_sent"] == 3


def test_send_message_needs_video(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RtmpSender, "connector", FakeNet())
    monkeypatch.setattr(RtmpSender, "prober", None)
    sender = RtmpSender(RtmpSenderOptions(url=URL))
    sender.setup(Context(node_id="push", input_formats={"audio": AAC}))
    try:
        with pytest.raises(FieldError, match="video"):
            sender.on_control("send_message", {"text": "x"})
    finally:
        assert sender.link is not None
        sender.link.finish("stop", 2.0)


def test_metrics_shape(make: Callable[..., Harness]) -> None:
    """After 10 video and 10 audio packets went out on one connection, the metrics say exactly that."""
    h = make()
    h.feed(10)
    h.wait_event("connected")
    wait_for(lambda: len(h.net.muxed()) == 20, 5, "all 20 packets muxed")
    m = h.sender.metrics()
    sizes = {"video": 0, "audio": 0}
    for kind, pkt, _, _ in h.net.muxed():
        sizes[kind] += len(pkt.data)
    assert m["state"] == "connected"
    assert m["url"] == "rtmp://127.0.0.1:1935/live/***"
    assert m["packets_sent"] == 20 and m["packets_sent_by_stream"] == {"video": 10, "audio": 10}
    assert m["bytes_sent"] == sizes["video"] + sizes["audio"]
    assert (m["connect_attempts"], m["reconnects"], m["connection_losses"], m["send_timeouts"]) == (1, 0, 0, 0)
    assert m["dropped"] == {"video": 0, "audio": 0, "total": 0} and m["dropped_reasons"] == {}
    assert (m["unsent_bytes"], m["backlog_packets"], m["backlog_bytes"]) == (0, 0, 0)
    assert m["queued_ms"] == m["backlog_ms"] == m["inflight_ms"] == 0.0
    # the bit rate is what went out within the window (all of it: the test takes far less than 2 s)
    window_s = 2.0  # the sender's rate window (RATE_WINDOW_NS)
    for kind in ("video", "audio"):
        assert m["bitrate_kbps"][kind] == pytest.approx(sizes[kind] * 8 / window_s / 1000, abs=0.051), kind
    assert m["bitrate_kbps"]["total"] == pytest.approx(m["bitrate_kbps"]["video"] + m["bitrate_kbps"]["audio"],
                                                       abs=0.11)
    assert 0.0 <= m["mux_block_ms"]["avg"] <= m["mux_block_ms"]["max"] < 1000.0
    assert m["sei_sent"] == 0 and m["messages_pending"] == 0


# ---- the socket helpers on a real loopback connection --------------------------------------------------------

@pytest.fixture
def loopback() -> Iterator[tuple[socket.socket, int]]:
    """A connected TCP client socket on loopback and the server's port (the server side accepted)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port))
    peer, _ = srv.accept()
    try:
        yield cli, port
    finally:
        cli.close()
        peer.close()
        srv.close()


def test_socket_found_measured_and_shut_down(loopback: tuple[socket.socket, int]) -> None:
    cli, port = loopback
    found = find_socket(port, {"127.0.0.1"})
    assert found is not None and found[0] == cli.fileno()
    assert find_socket(port, {"10.9.9.9"}) is None
    cli.sendall(b"x" * 1000)
    wait_for(lambda: (socket_stats(*found) or (1, 0))[1] >= 1000, 2, "1000 bytes acknowledged")
    assert shutdown_socket(*found)
    with pytest.raises(OSError):
        cli.sendall(b"y")
    assert socket_stats(found[0], found[1] + 1) is None  # another inode: not touched


def test_the_socket_holds_at_most_a_round_trip_plus_the_slack_of_the_plan(
        loopback: tuple[socket.socket, int]) -> None:
    """`limit_in_flight` sets SO_SNDBUF (which the kernel doubles for its overhead) to the plan's bytes over
    one round trip (loopback: well under 5 ms) plus the slack, never under the floor; a socket that is
    gone is left alone."""
    cli, port = loopback
    found = find_socket(port, {"127.0.0.1"})
    assert found is not None
    cli.sendall(b"x" * 1000)  # a round trip measured
    wait_for(lambda: (socket_stats(*found) or (1, 0))[1] >= 1000, 2, "1000 bytes acknowledged")
    bound = limit_in_flight(*found, 1_000_000, 0.075, 8192)  # 8 Mbit/s: 75 ms + the round trip
    assert bound is not None and 75_000 <= bound < 80_000, bound
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * bound
    assert limit_in_flight(*found, 10_000, 0.075, 8192) == 8192  # 80 kbit/s: the floor
    assert cli.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * 8192
    assert limit_in_flight(found[0], found[1] + 1, 1_000_000, 0.075, 8192) is None


@pytest.mark.parametrize(("abr", "in_flight_ms", "bounded"),
                         [("custom", 75, True), ("custom", 0, False), ("obs", 75, False), ("off", 75, False)])
def test_the_rate_controller_bounds_the_socket_from_its_plan(make: Callable[..., Harness], abr: str,
                                                              in_flight_ms: int, bounded: bool) -> None:
    """With a mode of this engine's controller the socket is bounded from its plan (video target + audio +
    probe) with `abr_in_flight_ms` of slack; `abr_in_flight_ms: 0`, the OBS reference and no abr leave
    the kernel's own bound."""
    abr_options = {} if abr == "off" else {"abr": abr, "abr_encoder": "venc", "abr_target_kbps": 1000,
                                             "abr_min_kbps": 200, "abr_initial_kbps": 600}
    h = make(abr_in_flight_ms=in_flight_ms, **abr_options)
    h.feed(5)
    h.wait_event("connected")
    h.net.stats = (0, 0)
    if bounded:
        wait_for(lambda: (h.tick(), bool(h.net.conns[-1].in_flight_limits))[1], 3, "the socket bounded")
        bytes_per_s, slack_s, floor = h.net.conns[-1].in_flight_limits[0]
        assert 600 * 125 <= bytes_per_s <= 700 * 125 and slack_s == 0.075 and floor > 0  # 600 kbit/s + audio
    else:
        deadline = time.monotonic() + 0.6  # the watchdog runs every 50 ms, the controller every 250 ms
        while time.monotonic() < deadline:
            h.tick()
            time.sleep(0.05)
        assert h.net.conns[-1].in_flight_limits == []


def test_probe_needs_an_rtmp_answer_in_time() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    modes = ["silent", "rtmp", "close"]

    def serve() -> None:
        for mode in modes:
            conn, _ = srv.accept()
            with conn, contextlib.suppress(OSError):  # the client may reset a connection it gave up on
                if mode == "close":
                    continue  # answers by closing: alive, FFmpeg gets to try
                conn.recv(1537)
                if mode == "rtmp":
                    conn.sendall(b"\x03" + bytes(1536 * 2))
                conn.recv(1)  # until the client closes

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with pytest.raises(TimeoutError):
            probe_rtmp("rtmp", "127.0.0.1", port, 0.3)  # accepts, never answers
        assert "127.0.0.1" in probe_rtmp("rtmp", "127.0.0.1", port, 2.0)
        assert "127.0.0.1" in probe_rtmp("rtmp", "127.0.0.1", port, 2.0)
    finally:
        srv.close()
        t.join(2)
    with pytest.raises(ConnectionRefusedError):
        probe_rtmp("rtmp", "127.0.0.1", port, 1.0)


def test_new_sps_pps_make_a_new_sequence_header_at_each_change(make: Callable[..., Harness]) -> None:
    h = make()
    h.feed(10)
    h.wait_event("connected")
    extradata = b"\x00\x00\x00\x01gNEWSPS\x00\x00\x00\x01hNEWPPS"
    new_params = {**VPARAMS, "extradata": extradata, "width": 320, "height": 180}
    # an encoder reopened at a new size (10, 20: same new params) and back at the first one (30)
    for i, params in ((10, new_params), (11, None), (20, new_params), (30, VPARAMS), (40, VPARAMS)):
        h.collect(h.sender.on_frame("video", Packet(SLICE + bytes([i]), i * 3000, i * 3000, TB_V,
                                                    params is not None, params)))
    wait_for(lambda: sum(1 for m in h.net.muxed() if m[0] == "video") == 15, 5, "video muxed")
    sent = {m[1].dts // 3000: m[3] for m in h.net.muxed() if m[0] == "video"}
    assert sent[0] is None  # the header's own SPS/PPS: nothing added
    assert sent[10] == extradata + SLICE + bytes([10])  # in-band for the decoder, and a new header
    assert sent[11] is None and sent[20] is None  # the connection's header is the new one already
    assert sent[30] is not None and sent[30].startswith(VPARAMS["extradata"])  # back: a header again
    assert sent[40] is None
    assert [dts // 3000 for c in h.net.conns for dts in c.new_headers] == [10, 30]
    h.wait_event("stream_params_changed", count=2)
    changed = [e.data for e in h.seen if e.name == "stream_params_changed"]
    assert [(c["width"], c["height"]) for c in changed] == [(320, 180), (VPARAMS["width"], VPARAMS["height"])]


def test_stop_never_blocks_on_a_server_that_stopped_reading(make: Callable[..., Harness]) -> None:
    h = make(send_timeout_ms=30000)
    h.feed(5)
    h.wait_event("connected")
    h.net.block = True
    h.feed(5, start=5)
    link = h.sender.link
    assert link is not None
    wait_for(lambda: link._mux_started_ns is not None, 5, "a mux call blocked")
    started = time.monotonic()
    h.collect(h.sender.stop())
    took = time.monotonic() - started
    assert took < 1.1, f"stop() took {took:.2f}s"
    assert h.names()[-1] == "stream_ended" and h.seen[-1].data["trailer"] is False
    assert "connection_lost" not in h.names()


def test_a_size_change_reaches_the_flv_as_a_new_sequence_header(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    """The real FlvConnection (FFmpeg's FLV muxer, into a file instead of RTMP) fed by a real encoder
    switching 640x360 -> 320x180 -> 640x360: the file holds three sequence headers and decodes, by
    Debian's ffprobe/ffmpeg, frames of both sizes with no error."""
    path = tmp_path / "switch.flv"
    monkeypatch.setattr(RtmpSender, "connector", lambda url, params: FlvConnection(str(path), params))
    monkeypatch.setattr(RtmpSender, "prober", None)
    sender = RtmpSender(RtmpSenderOptions(url=URL))
    sender.setup(Context(node_id="push", input_formats={"video": H264}))
    h = Harness(sender, FakeNet())
    fps = 15
    enc = ActorHarness(VideoEncoder, {"keepalive_ms": 0, "gop_s": 1}, input_formats={"in": VideoFormat(640, 360, fps)})
    for i in range(3 * fps):
        if i in (fps, 2 * fps):
            enc.set(resolution="180p" if i == fps else "source")
        img = np.zeros((360, 640, 3), np.uint8)
        img[:, :, 0] = (np.arange(640) + 8 * i) % 256
        for action in enc.frame("in", Frame(img, NS + i * NS // fps)):
            if isinstance(action, Emit) and isinstance(action.media, Packet):
                h.collect(sender.on_frame("video", action.media))
    for action in enc.stop():
        if isinstance(action, Emit) and isinstance(action.media, Packet):
            h.collect(sender.on_frame("video", action.media))
    wait_for(lambda: sender.metrics()["packets_sent"] == 3 * fps, 10, "every packet muxed")
    h.collect(sender.stop())
    assert h.names().count("stream_params_changed") == 2, h.names()
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=width,height",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True, timeout=60, check=True)
    sizes = [tuple(line.split(",")[:2]) for line in probe.stdout.split() if line.count(",") >= 1 and line[0].isdigit()]
    runs = [(size, len(list(group))) for size, group in itertools.groupby(sizes)]
    assert runs == [(("640", "360"), fps), (("320", "180"), fps), (("640", "360"), fps)], runs
    decode = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    # FFmpeg's FLV demuxer reports each AVC sequence header after the first as new extradata
    debug = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_packets", "-show_data_hash",
                            "sha256", "-of", "json", str(path)], capture_output=True, text=True, timeout=60, check=True)
    side = [p for p in json.loads(debug.stdout)["packets"] if p.get("side_data_list")]
    assert len(side) == 2, [p.get("side_data_list") for p in side]
