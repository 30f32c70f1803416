"""Camera source: any capture device FFmpeg opens through PyAV's input devices, as yuv420p or rgb24 frames.

`device` picks it: a V4L2 path (`/dev/video0`; a bare index `0` means the same), `auto` (the first
`/dev/video*` there is), or `FORMAT:TARGET` for any input device of the FFmpeg build
(`v4l2:/dev/video1`, `avfoundation:0` or `dshow:video=...` where the build has them, or FFmpeg's
virtual `lavfi` device, which stands in for a camera in tests and demos)::

    nodes:
      - {id: cam,  kind: camera, options: {device: /dev/video0, width: 1280, height: 720, fps: 30}}
      - {id: test, kind: camera, options: {device: "lavfi:testsrc2=size=1280x720:rate=30"}}
      - {id: two,  kind: camera, options: {devices: [/dev/video0, /dev/video2], zoom: 1.5}}

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

Camera controls are live options (`mediaengine ctl cam set zoom=2 zoom_x=0.3`, `Engine.set("cam", ...)`):
`autofocus`, `focus` (0..100, manual: autofocus goes off), `zoom` (1..4; optical through the device's
`zoom_absolute` where it has one, else digital: the picture is cropped to 1/zoom around (`zoom_x`,
`zoom_y`) and scaled back to the output size), `torch` and `exposure_compensation` (-100..100).  They go
through `mediaengine.sdk.camera_controls` (V4L2 controls via linuxpy); a device without the control
answers with `ControlUnsupportedError` (1325; the torch: `NoTorchError`, 1326) and the option keeps its
value.  A `lavfi` camera has no V4L2 controls: only the digital zoom applies.  Commands:

- `capabilities`: the device, its modes and its controls (`mediaengine ctl cam capabilities`);
- `switch [device=...]`: the next device of `devices` (or the one named), opened while the push goes on;
  its pictures are scaled to the output size, the `camera_switched` event says how long the open took,
  and every frame's meta `source` names the device it came from.

`min_fps` (default 8, the reference SDK's minimum frame rate): the device's own rate of new pictures is
measured over each second; below `min_fps` the output keeps `fps` by repeating the last picture
(metric `repeated_frames`) and a `capture_fps_low` event reports it (`capture_fps_ok` when it recovers).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import av
import cv2
import numpy as np
import numpy.typing as npt
from mediaengine.sdk.actor import Action, Actions, Context, Event, Reply, option
from mediaengine.sdk.camera_controls import MAX_ZOOM, CameraControls, ControlsBackend, NoControls, V4L2Controls
from mediaengine.sdk.capture import (
    CaptureDevice,
    CaptureSource,
    DeviceSpec,
    PacedCapture,
    mode_options,
    parse_device,
    resolve_device,
)
from mediaengine.sdk.errors import CameraSwitchError, EngineError, OptionError
from mediaengine.sdk.formats import NS, Format

__all__ = ["Camera", "CameraOptions", "digital_zoom", "zoom_window"]

#: opening the device a `switch` names gives up after this long (the actor's loop waits for it, so it
#: must stay well under the supervisor's heartbeat timeout)
SWITCH_OPEN_TIMEOUT_S = 1.0
#: the window over which the device's own rate of new pictures is measured for `min_fps`
RATE_WINDOW_NS = NS


@dataclass(frozen=True)
class CameraOptions:
    device: str = option("auto", doc="/dev/videoN, an index N, auto (first /dev/video*), or FORMAT:TARGET "
                                     "(v4l2:/dev/video1, lavfi:testsrc2=size=1280x720:rate=30)")
    width: int = option(1280, range=(16, 7680), doc="output width; also the width asked of the device")
    height: int = option(720, range=(16, 4320), doc="output height; also the height asked of the device")
    fps: float = option(30.0, range=(1.0, 120.0), doc="output frame rate; also the rate asked of the device")
    input_format: str = option("auto", doc="pixel format or codec asked of a V4L2 device: auto (the driver's "
                                           "choice), mjpeg, yuyv422, h264, ...")
    devices: tuple[str, ...] = option((), doc="devices `switch` goes through (front/back); the camera starts on "
                                              "`device` if listed, else on the first")
    min_fps: float = option(8.0, range=(1.0, 120.0), doc="lowest rate of new device pictures; below it the last "
                                                         "picture is repeated and capture_fps_low reported")
    autofocus: bool | None = option(None, live=True, doc="continuous autofocus on/off (null: leave the device's)")
    focus: float | None = option(None, range=(0.0, 100.0), live=True,
                                 doc="manual focus 0 (far) .. 100 (near); turns autofocus off (null: leave it)")
    zoom: float = option(1.0, range=(1.0, MAX_ZOOM), live=True,
                         doc="zoom factor: optical where the device has zoom_absolute, else digital crop + scale")
    zoom_x: float = option(0.5, range=(0.0, 1.0), live=True, doc="digital zoom centre, fraction of the width")
    zoom_y: float = option(0.5, range=(0.0, 1.0), live=True, doc="digital zoom centre, fraction of the height")
    torch: bool = option(False, live=True, doc="the device's light (torch/flash) on; NoTorchError without one")
    exposure_compensation: float | None = option(None, range=(-100.0, 100.0), live=True,
                                                 doc="-100..100 around the device's default exposure (null: leave it)")
    pix_fmt: str = option("auto", choices=("auto", "rgb24", "yuv420p"),
                          doc="pixel format on the output edge: auto (yuv420p when every consumer takes it, "
                              "else rgb24), or forced")


# ---- pure media functions -------------------------------------------------------------------------

def zoom_window(width: int, height: int, factor: float, cx: float, cy: float) -> tuple[int, int, int, int]:
    """(x, y, w, h): the part of a `width` x `height` picture a digital zoom of `factor` shows, centred
    on (`cx`, `cy`) (fractions of the size) and moved inside the picture where it would leave it."""
    w = max(1, min(width, round(width / factor)))
    h = max(1, min(height, round(height / factor)))
    x = min(max(round(cx * width - w / 2), 0), width - w)
    y = min(max(round(cy * height - h / 2), 0), height - h)
    return x, y, w, h


def digital_zoom(src: npt.NDArray[np.uint8], factor: float, cx: float, cy: float,
                 out: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Write the zoomed picture of `src` (HxWx3) into `out` (any size): crop, then a bilinear scale."""
    x, y, w, h = zoom_window(src.shape[1], src.shape[0], factor, cx, cy)
    cv2.resize(src[y:y + h, x:x + w], (out.shape[1], out.shape[0]), dst=out, interpolation=cv2.INTER_LINEAR)
    return out


def next_device(devices: tuple[str, ...], current: str, wanted: str | None) -> str:
    """The device `switch` goes to: `wanted` (which must be listed), else the one after `current`."""
    if not devices:
        raise CameraSwitchError("this camera has no `devices` list to switch between; set devices: [a, b]")
    if wanted is not None:
        if wanted not in devices:
            raise CameraSwitchError(f"device {wanted!r} is not in this camera's devices {list(devices)}; "
                                    "switch to one of them")
        return wanted
    if len(devices) < 2 and current in devices:
        raise CameraSwitchError(f"devices {list(devices)} has no other device to switch to")
    i = devices.index(current) if current in devices else -1
    return devices[(i + 1) % len(devices)]


def default_controls(spec: DeviceSpec) -> ControlsBackend:
    """The controls of a device: its V4L2 controls (linuxpy) for a V4L2 path, none for anything else."""
    if spec.format == "v4l2" and spec.target.startswith("/dev/"):
        return V4L2Controls(spec.target)
    return NoControls()


# ---- the actor ------------------------------------------------------------------------------------

class Camera(CaptureSource):
    """Captures a camera (or any FFmpeg input device) in real time on `out`, with live controls."""

    Options = CameraOptions
    #: where `device: auto` looks for `video*` nodes (a test points it elsewhere)
    dev_dir: ClassVar[str] = "/dev"
    #: the controls backend of a device (a test gives a recorded webcam's table instead)
    controls_for: ClassVar[Callable[[DeviceSpec], ControlsBackend]] = staticmethod(default_controls)

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        parse_device(options.device)  # OptionError at load time for a string that names no device
        for d in options.devices:
            parse_device(d)
        if options.min_fps > options.fps:
            raise OptionError(f"min_fps {options.min_fps:g} is above fps {options.fps:g}; lower min_fps or raise fps")

    def _current_name(self) -> str:
        o: CameraOptions = self.options
        if o.devices and o.device not in o.devices:
            return o.devices[0]
        return o.device

    def open_device(self) -> tuple[CaptureDevice, dict[str, Any] | None]:
        return self._open(self._current_name(), None)

    def _open(self, name: str, timeout_s: float | None) -> tuple[CaptureDevice, dict[str, Any] | None]:
        o: CameraOptions = self.options
        spec = resolve_device(name, self.dev_dir)
        opts = mode_options(spec, o.width, o.height, o.fps, o.input_format)
        requested = None
        if opts:
            requested = {"width": o.width, "height": o.height, "fps": o.fps, "input_format": o.input_format}
        extra = {} if timeout_s is None else {"open_timeout_s": timeout_s}
        return CaptureDevice(spec, opts, **extra), requested

    def setup(self, ctx: Context) -> Actions:
        super().setup(ctx)
        self._name = self._current_name()
        self.switches = 0
        self._rate_start: tuple[int, int] | None = None  # (media ns, pictures) where the rate window began
        self.device_fps: float | None = None
        self._low = False
        self._controls = CameraControls(type(self).controls_for(self.device.spec), self.device.spec.describe())
        self.applied: dict[str, int] = {}  # the V4L2 control values this node wrote
        o: CameraOptions = self.options
        for name in ("autofocus", "focus", "exposure_compensation"):
            if getattr(o, name) is not None:
                self._apply(name)
        if o.torch:
            self._apply("torch")
        if o.zoom > 1:
            self._apply("zoom")
        return None

    # -- controls
    def _apply(self, name: str) -> None:
        o: CameraOptions = self.options
        c = self._controls
        if name == "autofocus" and o.autofocus is not None:
            self.applied.update(c.set_autofocus(o.autofocus))
        elif name == "focus" and o.focus is not None:
            self.applied.update(c.set_focus(o.focus))
        elif name == "zoom" and c.zoom_mode() == "optical":
            self.applied.update(c.set_optical_zoom(o.zoom))
        elif name == "torch":
            self.applied.update(c.set_torch(o.torch))
        elif name == "exposure_compensation" and o.exposure_compensation is not None:
            self.applied.update(c.set_exposure_compensation(o.exposure_compensation))
        if name in ("zoom", "zoom_x", "zoom_y"):
            self._rgb_of = -1  # the digital zoom changes the picture of the same device frame

    def replace_options(self, options: Any) -> None:
        self._before = getattr(self, "options", options)  # what `set` replaced: restored if the device refuses
        super().replace_options(options)

    def on_option_changed(self, name: str, value: Any) -> Actions:
        try:
            self._apply(name)
        except EngineError:  # the device refused: the option keeps the value the device still has
            self.replace_options(dataclasses.replace(self.options, **{name: getattr(self._before, name)}))
            raise
        return [Event("camera_control", {"option": name, "value": value, "controls": dict(self.applied)})]

    def convert(self, frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
        o: CameraOptions = self.options
        if o.zoom <= 1 or self._controls.zoom_mode() == "optical":
            return super().convert(frame)
        full = frame.to_ndarray(format="rgb24")  # crop at the device's resolution, then scale once
        out = np.empty((o.height, o.width, 3), np.uint8)
        zoomed = digital_zoom(full, o.zoom, o.zoom_x, o.zoom_y, out)
        if self._pix_fmt == "yuv420p":  # the edge carries I420: convert the zoomed picture once
            return cv2.cvtColor(zoomed, cv2.COLOR_RGB2YUV_I420)
        return zoomed

    # -- commands
    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "capabilities":
            return [Reply(self.capabilities())]
        if command == "switch":
            wanted = args.get("device")
            if wanted is not None and not isinstance(wanted, str):
                raise CameraSwitchError(f"switch: device must be a string, got {wanted!r}")
            return self._switch(wanted)
        return super().on_control(command, args)

    def capabilities(self) -> dict[str, Any]:
        backend = self._controls.backend
        modes = getattr(backend, "modes", None) or [{**self.device.mode.as_dict(), "current": True}]
        return {"device": self.device.spec.describe(), "devices": list(self.options.devices),
                "mode": self.device.mode.as_dict(), "modes": modes, **self._controls.capabilities()}

    def _switch(self, wanted: str | None) -> Actions:
        target = next_device(self.options.devices, self._name, wanted)
        t0 = time.monotonic()
        device, requested = self._open(target, SWITCH_OPEN_TIMEOUT_S)  # a failure keeps the current device
        open_ms = round((time.monotonic() - t0) * 1000, 1)
        previous = self.device.spec.describe()
        self._controls.close()
        self.device.close()
        self.device, self._requested, self._name = device, requested, target
        self._paced = PacedCapture(device, self.tick_interval_ns)
        self._rgb, self._rgb_of, self._emitted_of = None, -1, -1
        self._rate_start = None
        self._announced = False  # the next frame publishes capture_opened for the new device
        self._controls = CameraControls(type(self).controls_for(device.spec), device.spec.describe())
        self.applied = {}
        if self.options.zoom > 1:
            self._apply("zoom")
        self.switches += 1
        info = {"device": device.spec.describe(), "previous": previous, "open_ms": open_ms, "switches": self.switches}
        return [Reply(info), Event("camera_switched", info)]

    # -- min_fps
    def on_tick(self, now_ns: int) -> Actions:
        actions = list(super().on_tick(now_ns) or [])
        if actions and self._next is not None:
            actions.extend(self._watch_rate((self._next - 1) * self.tick_interval_ns))
        return actions

    def _watch_rate(self, media_ns: int) -> list[Action]:
        pictures = self._paced.pictures
        if self._rate_start is None:
            self._rate_start = (media_ns, pictures)
            return []
        t0, p0 = self._rate_start
        if media_ns - t0 < RATE_WINDOW_NS:
            return []
        self.device_fps = round((pictures - p0) * NS / (media_ns - t0), 2)
        self._rate_start = (media_ns, pictures)
        low = self.device_fps < self.options.min_fps
        if low == self._low:
            return []
        self._low = low
        data = {"device": self.device.spec.describe(), "device_fps": self.device_fps, "min_fps": self.options.min_fps,
                "fps": self.options.fps}
        return [Event("capture_fps_low" if low else "capture_fps_ok", data)]

    def metrics(self) -> dict[str, Any]:
        return {**super().metrics(), "device_fps": self.device_fps, "below_min_fps": self._low,
                "switches": self.switches, "zoom": self.options.zoom,
                "zoom_mode": self._controls.zoom_mode()}

    def stop(self) -> Actions:
        self._controls.close()
        return super().stop()
