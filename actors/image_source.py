"""Still-image video source: one picture (any format OpenCV reads) emitted at a fixed frame rate.

Useful as a slate, a "be right back" card or a background for compositing.  The file is decoded once
(at load time too, when the output size has to come from the image), converted to rgb24 and resized
if asked; every tick then emits the same read-only array.  Frames follow the engine's media clock like
every video source: frame k has `pts_ns = k * round(1e9 / fps)` and `seq = k`, with up to 5 missed
frames caught up after a late tick.

    nodes:
      - {id: slate, kind: image_source, options: {path: assets/brb.png, width: 1280, height: 720, fps: 15}}

`width`/`height` of 0 keep the image's own size; if only one is 0 it follows the image's aspect ratio.
`stamp: true` burns each frame's number (its `seq`) and the wall-clock time into its top-left corner, so a
test can tell from the relayed stream which frame it is looking at (each frame is then a copy).
A missing or undecodable file raises `FileError` naming the path.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from mediaengine.sdk import stamp
from mediaengine.sdk.actor import Action, Actor, Context, Emit, OutPort, option
from mediaengine.sdk.errors import FileError
from mediaengine.sdk.formats import NS, Format, Frame, VideoFormat, check_frame_size
from mediaengine.sdk.pacing import video_indices_due
from numpy.typing import NDArray

__all__ = ["ImageSource", "ImageSourceOptions", "load_image"]


@dataclass(frozen=True)
class ImageSourceOptions:
    path: str = option(doc="image file (PNG, JPEG, BMP, WebP, ... anything cv2.imread decodes)")
    width: int = option(0, range=(0, None),
                        doc="output width in pixels; 0 = the image's own (or follow the aspect ratio)")
    height: int = option(0, range=(0, None),
                         doc="output height in pixels; 0 = the image's own (or follow the aspect ratio)")
    fps: float = option(15.0, range=(0.1, 240.0), doc="frames per second")
    stamp: bool = option(False, doc="burn the frame number and wall-clock time into the top-left corner of "
                                    "every frame (engine/sdk/stamp.py: tests and latency checks read it back)")


# ---- pure-ish function (file in, array out) -------------------------------------------------------

def header_size(path: str) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG or BMP header without decoding the picture, None if the
    header is not one of those (the decoder then judges)."""
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return int(w), int(h)
        if head.startswith(b"BM") and len(head) >= 26:
            w, h = struct.unpack("<ii", head[18:26])
            return abs(int(w)), abs(int(h))
        if head.startswith(b"\xff\xd8"):
            f.seek(2)
            while True:  # walk the JPEG segments to the first start-of-frame
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    return None
                if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
                    continue
                length = f.read(2)
                if len(length) < 2:
                    return None
                if marker[1] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    sof = f.read(5)
                    if len(sof) < 5:
                        return None
                    h, w = struct.unpack(">HH", sof[1:5])
                    return int(w), int(h)
                f.seek(struct.unpack(">H", length)[0] - 2, os.SEEK_CUR)
    return None


def load_image(path: str, width: int = 0, height: int = 0) -> NDArray[np.uint8]:
    """Decode `path` to a C-contiguous HxWx3 rgb24 array, resized to width x height if not 0.

    If only one of width/height is 0 it is derived from the aspect ratio.  Raises FileError, and
    FrameSizeError (before decoding, from the file header) for a picture over MAX_FRAME_PIXELS.
    """
    if not os.path.isfile(path):
        raise FileError(f"image file not found: {path!r} (cwd {os.getcwd()!r}); "
                        "fix the `path` option or create the file")
    size = header_size(path)
    if size is not None:
        check_frame_size(*size, what=f"image {path!r}")
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileError(f"cannot decode image {path!r}: not an image format OpenCV reads "
                        "(use PNG, JPEG, BMP, WebP or TIFF)")
    ih, iw = bgr.shape[:2]
    check_frame_size(iw, ih, what=f"image {path!r}")
    w, h = width, height
    if w == 0 and h == 0:
        w, h = iw, ih
    elif w == 0:
        w = max(1, round(iw * h / ih))
    elif h == 0:
        h = max(1, round(ih * w / iw))
    if (w, h) != (iw, ih):
        shrinking = w * h < iw * ih
        bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


# ---- the actor ------------------------------------------------------------------------------------

class ImageSource(Actor[ImageSourceOptions]):
    """Emits one still picture at a fixed frame rate."""

    outputs = {"out": OutPort("video", default=True)}
    Options = ImageSourceOptions
    is_source = True

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: ImageSourceOptions = options
        if o.width > 0 and o.height > 0:
            if not os.path.isfile(o.path):  # fail at load time, not only when the process starts
                raise FileError(f"image file not found: {o.path!r} (cwd {os.getcwd()!r}); "
                                "fix the `path` option or create the file")
            w, h = o.width, o.height
        else:
            h, w = load_image(o.path, o.width, o.height).shape[:2]
        return {"out": VideoFormat(w, h, o.fps)}

    def setup(self, ctx: Context) -> None:
        self._ctx = ctx
        o = self.options
        declared = ctx.output_formats.get("out")
        if isinstance(declared, VideoFormat):  # the size fixed at load time, even if the file changed
            picture = load_image(o.path, declared.width, declared.height)
        else:
            picture = load_image(o.path, o.width, o.height)
        picture.flags.writeable = False  # the same array goes out on every frame
        self._picture = picture
        self.tick_interval_ns = round(NS / o.fps)
        self._next: int | None = None

    def on_tick(self, now_ns: int) -> list[Action]:
        interval = self.tick_interval_ns
        assert interval is not None, "setup() not called"
        actions: list[Action] = []
        for k in video_indices_due(self._next, now_ns, interval):
            picture = self._picture
            if self.options.stamp:
                picture = self._stamped(k)
            actions.append(Emit("out", Frame(picture, pts_ns=k * interval, seq=k)))
            self._next = k + 1
        return actions

    def _stamped(self, k: int) -> NDArray[np.uint8]:
        out = self._ctx.output_buffer("out")
        if out is None or out.shape != self._picture.shape:
            out = np.empty_like(self._picture)
        np.copyto(out, self._picture)
        stamp.burn(out, k, time.time_ns() // 1_000_000)
        return out
