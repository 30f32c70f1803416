"""Preview: what goes out, seen locally, rate-capped and never slowing the push.

Link it beside the encoder (`inputs: {in: mix}`): its input drops stale frames (`drop_oldest`), so a
slow preview never holds the producer back, and it converts at most `max_fps` pictures a second.

- `mode: window` opens a window on the display (OpenCV's highgui when the installed OpenCV has a GUI,
  else Tk); `mode: http` serves on 127.0.0.1 an MJPEG stream (`/stream.mjpg`), the newest picture
  (`/snapshot.jpg`) and a page that shows the stream in any browser (`/`); `mode: auto` (the default)
  opens a window when a display exists and serves HTTP otherwise (also when no window can open: the
  event `preview_ready` then says why in `no_window`).
- `port: 0` picks a free port: the URL is in the event `preview_ready` {url}, in the node's metrics
  (`url`, `port`) and in the reply of `mediaengine ctl prev url`.

    nodes:
      - {id: prev, kind: preview, inputs: {in: mix}, options: {mode: http, port: 8089, max_fps: 10}}

    open http://127.0.0.1:8089/        (or: ffplay http://127.0.0.1:8089/stream.mjpg)

A port in use, or `mode: window` without a display or a GUI toolkit, fails with `PreviewError` (1337),
which names the fix.  Cost in the preview's own process: one JPEG encode per shown picture (~3 ms at
1280x720), nothing in the push's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from mediaengine.actors._mjpeg import MjpegServer
from mediaengine.actors._window import Window, display_available, open_window
from mediaengine.sdk.actor import Actions, Actor, Context, Event, InPort, Reply, option
from mediaengine.sdk.errors import FormatError, PreviewError
from mediaengine.sdk.formats import NS, Frame, Packet
from numpy.typing import NDArray

__all__ = ["Preview", "PreviewOptions", "due", "encode_jpeg", "shrink"]

Mode = Literal["auto", "window", "http"]


@dataclass(frozen=True)
class PreviewOptions:
    mode: Mode = option("auto", choices=("auto", "window", "http"),
                        doc="window, http (MJPEG on 127.0.0.1), or auto: a window when a display exists")
    port: int = option(0, range=(0, 65535), doc="HTTP port on 127.0.0.1; 0 = a free one (see the url metric)")
    max_fps: float = option(10.0, range=(0.5, 60.0), live=True, doc="at most this many pictures a second (live)")
    width: int = option(0, range=(0, 7680), live=True,
                        doc="scale the picture down to this width (aspect kept); 0 = as it comes (live)")
    quality: int = option(80, range=(10, 100), live=True, doc="JPEG quality of the HTTP pictures (live)")
    title: str = option("mediaengine preview", doc="window title and page title")


# ---- pure functions -------------------------------------------------------------------------------

def due(last_ns: int | None, now_ns: int, max_fps: float) -> bool:
    """Whether a picture may be shown at `now_ns` when the last one was at `last_ns` (rate cap)."""
    return last_ns is None or now_ns - last_ns >= round(NS / max_fps) - NS // 1000  # 1 ms of jitter allowed


def shrink(rgb: NDArray[np.uint8], width: int) -> NDArray[np.uint8]:
    """`rgb` scaled down to `width` (aspect kept); itself when `width` is 0 or not smaller."""
    h, w = rgb.shape[:2]
    if width <= 0 or width >= w:
        return rgb
    height = max(1, round(h * width / w))
    return np.asarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA), dtype=np.uint8)


def encode_jpeg(rgb: NDArray[np.uint8], quality: int) -> bytes:
    """JPEG bytes of an rgb24 picture."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise FormatError(f"JPEG encoding of a {rgb.shape[1]}x{rgb.shape[0]} picture failed")
    return bytes(buf)


# ---- the actor ------------------------------------------------------------------------------------

class Preview(Actor[PreviewOptions]):
    """Shows the frames of its input in a window or over HTTP, at most `max_fps` a second."""

    inputs = {"in": InPort("video", policy="drop_oldest")}  # never hold the producer back
    Options = PreviewOptions

    def setup(self, ctx: Context) -> Actions:
        o = self.options
        self._ctx = ctx
        self._last: int | None = None
        self._shown = 0
        self._skipped = 0
        self._server: MjpegServer | None = None
        self._window: Window | None = None
        if o.mode == "window" or (o.mode == "auto" and display_available()):
            try:
                self._window = open_window(o.title)
            except Exception as exc:  # RuntimeError, or the toolkit's own (tkinter.TclError, cv2.error)
                if o.mode == "window":
                    raise PreviewError(f"cannot open a preview window: {exc}; use mode: http on a headless "
                                       "machine", where=ctx.node_id) from exc
                reason = str(exc)  # auto: no window after all, serve HTTP instead and say why
            else:
                self.tick_interval_ns = NS // 20  # window events (expose, move) between frames
                return [Event("preview_ready", {"window": self._window.backend})]
        else:
            reason = ""
        try:
            self._server = MjpegServer(o.port, title=o.title)
        except OSError as exc:
            raise PreviewError(f"cannot serve the preview on 127.0.0.1:{o.port}: {exc.strerror or exc}; "
                               "pick another port, or port: 0 for a free one", where=ctx.node_id) from exc
        data: dict[str, Any] = {"url": self._server.url, "port": self._server.port}
        if reason:
            data["no_window"] = reason
        return [Event("preview_ready", data)]

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame) or media.data.ndim != 3:
            raise FormatError(f"preview expects rgb24 video frames on {pad!r}, got {type(media).__name__}")
        now = self._ctx.clock()
        o = self.options
        if not due(self._last, now, o.max_fps):
            self._skipped += 1
            return None
        self._last = now
        picture = shrink(media.data, o.width)
        if self._window is not None:
            self._window.show(picture)
        if self._server is not None:
            self._server.publish(encode_jpeg(picture, o.quality))
        self._shown += 1
        return None

    def on_tick(self, now_ns: int) -> Actions:
        if self._window is not None:
            self._window.pump()
        return None

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "url":
            # the port too: the engine redacts URLs in what it passes on (their paths may hold stream keys)
            return [Reply({"url": self._server.url if self._server else None,
                           "port": self._server.port if self._server else None,
                           "window": self._window.backend if self._window else None})]
        return super().on_control(command, args)

    def stop(self) -> Actions:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._window is not None:
            self._window.close()
            self._window = None
        return None

    def metrics(self) -> dict[str, Any]:
        return {"shown": self._shown, "skipped": self._skipped,
                "url": self._server.url if self._server else None,
                "port": self._server.port if self._server else None,
                "clients": self._server.clients if self._server else 0,
                "window": self._window.backend if self._window else None}
