"""The `camera` and `screen` sources in-process (ActorHarness), on FFmpeg's real input devices.

No machine here has a camera: FFmpeg's `lavfi` input device stands in for one, opened by the very code
that opens a V4L2 device (`av.open(target, format=...)`).  A V4L2 open is still exercised for real
where no camera is needed: an absent node and a node that is not a capture device (/dev/null).
"""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import av
import av.error
import numpy as np
import pytest
from mediaengine.actors.camera import Camera
from mediaengine.actors.screen import Screen, display_to_capture
from mediaengine.cli.main import main
from mediaengine.sdk.actor import Emit, Event
from mediaengine.sdk.capture import (
    OPEN_OPTIONS,
    DeviceSpec,
    camera_open_error,
    find_video_devices,
    mode_options,
    parse_device,
    resolve_device,
    video_to_rgb,
)
from mediaengine.sdk.errors import (
    DeviceAccessError,
    DeviceBusyError,
    DeviceLostError,
    DeviceNotFoundError,
    DisplayError,
    OptionError,
)
from mediaengine.sdk.formats import NS, Frame
from mediaengine.testing import ActorHarness

IV = round(NS / 30)  # the output frame interval at 30 fps


def lavfi(graph: str) -> str:
    return f"lavfi:{graph}"


def device_frames(graph: str, n: int, width: int, height: int) -> list[np.ndarray]:
    """The first `n` pictures of a lavfi graph decoded straight with PyAV, scaled like the camera does (and
    opened like it: the frame FFmpeg reads while it probes is not kept, `OPEN_OPTIONS`)."""
    out = []
    with av.open(graph, format="lavfi", container_options=OPEN_OPTIONS) as c:
        for frame in c.decode(video=0):
            out.append(video_to_rgb(frame, width, height))
            if len(out) == n:
                break
    return out


def frames(h: ActorHarness) -> list[Frame]:
    return [f for f in h.emitted("out") if isinstance(f, Frame)]


# ---- naming a device ------------------------------------------------------------------------------

@pytest.mark.parametrize(("device", "spec"), [
    ("/dev/video0", DeviceSpec("v4l2", "/dev/video0")),
    ("2", DeviceSpec("v4l2", "/dev/video2")),
    ("v4l2:/dev/video1", DeviceSpec("v4l2", "/dev/video1")),
    ("video4linux2:/dev/video1", DeviceSpec("v4l2", "/dev/video1")),
    ("lavfi:testsrc2=size=1280x720:rate=30", DeviceSpec("lavfi", "testsrc2=size=1280x720:rate=30")),
    ("x11grab::0.0+10,20", DeviceSpec("x11grab", ":0.0+10,20")),
    ("auto", None),
])
def test_device_strings_name_a_device(device: str, spec: DeviceSpec | None) -> None:
    assert parse_device(device) == spec


@pytest.mark.parametrize(("device", "fragment"), [
    ("", "is not a device path"),
    ("webcam", "is not a device path"),
    ("lavfi:", "is not a device path"),
    ("nosuchdev:/dev/video0", "'nosuchdev' is not an input device of this FFmpeg build"),
])
def test_a_malformed_device_string_is_refused_at_load(device: str, fragment: str) -> None:
    with pytest.raises(OptionError, match=fragment) as info:
        ActorHarness(Camera, {"device": device}, node_id="cam")
    assert "lavfi:testsrc2" in str(info.value)  # the message shows the accepted forms


def test_auto_takes_the_first_video_node_in_numeric_order(tmp_path: Path) -> None:
    for name in ("video10", "video2", "videoX", "media0"):
        (tmp_path / name).touch()
    assert find_video_devices(tmp_path) == [str(tmp_path / "video2"), str(tmp_path / "video10")]
    assert resolve_device("auto", tmp_path) == DeviceSpec("v4l2", str(tmp_path / "video2"))


def test_auto_without_any_video_node_names_what_it_looked_for(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Camera, "dev_dir", str(tmp_path))
    with pytest.raises(DeviceNotFoundError, match=rf"no capture device found \(looked for {tmp_path}/video\*\)"):
        ActorHarness(Camera, {"device": "auto"}, node_id="cam")


def test_mode_options_go_only_to_formats_that_take_a_mode() -> None:
    v4l2 = DeviceSpec("v4l2", "/dev/video0")
    assert mode_options(v4l2, 1280, 720, 30.0) == {"video_size": "1280x720", "framerate": "30"}
    assert mode_options(v4l2, 640, 480, 30000 / 1001, "mjpeg") == {
        "video_size": "640x480", "framerate": "30000/1001", "input_format": "mjpeg"}
    assert mode_options(DeviceSpec("lavfi", "testsrc2"), 1280, 720, 30.0, "mjpeg") == {}


# ---- opening: every failure is typed and names the device ------------------------------------------

def test_an_absent_v4l2_device_is_device_not_found() -> None:
    with pytest.raises(DeviceNotFoundError, match=r"capture device /dev/video57 not found .*plug the camera in"):
        ActorHarness(Camera, {"device": "v4l2:/dev/video57"}, node_id="cam")


def test_a_node_that_is_no_camera_is_device_not_found() -> None:
    with pytest.raises(DeviceNotFoundError, match=r"/dev/null is not a video capture device"):
        ActorHarness(Camera, {"device": "/dev/null"}, node_id="cam")


def test_a_lavfi_graph_ffmpeg_cannot_build_is_named() -> None:
    with pytest.raises(DeviceNotFoundError, match=r"FFmpeg cannot open capture device lavfi:nosuchfilter=1"):
        ActorHarness(Camera, {"device": lavfi("nosuchfilter=1")}, node_id="cam")


@pytest.mark.parametrize(("code", "cls", "fragment"), [
    (errno.EBUSY, DeviceBusyError, "/dev/video0 is busy: another program is using it"),
    (errno.EACCES, DeviceAccessError, "no permission to open capture device /dev/video0"),
    (errno.ENODEV, DeviceNotFoundError, "capture device /dev/video0 not found"),
])
def test_ffmpeg_errors_of_a_busy_or_forbidden_device_map_to_their_codes(code: int, cls: type, fragment: str) -> None:
    """A busy or forbidden camera cannot be staged here (no camera; tests run as root): the error FFmpeg
    returns for it (built by PyAV's own `err_check`, as for a real open) maps to its typed error."""
    with pytest.raises(av.error.FFmpegError) as info:
        av.error.err_check(-code, "/dev/video0")
    err = camera_open_error(DeviceSpec("v4l2", "/dev/video0"), info.value)
    assert type(err) is cls and fragment in err.message
    assert err.code in (1320, 1321, 1323)


# ---- capturing --------------------------------------------------------------------------------------

def test_camera_emits_the_device_pictures_scaled_to_the_declared_size() -> None:
    graph = "testsrc2=size=320x240:rate=30"
    h = ActorHarness(Camera, {"device": lavfi(graph), "width": 160, "height": 120, "fps": 30}, node_id="cam")
    for k in range(1000, 1010):
        h.tick(k * IV + 1_000)  # ticks a little late, as in an actor process
    out = frames(h)
    assert [f.seq for f in out] == list(range(1000, 1010))
    assert [f.pts_ns for f in out] == [k * IV for k in range(1000, 1010)]
    expected = device_frames(graph, 10, 160, 120)
    for f, want in zip(out, expected, strict=True):
        assert f.data.shape == (120, 160, 3) and f.data.dtype == np.uint8
        assert np.array_equal(f.data, want)  # device picture i on output frame i: none skipped, none repeated
    assert h.zero_copy("out") == 10  # rendered into the lent ring slot

    (opened,) = h.events("capture_opened")
    assert opened.data == {"device": "lavfi:" + graph, "format": "lavfi", "width": 320, "height": 240, "fps": 30.0,
                           "pix_fmt": "yuv420p", "codec": "wrapped_avframe", "requested": None, "as_requested": None,
                           "output": {"width": 160, "height": 120, "fps": 30.0}}
    assert isinstance(h.actions[0], Event)  # announced before the first frame
    m = h.metrics()
    assert (m["capture_width"], m["capture_height"], m["capture_fps"], m["capture_pix_fmt"]) == (320, 240, 30.0,
                                                                                                 "yuv420p")
    assert m["frames_emitted"] == 10 and m["frames_read"] == 10 and m["resyncs"] == 0
    h.stop()


@pytest.mark.parametrize(("rate", "step"), [(60, 2), (15, 0.5)])
def test_device_frames_are_dropped_or_repeated_to_hold_the_output_rate(rate: int, step: float) -> None:
    graph = f"testsrc2=size=160x120:rate={rate}"
    h = ActorHarness(Camera, {"device": lavfi(graph), "width": 160, "height": 120, "fps": 30}, node_id="cam")
    for k in range(12):
        h.tick(k * IV)
    device = device_frames(graph, 30, 160, 120)
    for i, f in enumerate(frames(h)):
        assert np.array_equal(f.data, device[int(i * step)]), f"output frame {i}"
    assert h.metrics()["frames_read"] == (1 + int(11 * step) if step < 1 else 1 + 11 * int(step))
    h.stop()


def test_catching_up_after_a_late_tick_reads_only_what_is_due() -> None:
    h = ActorHarness(Camera, {"device": lavfi("testsrc2=size=64x48:rate=30"), "width": 64, "height": 48},
                     node_id="cam")
    h.tick(0)
    h.tick(4 * IV)  # three frames late: 1, 2, 3 and 4 are emitted now, from device frames 1..4
    assert [f.seq for f in frames(h)] == [0, 1, 2, 3, 4]
    assert h.metrics()["frames_read"] == 5
    h.tick(500 * IV)  # a long stall: jump to the current frame, re-anchoring the device clock
    assert frames(h)[-1].seq == 500 and h.metrics()["frames_read"] <= 6 + 8
    h.stop()


def test_lavfi_is_read_in_real_time_not_as_fast_as_it_can_go() -> None:
    """On the real clock, ticked far more often than 30/s: frames emitted and device frames read both
    follow elapsed time x fps (lavfi alone makes 30 frames in about 10 ms)."""
    h = ActorHarness(Camera, {"device": lavfi("testsrc2=size=160x120:rate=30"), "width": 160, "height": 120},
                     node_id="cam", clock=time.monotonic_ns)
    start = time.monotonic_ns()
    while (elapsed := time.monotonic_ns() - start) < NS:
        h.tick()
        time.sleep(0.002)  # the loop's own period (500 ticks/s), not a wait for something to happen
    due = elapsed * 30 / NS
    m = h.metrics()
    assert due * 0.8 <= m["frames_emitted"] <= due + 2, (m, due)  # a loaded machine may skip a few, never add
    assert m["frames_read"] <= m["frames_emitted"] + 1, m
    h.stop()


def test_a_device_whose_stream_ends_is_device_lost() -> None:
    h = ActorHarness(Camera, {"device": lavfi("testsrc2=size=64x48:rate=30:d=0.2"), "width": 64, "height": 48},
                     node_id="cam")
    with pytest.raises(DeviceLostError, match=r"capture device lavfi:testsrc2=.* ended its stream"):
        for k in range(20):
            h.tick(k * IV)
    assert len(frames(h)) == 5  # 0.2 s at 30/s, less the frame the probe at open took, then the end
    h.stop()


def test_camera_frames_follow_the_engine_timeline_after_a_restart() -> None:
    h = ActorHarness(Camera, {"device": lavfi("testsrc2=size=64x48:rate=30"), "width": 64, "height": 48},
                     node_id="cam", restart_count=1)
    actions = h.tick(7_000 * IV + 5)
    assert [a.media.seq for a in actions if isinstance(a, Emit)] == [7_000]
    h.stop()


# ---- screen: what it says without a display ----------------------------------------------------------

def test_the_display_comes_from_the_option_then_display() -> None:
    assert display_to_capture(":5", {"DISPLAY": ":0"}) == ":5"
    assert display_to_capture("", {"DISPLAY": ":0"}) == ":0"
    assert display_to_capture("", {"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}) == ":0"  # Xwayland


def test_no_display_names_display_and_the_fix() -> None:
    with pytest.raises(DisplayError, match=r"DISPLAY is not set .*Xvfb"):
        display_to_capture("", {})


def test_a_wayland_only_session_is_not_supported() -> None:
    with pytest.raises(DisplayError, match=r"WAYLAND_DISPLAY is set \(wayland-0\) but DISPLAY is not: .*not supported"):
        display_to_capture("", {"WAYLAND_DISPLAY": "wayland-0"})


def test_screen_without_display_fails_in_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DisplayError, match="DISPLAY is not set") as info:
        ActorHarness(Screen, {}, node_id="scr")
    assert info.value.code == 1324


def test_screen_on_a_display_nobody_serves_says_it_cannot_connect(tmp_path: Path) -> None:
    # the highest display number: no X server listens there (x11grab would find its socket in /tmp/.X11-unix)
    assert not Path("/tmp/.X11-unix/X32767").exists()
    with pytest.raises(DisplayError, match=r"cannot connect to X display ':32767' .*is the X server running"):
        ActorHarness(Screen, {"display": ":32767", "width": 64, "height": 48}, node_id="scr")


# ---- topologies ---------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_capture_topologies_validate_and_take_a_camera_by_set(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSH_URL", "rtmp://127.0.0.1:1935/live/test")
    cam, screencast = str(ROOT / "topologies/camera_to_rtmp.yaml"), str(ROOT / "topologies/screencast.yaml")
    assert main(["validate", cam]) == 0
    assert main(["validate", screencast]) == 0  # validating opens nothing: no display needed
    assert main(["validate", cam, "--set", "cam.device=/dev/video0"]) == 0
    assert "ok (3 nodes" in capsys.readouterr().out
    assert main(["validate", cam, "--set", "cam.device=webcam"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: nodes[0]: device 'webcam' is not a device path") and "1108 OptionError" in err
    assert main(["kinds", "--json"]) == 0
    kinds = json.loads(capsys.readouterr().out)
    assert {"camera", "screen"} <= set(kinds)
