"""The shipped capture topologies pushed to a real nginx-rtmp and pulled back with Debian's ffmpeg:
camera_to_rtmp.yaml as it ships (the lavfi camera), and screencast.yaml on an Xvfb display the test
starts and paints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from tests.enginekit import Engine, wait_for
from tests.helpers import ffprobe_json, start_recorder
from tests.xdisplay import paint_root, xvfb
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp]


def middle_frame(path: Path) -> np.ndarray:
    """A picture from the middle of a recorded stream (rgb24); fails if fewer than 60 frames decode."""
    with av.open(str(path)) as c:
        count = sum(1 for _ in c.decode(video=0))
    assert count >= 60, f"only {count} frames relayed"
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i == count // 2:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError("the second decode ended early")


def push_and_pull(eng: Engine, url: str, flv: Path) -> dict[str, object]:
    """Once `eng` pushes, copy what the server relays into `flv` with Debian's ffmpeg until the stream
    ends; the engine must exit 0.  Returns ffprobe's video stream of the copy."""
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20,
             "the push connected")
    recorder = start_recorder(url, flv)  # exits once the stream has ended
    try:
        assert eng.wait(60) == 0, eng.log
        recorder.wait(30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(10)
    (video,) = ffprobe_json(flv, "-show_streams")["streams"]
    return dict(video)


def test_camera_to_rtmp_pushes_the_lavfi_camera(engine_runner: Callable[..., Engine], rtmp_server: RtmpServer,
                                                tmp_path: Path) -> None:
    url = rtmp_server.url(stream="cam")
    eng = engine_runner("topologies/camera_to_rtmp.yaml", "--duration", "8", env={"PUSH_URL": url})
    video = push_and_pull(eng, url, tmp_path / "cam.flv")
    assert video["codec_name"] == "h264" and (video["width"], video["height"]) == (1280, 720)
    pic = middle_frame(tmp_path / "cam.flv")  # decodes, and enough frames were relayed
    assert pic.shape == (720, 1280, 3) and pic.std() > 20  # the test picture, not a blank frame
    assert eng.log.count("node cam started") == 1, eng.log  # never restarted


def test_screencast_pushes_the_x11_screen(engine_runner: Callable[..., Engine], rtmp_server: RtmpServer,
                                          tmp_path: Path) -> None:
    url = rtmp_server.url(stream="screen")
    flv = tmp_path / "screen.flv"
    with xvfb(1280, 720) as display:
        paint_root(display, 1280, 720, [(0, 0, 1280, 720, (0, 0, 200)), (0, 0, 640, 360, (220, 40, 40))])
        eng = engine_runner("topologies/screencast.yaml", "--duration", "8", "--set", f"scr.display={display}",
                            env={"PUSH_URL": url})
        video = push_and_pull(eng, url, flv)
    assert video["codec_name"] == "h264" and (video["width"], video["height"]) == (1280, 720)
    pic = middle_frame(flv).astype(np.int16)
    # H.264 is lossy: compare the insides of the painted areas (away from edges and the pointer)
    assert np.abs(pic[40:320, 40:600].mean(axis=(0, 1)) - (220, 40, 40)).max() < 12
    assert np.abs(pic[420:680, 700:1240].mean(axis=(0, 1)) - (0, 0, 200)).max() < 12


def test_screencast_without_a_display_fails_with_display_error(engine_runner: Callable[..., Engine],
                                                               tmp_path: Path) -> None:
    eng = engine_runner("topologies/screencast.yaml", env={"PUSH_URL": "rtmp://127.0.0.1:9/live/none",
                                                           "DISPLAY": "", "WAYLAND_DISPLAY": ""})
    node = wait_for(lambda: (n := eng.node("scr"))["last_error"] and n, 30, "scr to fail")
    assert "DISPLAY is not set" in node["last_error"], node
    eng.stop(30)
