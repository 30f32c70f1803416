"""The `screen` source on a real X server: Xvfb started by the test, painted with known content.

The captured pixels must equal what was painted (x11grab's bgr0 turned into rgb24 is exact), follow
the screen when it changes, and a region outside the screen must be a DisplayError that says so.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from mediaengine.actors.screen import Screen
from mediaengine.sdk.errors import DisplayError
from mediaengine.sdk.formats import NS, Frame
from mediaengine.testing import ActorHarness

from tests.xdisplay import Rect, paint_root, picture, xvfb

pytestmark = pytest.mark.integration

W, H = 640, 480
IV = round(NS / 30)
SCENE: list[Rect] = [
    (0, 0, W, H, (32, 32, 32)),
    (0, 0, 320, 240, (255, 0, 0)),
    (320, 0, 320, 240, (0, 255, 0)),
    (0, 240, 320, 240, (0, 0, 255)),
    (100, 80, 60, 40, (255, 255, 255)),
    (331, 257, 17, 9, (200, 150, 10)),  # odd sizes and places: any offset or scaling error shows
]


@pytest.fixture
def display() -> Iterator[str]:
    with xvfb(W, H) as name:
        yield name


def captured(h: ActorHarness) -> list[Frame]:
    return [f for f in h.emitted("out") if isinstance(f, Frame)]


def test_screen_captures_exactly_the_painted_region(display: str) -> None:
    paint_root(display, W, H, SCENE)
    x, y, w, h = 40, 30, 320, 240
    harness = ActorHarness(Screen, {"display": display, "x": x, "y": y, "width": w, "height": h, "fps": 30,
                                    "draw_mouse": False}, node_id="scr")
    try:
        for k in range(5):
            harness.tick(k * IV)
        frames = captured(harness)
        want = picture(W, H, SCENE)[y: y + h, x: x + w]
        assert len(frames) == 5
        for f in frames:
            assert f.data.shape == (h, w, 3)
            diff = np.argwhere(f.data != want)
            assert not len(diff), f"frame {f.seq}: {len(diff)} values differ, first at {diff[0].tolist()}"
        (opened,) = harness.events("capture_opened")
        assert opened.data["device"] == f"x11grab:{display}+{x},{y}"
        assert (opened.data["width"], opened.data["height"], opened.data["fps"]) == (w, h, 30.0)
        assert opened.data["as_requested"] is True and opened.data["pix_fmt"] == "bgr0"
    finally:
        harness.stop()


def test_screen_on_a_yuv420p_edge_gives_the_i420_of_the_painted_region(display: str) -> None:
    """Into an encoder the edge carries I420: the same pixels the encoder makes from the rgb24 picture
    (OpenCV's BT.601 limited range), converted from x11grab's bgr0 straight into the ring slot."""
    paint_root(display, W, H, SCENE)
    x, y, w, h = 40, 30, 320, 240
    harness = ActorHarness(Screen, {"display": display, "x": x, "y": y, "width": w, "height": h, "fps": 30,
                                    "draw_mouse": False}, node_id="scr", pix_fmts={"out": "yuv420p"})
    try:
        for k in range(3):
            harness.tick(k * IV)
        frames = captured(harness)
        want = cv2.cvtColor(np.ascontiguousarray(picture(W, H, SCENE)[y: y + h, x: x + w]), cv2.COLOR_RGB2YUV_I420)
        assert len(frames) == 3 and harness.zero_copy("out") == 3  # each frame written into the slot lent
        for f in frames:
            assert f.data.shape == (h * 3 // 2, w)
            diff = np.argwhere(f.data != want)
            assert not len(diff), f"frame {f.seq}: {len(diff)} values differ, first at {diff[0].tolist()}"
    finally:
        harness.stop()


def test_screen_follows_what_the_screen_shows(display: str) -> None:
    paint_root(display, W, H, [(0, 0, W, H, (255, 0, 0))])
    harness = ActorHarness(Screen, {"display": display, "width": 64, "height": 48, "draw_mouse": False},
                           node_id="scr")
    try:
        harness.tick(0)
        assert (captured(harness)[-1].data == (255, 0, 0)).all()
        paint_root(display, W, H, [(0, 0, W, H, (0, 0, 255))])
        for k in range(1, 4):  # x11grab grabs the screen at each read: the new colour shows at once
            harness.tick(k * IV)
        assert (captured(harness)[-1].data == (0, 0, 255)).all()
    finally:
        harness.stop()


def test_a_region_outside_the_screen_is_a_display_error(display: str) -> None:
    with pytest.raises(DisplayError, match=rf"cannot capture 320x240 at \(400,300\) on X display '{display}': "
                                           r"the region does not fit the screen"):
        ActorHarness(Screen, {"display": display, "x": 400, "y": 300, "width": 320, "height": 240}, node_id="scr")
