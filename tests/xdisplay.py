"""A virtual X display for screen-capture tests: Xvfb started on a free display number, painted through libX11.

`xvfb(width, height)` starts `Xvfb -displayfd` (the server picks a free display number itself and writes
it back once it accepts connections, so there is no guessing and no polling), yields the display name
(":N") and stops the server by its PID afterwards, also when the test fails.  `paint_root` sets the root
window's background to a picture of filled rectangles through libX11 (ctypes; Debian's libx11-6): the
server keeps showing it after the painting client has gone (Xvfb runs with `-noreset`: otherwise the
last client's disconnect resets the server and the root window with it), and repaints it on every
expose, so what a capture sees is known exactly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray

#: (x, y, width, height, (r, g, b)) rectangles, painted in order
Rect = tuple[int, int, int, int, tuple[int, int, int]]


@contextlib.contextmanager
def xvfb(width: int = 640, height: int = 480, timeout_s: float = 15.0) -> Iterator[str]:
    """Run Xvfb (`width`x`height`x24, no TCP) for the block; yields its display name, e.g. ':3'."""
    exe = shutil.which("Xvfb")
    assert exe, "Xvfb is not installed (Debian package xvfb; scripts/bootstrap.sh installs it)"
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24",
                             "-nolisten", "tcp", "-noreset"], pass_fds=(write_fd,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    os.close(write_fd)
    try:
        number = _read_display_number(read_fd, proc, timeout_s)
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def _read_display_number(fd: int, proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        if not ready:
            raise AssertionError(f"Xvfb did not report a display within {timeout_s:g}s")
        chunk = os.read(fd, 64)
        if not chunk:  # the server exited before it was ready
            err = proc.stderr.read().decode(errors="replace") if proc.stderr is not None else ""
            raise AssertionError(f"Xvfb exited ({proc.wait()}) before it was ready: {err}")
        data += chunk
    return int(data)


def _libx11() -> ctypes.CDLL:
    name = ctypes.util.find_library("X11") or "libX11.so.6"
    lib = ctypes.CDLL(name)
    vp, ul, i, ui = ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_uint
    sigs: dict[str, tuple[object, list[object]]] = {
        "XOpenDisplay": (vp, [ctypes.c_char_p]),
        "XDefaultScreen": (i, [vp]),
        "XRootWindow": (ul, [vp, i]),
        "XDefaultDepth": (i, [vp, i]),
        "XCreatePixmap": (ul, [vp, ul, ui, ui, ui]),
        "XCreateGC": (vp, [vp, ul, ul, vp]),
        "XSetForeground": (i, [vp, vp, ul]),
        "XFillRectangle": (i, [vp, ul, vp, i, i, ui, ui]),
        "XSetWindowBackgroundPixmap": (i, [vp, ul, ul]),
        "XClearWindow": (i, [vp, ul]),
        "XFreeGC": (i, [vp, vp]),
        "XFreePixmap": (i, [vp, ul]),
        "XSync": (i, [vp, i]),
        "XCloseDisplay": (i, [vp]),
    }
    for fn, (res, args) in sigs.items():
        getattr(lib, fn).restype = res
        getattr(lib, fn).argtypes = args
    return lib


def paint_root(display: str, width: int, height: int, rects: Sequence[Rect]) -> None:
    """Make the root window of `display` (a 24-bit TrueColor screen `width`x`height`) show `rects`."""
    x11 = _libx11()
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open X display {display}"
    try:
        screen = x11.XDefaultScreen(dpy)
        root = x11.XRootWindow(dpy, screen)
        assert x11.XDefaultDepth(dpy, screen) == 24
        pixmap = x11.XCreatePixmap(dpy, root, width, height, 24)
        gc = x11.XCreateGC(dpy, pixmap, 0, None)
        for x, y, w, h, (r, g, b) in rects:
            x11.XSetForeground(dpy, gc, (r << 16) | (g << 8) | b)
            x11.XFillRectangle(dpy, pixmap, gc, x, y, w, h)
        x11.XSetWindowBackgroundPixmap(dpy, root, pixmap)
        x11.XClearWindow(dpy, root)
        x11.XFreeGC(dpy, gc)
        x11.XFreePixmap(dpy, pixmap)  # the root window keeps its own reference
        x11.XSync(dpy, 0)
    finally:
        x11.XCloseDisplay(dpy)


def picture(width: int, height: int, rects: Sequence[Rect]) -> NDArray[np.uint8]:
    """The rgb24 picture `paint_root` makes of `rects` on a `width`x`height` screen."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    for x, y, w, h, rgb in rects:
        img[y: y + h, x: x + w] = rgb
    return img
