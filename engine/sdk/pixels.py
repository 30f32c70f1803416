"""Pictures between layouts: decoded PyAV frames into ring arrays, and caller arrays into node formats.

Two jobs, both pure (arrays in, arrays out; no clock, no I/O):

- `frame_to_array(frame, width, height, pix_fmt, out=None)`: a decoded picture (camera, screen, file)
  as the array a ring of `pix_fmt` carries.  For `yuv420p` a decoder's own I420 picture of the right
  size is not converted at all: its three planes are copied once, straight into `out` (the ring slot
  when one is lent).  A packed RGB-family picture of the right size (x11grab's `bgr0`, `bgra`, `rgb24`,
  ...) is converted by OpenCV, straight into `out`, to rgb24 or to I420 (BT.601 limited range: the
  same pixels the encoder makes from an rgb24 edge).  Anything else goes through swscale
  (`VideoFrame.reformat`).
- `check_video(...)` / `convert_video(...)`: an array a Python caller pushes (`Engine.push_video`) in
  one of `PUSH_PIX_FMTS`, checked (typed errors 1212-1214 that name the fix) and converted with
  OpenCV into the node's `rgb24` or `yuv420p` (BT.601 limited range, like the encoder's own
  conversion).  Layouts: packed formats are HxWxC; `yuv420p` (I420) is (H*3/2)xW with the Y plane,
  then U, then V; `nv12` is (H*3/2)xW with the Y plane, then interleaved UV rows.
"""

from __future__ import annotations

from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from .errors import PushDtypeError, PushPixelFormatError, PushShapeError
from .formats import i420_shape

__all__ = ["PUSH_PIX_FMTS", "check_video", "convert_video", "frame_to_array", "push_shape"]

U8 = npt.NDArray[np.uint8]

#: pixel formats a caller may push, and how many channels the packed ones have
PUSH_PIX_FMTS: dict[str, int] = {"rgb24": 3, "bgr24": 3, "rgba": 4, "bgra": 4, "yuv420p": 0, "nv12": 0}

_TO_RGB = {"bgr24": cv2.COLOR_BGR2RGB, "rgba": cv2.COLOR_RGBA2RGB, "bgra": cv2.COLOR_BGRA2RGB,
           "yuv420p": cv2.COLOR_YUV2RGB_I420, "nv12": cv2.COLOR_YUV2RGB_NV12}
_TO_I420 = {"rgb24": cv2.COLOR_RGB2YUV_I420, "bgr24": cv2.COLOR_BGR2YUV_I420,
            "rgba": cv2.COLOR_RGBA2YUV_I420, "bgra": cv2.COLOR_BGRA2YUV_I420}
#: decoded packed pictures OpenCV converts (measured on x11grab's 1280x720 bgr0: to I420 0.34 ms, to
#: rgb24 0.08 ms; swscale's `reformat` to yuv420p 1.7-3.1 ms): bytes per pixel and the layout OpenCV
#: reads them as (the fourth byte of bgr0/rgb0 is padding: read as alpha and dropped)
_PACKED: dict[str, tuple[int, str]] = {"bgr0": (4, "bgra"), "bgra": (4, "bgra"), "rgb0": (4, "rgba"),
                                       "rgba": (4, "rgba"), "bgr24": (3, "bgr24"), "rgb24": (3, "rgb24")}


def _plane(frame: av.VideoFrame, index: int, rows: int, cols: int) -> U8:
    """Plane `index` of `frame` as a rows x cols view (its line size may be padded)."""
    plane = frame.planes[index]
    buf: U8 = np.frombuffer(memoryview(plane), np.uint8)
    return buf.reshape(-1, plane.line_size)[:rows, :cols]


def _packed(frame: av.VideoFrame, width: int, height: int, pix_fmt: str) -> tuple[U8, str] | None:
    """A packed RGB-family `frame` of width x height as an HxWxC view of its plane (rows may be padded)
    and the layout OpenCV reads it as; None where OpenCV cannot take it to `pix_fmt` (another
    format or size; an odd size for I420)."""
    packed = _PACKED.get(frame.format.name)
    if packed is None or (frame.width, frame.height) != (width, height):
        return None
    if pix_fmt == "yuv420p" and (width % 2 or height % 2):
        return None
    channels, layout = packed
    return _plane(frame, 0, height, width * channels).reshape(height, width, channels), layout


def frame_to_array(frame: av.VideoFrame, width: int, height: int, pix_fmt: str, out: U8 | None = None) -> U8:
    """`frame` as a ring array of `pix_fmt` (`rgb24` HxWx3, `yuv420p` (H*3/2)xW) at width x height.

    Written into `out` when given (its shape must be the ring's); a new array otherwise.  A yuv420p
    frame of the right size is copied plane by plane without any conversion; a packed RGB-family
    frame of the right size is converted by OpenCV (`convert_video`) without a temporary picture.
    """
    if pix_fmt not in ("rgb24", "yuv420p"):
        raise ValueError(f"a ring carries rgb24 or yuv420p, not {pix_fmt!r}")
    packed = _packed(frame, width, height, pix_fmt)
    if packed is not None:
        view, layout = packed
        shape = i420_shape(width, height) if pix_fmt == "yuv420p" else (height, width, 3)
        return convert_video(view, layout, pix_fmt, np.empty(shape, np.uint8) if out is None else out)
    if pix_fmt == "yuv420p":
        src = frame
        if (frame.format.name != "yuv420p" or frame.width != width or frame.height != height):
            src = frame.reformat(width=width, height=height, format="yuv420p")
        dst = np.empty(i420_shape(width, height), np.uint8) if out is None else out
        q = height // 4  # rows of the (H*3/2)xW array per chroma plane
        hw, hh = width // 2, height // 2
        np.copyto(dst[:height], _plane(src, 0, height, width))
        np.copyto(dst[height:height + q].reshape(hh, hw), _plane(src, 1, hh, hw))
        np.copyto(dst[height + q:].reshape(hh, hw), _plane(src, 2, hh, hw))
        return dst
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    if out is None:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    np.copyto(out, rgb)
    return out


def push_shape(pix_fmt: str, width: int, height: int) -> tuple[int, ...]:
    """The array shape a caller pushes for a width x height picture in `pix_fmt`."""
    channels = PUSH_PIX_FMTS[pix_fmt]
    return (height, width, channels) if channels else i420_shape(width, height)


def check_video(array: Any, pix_fmt: str, width: int, height: int, *, node: str = "") -> U8:
    """`array` as a C-contiguous uint8 array of `pix_fmt` at width x height, or a typed error.

    PushPixelFormatError (1214) for a format not in `PUSH_PIX_FMTS`, PushDtypeError (1213) for
    anything but uint8, PushShapeError (1212) for a shape that is not the node's size in that layout.
    """
    where = f"push_video to {node!r}" if node else "push_video"
    if pix_fmt not in PUSH_PIX_FMTS:
        raise PushPixelFormatError(f"{where}: pixel format {pix_fmt!r} is not one the engine takes; use one of "
                                   f"{', '.join(PUSH_PIX_FMTS)}")
    if not isinstance(array, np.ndarray):
        raise PushDtypeError(f"{where}: expected a numpy array, got {type(array).__name__}")
    if array.dtype != np.uint8:
        raise PushDtypeError(f"{where}: {pix_fmt} pictures are uint8, got {array.dtype}; convert with "
                             "np.clip(a, 0, 255).astype(np.uint8)")
    want = push_shape(pix_fmt, width, height)
    if array.shape != want:
        layout = "H x W x C" if PUSH_PIX_FMTS[pix_fmt] else "(H*3/2) x W, the Y plane then the chroma"
        raise PushShapeError(f"{where}: a {width}x{height} {pix_fmt} picture has shape {want} ({layout}), got "
                             f"{array.shape}; push the node's size (scale it first) in that layout")
    return np.ascontiguousarray(array)


def convert_video(array: U8, pix_fmt: str, to: str, out: U8) -> U8:
    """A checked caller picture in `pix_fmt` converted into `out`, a ring array of `to` (rgb24/yuv420p)."""
    if pix_fmt == to:
        np.copyto(out, array)
    elif to == "rgb24":
        cv2.cvtColor(array, _TO_RGB[pix_fmt], dst=out)
    elif to != "yuv420p":
        raise ValueError(f"a ring carries rgb24 or yuv420p, not {to!r}")
    elif pix_fmt == "nv12":  # same Y plane; the interleaved UV rows split into the U and V planes
        h = out.shape[0] * 2 // 3
        w = out.shape[1]
        q = h // 4
        np.copyto(out[:h], array[:h])
        uv = array[h:].reshape(h // 2, w // 2, 2)
        np.copyto(out[h:h + q].reshape(h // 2, w // 2), uv[:, :, 0])
        np.copyto(out[h + q:].reshape(h // 2, w // 2), uv[:, :, 1])
    else:
        cv2.cvtColor(array, _TO_I420[pix_fmt], dst=out)
    return out
