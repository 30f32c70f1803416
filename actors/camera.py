"""Camera source: any capture device FFmpeg opens through PyAV's input devices, as yuv420p or rgb24 frames.

`device` picks it: a V4L2 path (`/dev/video0`; a bare index `0` means the same), `auto` (the first
`/dev/video*` there is), or `FORMAT:TARGET` for any input device of the FFmpeg build
(`v4l2:/dev/video1`, `avfoundation:0` or `dshow:video=...` where the build has them, or FFmpeg's
virtual `lavfi` device, which stands in for a camera in tests and demos)::

    nodes:
      - {id: cam,  kind: camera, options: {device: /dev/video0, width: 1280, height: 720, fps: 30}}
      - {id: test, kind: camera, options: {device: "lavfi:testsrc2=size=1280x720:rate=30"}}

`width`, `height`, `fps` and `input_format` (mjpeg, yuyv422, ...; `auto`: the driver's choice) are
asked of devices that take a mode (V4L2: `video_size`, `framerate`, `input_format`); a device gives the
nearest mode it has.  The mode it actually gives (size, rate, pixel format, codec) is published in a
`capture_opened` event with the mode asked for and `as_requested`, and stays in the node's metrics
(`capture_width`, `capture_height`, `capture_fps`, `capture_pix_fmt`).  Output frames are always
scaled to the node's `width` x `height`, so a device that gave another size does not change the
stream.  The edge carries the decoder's yuv420p as it is when every consumer takes it (an encoder),
rgb24 otherwise (an RGB filter); `pix_fmt` forces one (docs/architecture.md, "Pixel formats on the
rings").

Frames follow the engine's media clock (frame k: `pts_ns = k * round(1e9/fps)`, `seq = k`), and the
device is read only as far as that clock has come (`mediaengine.sdk.capture.PacedCapture`): a real
camera paces itself, and the `lavfi` device, which produces as fast as it is read, runs in real time,
not faster.  Reads are bounded per tick, so heartbeats keep going.

An absent, busy or forbidden device is a typed error naming it (`DeviceNotFoundError` 1320,
`DeviceBusyError` 1321, `DeviceAccessError` 1323), a device that stops delivering is
`DeviceLostError` 1322; the supervisor restarts the node with its backoff while the encoder keeps the
stream alive with the last picture.  A malformed `device` string is an `OptionError` when the topology
is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mediaengine.sdk.actor import option
from mediaengine.sdk.capture import CaptureDevice, CaptureSource, mode_options, parse_device, resolve_device
from mediaengine.sdk.formats import Format

__all__ = ["Camera", "CameraOptions"]


@dataclass(frozen=True)
class CameraOptions:
    device: str = option("auto", doc="/dev/videoN, an index N, auto (first /dev/video*), or FORMAT:TARGET "
                                     "(v4l2:/dev/video1, lavfi:testsrc2=size=1280x720:rate=30)")
    width: int = option(1280, range=(16, 7680), doc="output width; also the width asked of the device")
    height: int = option(720, range=(16, 4320), doc="output height; also the height asked of the device")
    fps: float = option(30.0, range=(1.0, 120.0), doc="output frame rate; also the rate asked of the device")
    input_format: str = option("auto", doc="pixel format or codec asked of a V4L2 device: auto (the driver's "
                                           "choice), mjpeg, yuyv422, h264, ...")
    pix_fmt: str = option("auto", choices=("auto", "rgb24", "yuv420p"),
                          doc="pixel format on the output edge: auto (yuv420p when every consumer takes it, "
                              "else rgb24), or forced")


class Camera(CaptureSource):
    """Captures a camera (or any FFmpeg input device) in real time on `out`."""

    Options = CameraOptions
    #: where `device: auto` looks for `video*` nodes (a test points it elsewhere)
    dev_dir: ClassVar[str] = "/dev"

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        parse_device(options.device)  # OptionError at load time for a string that names no device

    def open_device(self) -> tuple[CaptureDevice, dict[str, Any] | None]:
        o: CameraOptions = self.options
        spec = resolve_device(o.device, self.dev_dir)
        opts = mode_options(spec, o.width, o.height, o.fps, o.input_format)
        requested = None
        if opts:
            requested = {"width": o.width, "height": o.height, "fps": o.fps, "input_format": o.input_format}
        return CaptureDevice(spec, opts), requested
