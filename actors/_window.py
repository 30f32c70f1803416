"""The preview's local window: Tk when Python has it, else OpenCV's highgui when OpenCV has a GUI.

Tk (Python's own `tkinter`, drawing the picture as a PPM `PhotoImage`) comes first: it reports a display
it cannot reach as an exception.  OpenCV's Qt-based highgui (the `opencv-contrib-python` build that
mediapipe pulls in for the beauty extra has one) aborts the whole process instead, so it is used only
without tkinter and only after an X connection has been opened and closed again (`x_display_reachable`).
Both are driven from the actor's own loop (`show` draws and processes window events, `pump` processes
events only): no thread of their own.  Closing the window hides it; the preview (and the push) go on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray


class Window(Protocol):
    backend: str

    def show(self, rgb: NDArray[np.uint8]) -> None: ...

    def pump(self) -> None: ...

    def close(self) -> None: ...


def opencv_has_gui() -> bool:
    """True if the installed OpenCV was built with a GUI backend (GTK, Qt, ...)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("", "NONE")
    return False


def tk_available() -> bool:
    try:
        import tkinter  # noqa: F401 - only whether it imports
    except ImportError:
        return False
    return True


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def x_display_reachable() -> bool:
    """True if libX11 can connect to `DISPLAY` (XOpenDisplay, closed again at once)."""
    name = ctypes.util.find_library("X11")
    if not name:
        return False
    try:
        x11 = ctypes.CDLL(name)
    except OSError:
        return False
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    display = x11.XOpenDisplay(None)
    if not display:
        return False
    x11.XCloseDisplay(display)
    return True


class CvWindow:
    backend = "opencv"

    def __init__(self, title: str) -> None:
        self.title = title
        cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)

    def show(self, rgb: NDArray[np.uint8]) -> None:
        cv2.imshow(self.title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)

    def pump(self) -> None:
        cv2.waitKey(1)

    def close(self) -> None:
        cv2.destroyWindow(self.title)


class TkWindow:
    backend = "tk"

    def __init__(self, title: str) -> None:
        import tkinter

        self._tk = tkinter
        self.root = tkinter.Tk()
        self.root.title(title)
        self.root.geometry("+0+0")
        self.root.protocol("WM_DELETE_WINDOW", self.root.withdraw)  # closing hides; the preview goes on
        self.label = tkinter.Label(self.root, bd=0, highlightthickness=0)
        self.label.pack()
        self._image: Any = None
        self.root.update()

    def show(self, rgb: NDArray[np.uint8]) -> None:
        h, w = rgb.shape[:2]
        ppm = b"P6 %d %d 255\n" % (w, h) + np.ascontiguousarray(rgb).tobytes()
        self._image = self._tk.PhotoImage(data=ppm, format="PPM")
        self.label.configure(image=self._image)
        self.root.update()

    def pump(self) -> None:
        self.root.update()

    def close(self) -> None:
        self.root.destroy()


def open_window(title: str) -> Window:
    """A window on the current display; RuntimeError saying what is missing if none can open."""
    if not display_available():
        raise RuntimeError("no display: DISPLAY is not set (use mode: http on a headless machine)")
    if tk_available():
        return TkWindow(title)
    if opencv_has_gui():
        if not x_display_reachable():
            raise RuntimeError(f"cannot connect to the X display {os.environ.get('DISPLAY', '')!r} "
                               "(is the X server running? or use mode: http)")
        return CvWindow(title)
    raise RuntimeError("no GUI toolkit: the installed OpenCV has no GUI and Python has no tkinter "
                       "(install python3-tk, or opencv-python instead of the headless build, or use mode: http)")
