"""The preview's pure functions, and the actor in the harness with its real HTTP endpoint on 127.0.0.1:
the rate cap, the snapshot and MJPEG parts a client reads, a taken port and a missing display refused
with PreviewError (1337)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest
from mediaengine.actors._mjpeg import BOUNDARY, MjpegServer, mjpeg_part
from mediaengine.actors.preview import Preview, due, encode_jpeg, shrink
from mediaengine.sdk.errors import PreviewError
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.testing import ActorHarness

MS = 1_000_000
FMT = {"in": VideoFormat(320, 180, 30.0)}


def picture(v: int) -> np.ndarray:
    img = np.zeros((180, 320, 3), np.uint8)
    img[:, :160] = (v, 0, 0)
    img[:, 160:] = (0, 0, 255 - v)
    return img


def decode(jpeg: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def test_due_caps_the_rate_and_shrink_keeps_the_aspect() -> None:
    assert due(None, 0, 10) and not due(0, 50 * MS, 10) and due(0, 100 * MS, 10) and due(0, 99_500_000, 10)
    assert shrink(picture(1), 160).shape == (90, 160, 3) and shrink(picture(1), 0).shape == (180, 320, 3)
    assert np.abs(decode(encode_jpeg(picture(200), 90))[90, 80].astype(int) - (200, 0, 0)).max() <= 6


def test_http_preview_serves_snapshot_stream_and_page_at_the_capped_rate() -> None:
    h = ActorHarness(Preview, {"mode": "http", "max_fps": 10}, input_formats=FMT, node_id="prev")
    url = h.control("url")["url"]
    try:
        assert url.startswith("http://127.0.0.1:") and h.events("preview_ready")[0].data["url"] == url
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(url + "snapshot.jpg", timeout=5)  # no picture yet
        for i in range(6):  # 6 frames 33 ms apart: at 10 fps two are shown (t=0 and t=99 ms, 1 ms of jitter)
            h.clock.now_ns = i * 33 * MS
            h.frame("in", Frame(picture(40 * i), pts_ns=h.clock.now_ns))
        assert h.metrics()["shown"] == 2 and h.metrics()["skipped"] == 4
        with urllib.request.urlopen(url + "snapshot.jpg", timeout=5) as r:
            assert r.headers["Content-Type"] == "image/jpeg"
            assert np.abs(decode(r.read())[90, 80].astype(int) - (120, 0, 0)).max() <= 6  # the newest shown
        with urllib.request.urlopen(url, timeout=5) as r:
            assert b"<img id='live' src='stream.mjpg'" in r.read()
        with urllib.request.urlopen(url + "stream.mjpg", timeout=5) as r:
            assert r.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
            head = r.read(len(mjpeg_part(b"")) + 8)
            assert head.startswith(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n".encode())
    finally:
        h.actor.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)  # stopped: the port is closed


def test_a_taken_port_is_a_preview_error() -> None:
    server = MjpegServer(0)
    try:
        with pytest.raises(PreviewError, match=f"127.0.0.1:{server.port}.*pick another port") as e:
            ActorHarness(Preview, {"mode": "http", "port": server.port}, input_formats=FMT)
        assert e.value.code == 1337
    finally:
        server.close()
    with socket.socket() as s:  # the server let its port go
        s.bind(("127.0.0.1", server.port))


def test_window_without_a_display_is_a_preview_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(PreviewError, match="no display: DISPLAY is not set"):
        ActorHarness(Preview, {"mode": "window"}, input_formats=FMT)
    h = ActorHarness(Preview, {"mode": "auto"}, input_formats=FMT)  # auto on a headless machine: HTTP
    try:
        assert h.control("url")["url"].startswith("http://127.0.0.1:")
    finally:
        h.actor.stop()


def test_auto_serves_http_when_the_window_cannot_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":4093")  # no X server there
    h = ActorHarness(Preview, {"mode": "auto"}, input_formats=FMT)
    try:
        (ready,) = h.events("preview_ready")
        assert ready.data["port"] == h.control("url")["port"] and ready.data["no_window"]
    finally:
        h.actor.stop()
