"""Camera controls against the control table of a real UVC webcam, a Logitech HD Pro Webcam C920.

The table (tests/corpus/uvc/logitech_c920.txt) is `v4l2-ctl --list-formats-ext --all` output of a C920
on uvcvideo (Linux 6.5.7), as published in the petminion project's docs/hardware.md.  `RecordedControls`
serves it behind the same interface as a real device (`V4L2Controls`, linuxpy) and behaves like the
driver: values outside the range are EINVAL, integers snap to the step, and a control governed by an
auto mode (focus_absolute under focus_automatic_continuous) refuses writes with EACCES while that mode
is on, exactly the trap that makes "set focus" fail on a real C920 when autofocus is not turned off first.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from mediaengine.sdk.camera_controls import (
    CameraControls,
    ControlInfo,
    NoControls,
    RecordedControls,
    V4L2Controls,
    parse_v4l2_ctl,
    scale_percent,
    scale_signed,
)
from mediaengine.sdk.errors import ControlFailedError, ControlUnsupportedError, NoTorchError

C920 = Path(__file__).resolve().parents[1] / "corpus" / "uvc" / "logitech_c920.txt"


@pytest.fixture
def c920() -> RecordedControls:
    return RecordedControls.load(C920, model="Logitech HD Pro Webcam C920")


def test_the_dump_parses_into_the_webcams_controls_and_modes(c920: RecordedControls) -> None:
    t = c920.controls()
    assert t["focus_absolute"] == ControlInfo("focus_absolute", "int", 0, 250, 5, 0, 0, inactive=True)
    assert t["focus_automatic_continuous"].type == "bool" and t["focus_automatic_continuous"].value == 1
    assert (t["zoom_absolute"].minimum, t["zoom_absolute"].maximum) == (100, 500)
    assert t["auto_exposure"].menu == {1: "Manual Mode", 3: "Aperture Priority Mode"}
    assert t["power_line_frequency"].menu == {0: "Disabled", 1: "50 Hz", 2: "60 Hz"}
    assert len(t) == 17 and not any(n in t for n in ("led_mode", "torch_intensity", "auto_exposure_bias"))
    assert {"format": "YUYV", "width": 1280, "height": 720, "fps": [10.0, 7.5, 5.0]} in c920.modes
    assert {m["format"] for m in c920.modes} == {"YUYV", "H264"}


def test_the_recorded_device_refuses_what_its_driver_refuses(c920: RecordedControls) -> None:
    with pytest.raises(OSError) as e:
        c920.set("focus_absolute", 100)  # autofocus is on: focus_absolute is inactive
    assert e.value.errno == errno.EACCES
    with pytest.raises(OSError) as e:
        c920.set("zoom_absolute", 501)
    assert e.value.errno == errno.EINVAL
    c920.set("focus_automatic_continuous", 0)
    assert not c920.controls()["focus_absolute"].inactive
    c920.set("focus_absolute", 102)
    assert c920.controls()["focus_absolute"].value == 100  # snapped to the step of 5


def test_manual_focus_turns_autofocus_off_first_and_scales_0_100(c920: RecordedControls) -> None:
    cam = CameraControls(c920, "/dev/video0")
    assert cam.set_focus(40) == {"focus_automatic_continuous": 0, "focus_absolute": 100}
    assert c920.writes == [("focus_automatic_continuous", 0), ("focus_absolute", 100)]
    assert cam.set_focus(100) == {"focus_absolute": 250}  # autofocus already off: one write
    assert cam.set_autofocus(True) == {"focus_automatic_continuous": 1}
    assert c920.controls()["focus_absolute"].inactive


def test_zoom_is_optical_on_the_c920_1x_to_4x_over_its_range(c920: RecordedControls) -> None:
    cam = CameraControls(c920)
    assert cam.zoom_mode() == "optical"
    assert cam.set_optical_zoom(1.0) == {"zoom_absolute": 100}
    assert cam.set_optical_zoom(2.0) == {"zoom_absolute": 233}
    assert cam.set_optical_zoom(4.0) == {"zoom_absolute": 500}


def test_the_c920_has_no_torch_and_says_so_with_its_code(c920: RecordedControls) -> None:
    with pytest.raises(NoTorchError, match="has no light control") as e:
        CameraControls(c920, "/dev/video0").set_torch(True)
    assert e.value.code == 1326 and isinstance(e.value, ControlUnsupportedError)


def test_exposure_compensation_moves_brightness_around_its_default(c920: RecordedControls) -> None:
    cam = CameraControls(c920)
    assert cam.set_exposure_compensation(0) == {"brightness": 128}
    assert cam.set_exposure_compensation(50) == {"brightness": 192}
    assert cam.set_exposure_compensation(-100) == {"brightness": 0}
    assert cam.set_exposure_compensation(100) == {"brightness": 255}


def test_a_flash_led_is_a_torch_and_an_exposure_bias_is_preferred() -> None:
    text = """\
                       led_mode 0x009c0901 (menu)   : min=0 max=2 default=0 value=0
				0: Off
				1: Flash
				2: Torch
                     brightness 0x00980900 (int)    : min=0 max=255 step=1 default=128 value=128
             auto_exposure_bias 0x009a0913 (intmenu): min=0 max=24 default=12 value=12
"""
    table, _ = parse_v4l2_ctl(text)
    dev = RecordedControls(table)
    cam = CameraControls(dev)
    assert cam.set_torch(True) == {"led_mode": 2} and cam.set_torch(False) == {"led_mode": 0}
    assert cam.set_exposure_compensation(-50) == {"auto_exposure_bias": 6}
    assert cam.zoom_mode() == "digital"  # no zoom_absolute: the camera crops


def test_a_device_without_controls_has_only_the_digital_zoom() -> None:
    cam = CameraControls(NoControls(), "lavfi:testsrc2")
    caps = cam.capabilities()
    assert caps["zoom"] == "digital" and not any(caps[k] for k in ("autofocus", "focus", "torch",
                                                                    "exposure_compensation"))
    for call in (lambda: cam.set_autofocus(True), lambda: cam.set_focus(10),
                 lambda: cam.set_exposure_compensation(10)):
        with pytest.raises(ControlUnsupportedError, match="lavfi:testsrc2 has no camera controls") as e:
            call()
        assert e.value.code == 1325
    with pytest.raises(NoTorchError):
        cam.set_torch(True)


def test_a_refused_write_is_a_control_failed_error() -> None:
    table, _ = parse_v4l2_ctl("""\
         exposure_time_absolute 0x009a0902 (int)    : min=3 max=2047 step=1 default=250 value=333 flags=inactive
                 focus_absolute 0x009a090a (int)    : min=0 max=250 step=5 default=0 value=0 flags=inactive
""")  # an auto mode the table does not list keeps focus_absolute inactive
    with pytest.raises(ControlFailedError, match="inactive under another setting") as e:
        CameraControls(RecordedControls(table), "/dev/video0").set_focus(50)
    assert e.value.code == 1327


def test_scales_snap_to_the_step_and_stay_in_range() -> None:
    focus = ControlInfo("focus_absolute", "int", 0, 250, 5, 0, 0)
    assert [scale_percent(focus, p) for p in (0, 2, 34, 100, 150)] == [0, 5, 85, 250, 250]
    bright = ControlInfo("brightness", "int", -64, 64, 1, 0, 0)
    assert [scale_signed(bright, a) for a in (-100, -50, 0, 50, 100)] == [-64, -32, 0, 32, 64]


def test_the_real_v4l2_backend_opens_through_linuxpy() -> None:
    """No camera here: linuxpy is still exercised on a node without controls and on an absent one."""
    dev = V4L2Controls("/dev/null")
    try:
        assert dev.controls() == {} and CameraControls(dev).zoom_mode() == "digital" and dev.modes == []
    finally:
        dev.close()
    with pytest.raises(ControlFailedError, match="cannot open /dev/video-absent") as e:
        V4L2Controls("/dev/video-absent")
    assert e.value.code == 1327
