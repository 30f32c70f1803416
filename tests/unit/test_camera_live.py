"""The camera's live controls, digital zoom, device switch and `min_fps`, in-process (ActorHarness).

The device is FFmpeg's `lavfi` (the same open path as V4L2); where V4L2 controls are needed the camera
is given the recorded control table of a real Logitech C920 (tests/corpus/uvc, see
test_camera_controls.py) behind the controls-backend interface a real /dev/videoN uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from mediaengine.actors.camera import Camera, digital_zoom, next_device, zoom_window
from mediaengine.sdk.camera_controls import ControlsBackend, RecordedControls
from mediaengine.sdk.capture import DeviceSpec
from mediaengine.sdk.errors import CameraSwitchError, ControlUnsupportedError, NoTorchError, OptionError
from mediaengine.sdk.formats import NS, Frame
from mediaengine.testing import ActorHarness

IV = round(NS / 30)
W, H = 320, 240
TESTSRC = f"lavfi:testsrc2=size={W}x{H}:rate=30"
BARS = "lavfi:smptebars=size=640x480:rate=30"
C920 = Path(__file__).resolve().parents[1] / "corpus" / "uvc" / "logitech_c920.txt"


def camera(**options: Any) -> ActorHarness:
    return ActorHarness(Camera, {"device": TESTSRC, "width": W, "height": H, "fps": 30, **options}, node_id="cam")


def frame_at(h: ActorHarness, k: int) -> Frame:
    """The frame of index k (ticks every frame up to it, so the device is read in order)."""
    for i in range(k + 1):
        if h.actor._next is None or h.actor._next <= i:
            h.tick(i * IV)
    return next(f for f in h.emitted("out") if isinstance(f, Frame) and f.seq == k)


# ---- digital zoom: pure ---------------------------------------------------------------------------

def test_the_zoom_window_is_1_over_factor_centred_and_kept_inside() -> None:
    assert zoom_window(320, 240, 2.0, 0.5, 0.5) == (80, 60, 160, 120)
    assert zoom_window(320, 240, 4.0, 0.25, 0.25) == (40, 30, 80, 60)
    assert zoom_window(320, 240, 2.0, 0.0, 1.0) == (0, 120, 160, 120)  # a corner: moved inside
    assert zoom_window(320, 240, 1.0, 0.9, 0.1) == (0, 0, 320, 240)


def test_digital_zoom_of_a_known_picture_scales_the_window_up() -> None:
    src = np.zeros((240, 320, 3), np.uint8)
    src[60:120, 80:160] = (255, 0, 0)  # a red block in the top-left quadrant's centre
    out = digital_zoom(src, 2.0, 0.25, 0.25, np.empty((240, 320, 3), np.uint8))
    red = (out[..., 0] > 128) & (out[..., 1] < 64)
    ys, xs = np.nonzero(red)
    assert abs(ys.min() - 120) <= 1 and abs(ys.max() - 239) <= 1 and abs(xs.min() - 160) <= 1 and xs.max() == 319


# ---- digital zoom on the camera's real pixels ------------------------------------------------------

@pytest.mark.parametrize(("zoom", "cx", "cy"), [(2.0, 0.5, 0.5), (3.0, 0.3, 0.7), (4.0, 0.0, 0.0)])
def test_the_zoomed_picture_is_the_crop_of_the_unzoomed_one_resized(zoom: float, cx: float, cy: float) -> None:
    plain = frame_at(camera(), 12).data
    zoomed = frame_at(camera(zoom=zoom, zoom_x=cx, zoom_y=cy), 12).data  # the same device frame, zoomed
    x, y, w, h = zoom_window(W, H, zoom, cx, cy)
    expected = cv2.resize(plain[y:y + h, x:x + w], (W, H), interpolation=cv2.INTER_LINEAR)
    diff = np.abs(zoomed.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert np.abs(zoomed.astype(np.int16) - plain.astype(np.int16)).mean() > 10  # the zoom did change it


def test_zoom_is_live_and_a_lavfi_camera_refuses_the_other_controls() -> None:
    h = camera()
    plain = frame_at(h, 3).data.copy()
    assert h.set(zoom=2.0) == {"zoom": 2.0}
    assert h.metrics()["zoom_mode"] == "digital"
    zoomed = frame_at(h, 4).data
    assert np.abs(zoomed.astype(np.int16) - plain.astype(np.int16)).mean() > 10
    for change in ({"focus": 40.0}, {"autofocus": False}, {"exposure_compensation": 20.0}):
        with pytest.raises(ControlUnsupportedError, match="has no camera controls") as e:
            h.set(**change)
        assert e.value.code == 1325
        name = next(iter(change))
        assert getattr(h.actor.options, name) is None  # the option keeps the value the device has
    with pytest.raises(NoTorchError):
        h.set(torch=True)
    assert h.actor.options.torch is False


def test_a_topology_asking_focus_of_a_lavfi_camera_fails_at_start_with_the_code() -> None:
    with pytest.raises(ControlUnsupportedError) as e:
        camera(focus=50.0)
    assert e.value.code == 1325 and not e.value.restartable


# ---- controls on the recorded C920 ----------------------------------------------------------------

class RecordedC920Camera(Camera):
    """The camera actor with a recorded Logitech C920's controls instead of a real device's."""

    tables: list[RecordedControls] = []

    @staticmethod
    def controls_for(spec: DeviceSpec) -> ControlsBackend:
        table = RecordedControls.load(C920, model="Logitech HD Pro Webcam C920")
        RecordedC920Camera.tables.append(table)
        return table


def test_live_controls_reach_the_c920s_controls() -> None:
    RecordedC920Camera.tables.clear()
    h = ActorHarness(RecordedC920Camera, {"device": TESTSRC, "width": W, "height": H, "autofocus": True},
                     node_id="cam")
    dev = RecordedC920Camera.tables[-1]
    assert dev.writes == [("focus_automatic_continuous", 1)]  # the topology's value, applied at start
    frame_at(h, 2)
    h.set(focus=40.0)
    h.set(zoom=2.0, exposure_compensation=-50.0)
    assert dev.writes[1:] == [("focus_automatic_continuous", 0), ("focus_absolute", 100), ("zoom_absolute", 233),
                              ("brightness", 64)]
    events = [e for e in h.events() if e.name == "camera_control"]
    assert [e.data["option"] for e in events] == ["focus", "zoom", "exposure_compensation"]
    # the zoom is optical here: the camera does not crop the picture itself
    assert np.array_equal(frame_at(h, 3).data, frame_at(camera(), 3).data)
    with pytest.raises(NoTorchError) as e:
        h.set(torch=True)
    assert e.value.code == 1326
    caps = h.control("capabilities")
    assert caps["zoom"] == "optical" and caps["focus"] and caps["autofocus"] and not caps["torch"]
    assert {"format": "H264", "width": 1280, "height": 720, "fps": [30.0, 24.0, 20.0, 15.0, 10.0, 7.5, 5.0]} \
        in caps["modes"]
    assert {c["name"] for c in caps["controls"]} >= {"focus_absolute", "zoom_absolute", "brightness"}


def test_capabilities_of_a_lavfi_camera_list_its_one_mode_and_no_controls() -> None:
    caps = camera().control("capabilities")
    assert caps["device"] == TESTSRC and caps["controls"] == [] and caps["zoom"] == "digital"
    assert caps["modes"] == [{"width": W, "height": H, "fps": 30.0, "pix_fmt": "yuv420p", "codec": "wrapped_avframe",
                              "current": True}]


# ---- switching devices ----------------------------------------------------------------------------

def test_next_device_cycles_or_takes_the_named_one() -> None:
    devs = ("a", "b", "c")
    assert next_device(devs, "a", None) == "b" and next_device(devs, "c", None) == "a"
    assert next_device(devs, "a", "c") == "c"
    with pytest.raises(CameraSwitchError, match="not in this camera's devices") as e:
        next_device(devs, "a", "d")
    assert e.value.code == 1328
    with pytest.raises(CameraSwitchError, match="no `devices` list"):
        next_device((), "a", None)
    with pytest.raises(CameraSwitchError, match="no other device"):
        next_device(("a",), "a", None)


def test_switch_opens_the_next_device_and_scales_it_to_the_output_size() -> None:
    h = camera(devices=[TESTSRC, BARS])
    first = frame_at(h, 2)
    assert first.meta == {"source": TESTSRC}
    reply = h.control("switch")
    assert reply["device"] == BARS and reply["previous"] == TESTSRC and reply["open_ms"] < 1000
    bars = frame_at(h, 3)
    assert bars.meta == {"source": BARS} and bars.data.shape == (H, W, 3)
    # SMPTE bars: the first column is 75% grey, the second 75% yellow
    assert np.allclose(bars.data[10, 5], (191, 191, 191), atol=6), bars.data[10, 5]
    assert np.allclose(bars.data[10, W // 7 + 5], (191, 191, 0), atol=6), bars.data[10, W // 7 + 5]
    opened = [e for e in h.events() if e.name == "capture_opened"]
    assert [e.data["device"] for e in opened] == [TESTSRC, BARS] and opened[1].data["width"] == 640
    assert [e.data["device"] for e in h.events() if e.name == "camera_switched"] == [BARS]
    assert h.control("switch", device=TESTSRC)["device"] == TESTSRC
    assert frame_at(h, 4).meta == {"source": TESTSRC} and h.metrics()["switches"] == 2


def test_a_failed_switch_keeps_the_current_device() -> None:
    h = camera(devices=[TESTSRC, "lavfi:nosuchfilter"])
    frame_at(h, 1)
    with pytest.raises(Exception, match="nosuchfilter") as e:
        h.control("switch")
    assert getattr(e.value, "code", None) == 1320
    assert frame_at(h, 2).meta == {"source": TESTSRC}
    with pytest.raises(CameraSwitchError):
        h.control("switch", device="lavfi:color")


def test_a_camera_with_devices_starts_on_the_first_unless_device_is_listed() -> None:
    assert camera(device="auto", devices=[BARS, TESTSRC]).actor.device.spec.describe() == BARS
    assert camera(devices=[BARS, TESTSRC]).actor.device.spec.describe() == TESTSRC


# ---- min_fps --------------------------------------------------------------------------------------

def test_a_device_slower_than_min_fps_is_repeated_and_reported() -> None:
    h = camera(device=f"lavfi:testsrc2=size={W}x{H}:rate=4", min_fps=8)
    for k in range(76):  # 2.5 s of output at 30 fps
        h.tick(k * IV)
    out = [f for f in h.emitted("out") if isinstance(f, Frame)]
    assert len(out) == 76  # the output keeps its rate
    low = [e for e in h.events() if e.name == "capture_fps_low"]
    assert len(low) == 1 and 3.5 <= low[0].data["device_fps"] <= 4.5 and low[0].data["min_fps"] == 8
    m = h.metrics()
    assert m["below_min_fps"] and m["repeated_frames"] >= 60, m


def test_a_device_at_full_rate_raises_no_min_fps_event() -> None:
    h = camera(min_fps=25)
    for k in range(76):
        h.tick(k * IV)
    assert not [e for e in h.events() if e.name.startswith("capture_fps")]
    assert h.metrics()["device_fps"] >= 29 and h.metrics()["repeated_frames"] == 0


def test_min_fps_above_fps_is_refused_at_load() -> None:
    with pytest.raises(OptionError, match="min_fps 40 is above fps 30"):
        camera(min_fps=40)


def test_the_encoder_reports_the_first_frame_of_each_source() -> None:
    from mediaengine.actors.video_encoder import VideoEncoder
    from mediaengine.sdk.formats import VideoFormat

    h = ActorHarness(VideoEncoder, {"preset": "ultrafast"}, input_formats={"in": VideoFormat(64, 48, 30.0)},
                     node_id="venc")
    pic = np.zeros((48, 64, 3), np.uint8)
    for k, source in enumerate(["a", "a", "b", "b", "a"]):
        h.frame("in", Frame(pic, pts_ns=k * IV, seq=k, meta={"source": source}))
    changed = [e.data for e in h.events() if e.name == "source_changed"]
    assert [(d["source"], d["pts_ns"]) for d in changed] == [("a", 0), ("b", 2 * IV), ("a", 4 * IV)]
