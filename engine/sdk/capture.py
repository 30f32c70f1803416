"""Capture devices through FFmpeg's input devices (PyAV): naming, opening, typed errors, paced reading.

The `camera` and `screen` actors open their device here.  One path opens every kind of device, so the
virtual `lavfi` device (FFmpeg's filter graphs as a source) exercises exactly the code that opens a
V4L2 camera::

    spec = resolve_device("lavfi:testsrc2=size=1280x720:rate=30")     # or /dev/video0, auto, v4l2:/dev/video1
    dev = CaptureDevice(spec, mode_options(spec, 1280, 720, 30.0, "auto"), errors=camera_open_error)
    paced = PacedCapture(dev, interval_ns=NS // 30)
    frame = paced.picture_for(k * interval_ns)   # the device picture showing at media time k*interval

Reading is paced by the engine's media clock, never by the device: `PacedCapture` reads only as far as
the device's own timestamps have to go to show the picture of a given media time, with a bounded
number of reads per call.  A real camera blocks each read until its next frame (it paces itself); the
`lavfi` device produces as fast as it is read (30 frames in 0.01 s), so without this pacing a test
camera would run many times faster than real time.

Errors are typed (`mediaengine.sdk.errors`, codes 132x) and name the device and the fix: an absent
device is `DeviceNotFoundError`, one in use `DeviceBusyError`, no permission `DeviceAccessError`, a
device that stops delivering `DeviceLostError`; the supervisor then restarts the actor with its backoff.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt

from .actor import Action, Actions, Actor, Context, Emit, Event, OutPort
from .errors import (
    DeviceAccessError,
    DeviceBusyError,
    DeviceLostError,
    DeviceNotFoundError,
    EngineError,
    OptionError,
)
from .formats import NS, Format, Frame, VideoFormat, checked_video_format, i420_shape
from .pacing import video_indices_due
from .pixels import frame_to_array

__all__ = [
    "MAX_READS_PER_PICTURE", "OPEN_OPTIONS", "OPEN_TIMEOUT_S", "READ_TIMEOUT_S", "RESYNC_NS", "CaptureDevice",
    "CaptureMode", "CaptureSource", "DeviceSpec", "PacedCapture", "camera_open_error", "find_video_devices",
    "input_device_formats", "mode_options", "parse_device", "read_error", "resolve_device", "video_to_rgb",
]

#: opening a device gives up after this long (a device that does not answer)
OPEN_TIMEOUT_S = 5.0
#: a read that gets no frame for this long raises DeviceLostError, well before the supervisor's heartbeat
#: timeout (1.5 s by default) takes the actor for hung; FFmpeg checks it where the device's read can be
#: interrupted (a read stuck inside a driver ioctl is left to the heartbeat timeout)
READ_TIMEOUT_S = 1.0
#: at most this many device frames are read to produce one output picture (a device faster than `fps`
#: has its extra frames dropped; beyond the bound the picture is shown late and the clock re-anchored)
MAX_READS_PER_PICTURE = 8
#: device time and media time drifting apart by more than this re-anchors the mapping between them
RESYNC_NS = NS
#: how a device is opened: without keeping the frames FFmpeg reads while it probes the stream
#: (`nobuffer`; kept, they come out first and show the screen or camera as it was at open time, measured:
#: six stale x11grab frames) and with the shortest probe (x11grab opened in 0.04 s instead of 0.7 s)
OPEN_OPTIONS = {"fflags": "nobuffer", "analyzeduration": "0", "probesize": "32"}

_DEVICE_HELP = "e.g. /dev/video0, auto, v4l2:/dev/video1 or lavfi:testsrc2=size=1280x720:rate=30"
#: the device options that carry the requested mode, per input format: (size, rate, pixel format)
_MODE_OPTIONS: dict[str, tuple[str, str, str | None]] = {
    "v4l2": ("video_size", "framerate", "input_format"),
    "avfoundation": ("video_size", "framerate", "pixel_format"),
    "dshow": ("video_size", "framerate", "pixel_format"),
    "x11grab": ("video_size", "framerate", None),
}


def input_device_formats() -> set[str]:
    """The input formats this FFmpeg build has (`video4linux2,v4l2` counts as both names)."""
    return {name for entry in av.formats_available for name in entry.split(",")}


@dataclass(frozen=True)
class DeviceSpec:
    """An FFmpeg input device: its input format (`v4l2`, `lavfi`, ...) and what `av.open` opens."""

    format: str
    target: str

    def describe(self) -> str:
        """How errors and events name the device: `/dev/video0`, or `FORMAT:TARGET` for the rest."""
        if self.format == "v4l2" and self.target.startswith("/dev/"):
            return self.target
        return f"{self.format}:{self.target}"


def parse_device(device: str, formats: set[str] | None = None) -> DeviceSpec | None:
    """The device a `device` option names; None for `auto` (resolved when the device is opened).

    Accepted: `auto`, a device path (`/dev/video0`: V4L2 implied), a camera index (`0` = /dev/video0),
    or `FORMAT:TARGET` for any input device of this FFmpeg (`formats`, default: this build's).  Anything
    else is an `OptionError` naming the accepted forms, raised when the topology is loaded.
    """
    text = device.strip()
    if text == "auto":
        return None
    if text.isdigit():
        return DeviceSpec("v4l2", f"/dev/video{int(text)}")
    if text.startswith("/"):
        return DeviceSpec("v4l2", text)
    fmt, sep, target = text.partition(":")
    if not sep or not fmt or not target:
        raise OptionError(f"device {device!r} is not a device path, an index, `auto` or FORMAT:TARGET ({_DEVICE_HELP})")
    fmt = "v4l2" if fmt == "video4linux2" else fmt
    available = input_device_formats() if formats is None else formats
    if fmt not in available:
        have = ", ".join(sorted(f for f in available if f in _MODE_OPTIONS or f in ("lavfi", "fbdev", "kmsgrab")))
        raise OptionError(f"device {device!r}: {fmt!r} is not an input device of this FFmpeg build "
                          f"(it has: {have}); {_DEVICE_HELP}")
    return DeviceSpec(fmt, target)


def find_video_devices(dev_dir: str | Path = "/dev") -> list[str]:
    """The V4L2 device nodes `dev_dir/video<N>`, in numeric order (video2 before video10)."""
    found = []
    for path in Path(dev_dir).glob("video*"):
        m = re.fullmatch(r"video(\d+)", path.name)
        if m:
            found.append((int(m.group(1)), str(path)))
    return [p for _, p in sorted(found)]


def resolve_device(device: str, dev_dir: str | Path = "/dev") -> DeviceSpec:
    """The device to open for a `device` option; `auto` takes the first `/dev/video*` there is.

    `auto` with no device node is a `DeviceNotFoundError` saying what was looked for; a restart (with
    the supervisor's backoff) looks again, so a camera plugged in later is found.
    """
    spec = parse_device(device)
    if spec is not None:
        return spec
    found = find_video_devices(dev_dir)
    if not found:
        raise DeviceNotFoundError(f"device auto: no capture device found (looked for {Path(dev_dir) / 'video*'}); "
                                  f"plug a camera in, or set `device` ({_DEVICE_HELP})")
    return DeviceSpec("v4l2", found[0])


def mode_options(spec: DeviceSpec, width: int, height: int, fps: float, input_format: str = "auto") -> dict[str, str]:
    """The device options that ask `spec` for a capture mode (only for formats that take them).

    `lavfi` takes none (its graph says its size and rate); V4L2 takes `video_size`, `framerate` and
    `input_format` (mjpeg, yuyv422, ...; `auto` lets the driver choose).
    """
    keys = _MODE_OPTIONS.get(spec.format)
    if keys is None:
        return {}
    size_key, rate_key, pix_key = keys
    opts = {size_key: f"{width}x{height}", rate_key: _rate_text(fps)}
    if pix_key is not None and input_format != "auto":
        opts[pix_key] = input_format
    return opts


def _rate_text(fps: float) -> str:
    rate = Fraction(fps).limit_denominator(1001)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


# ---- errors ---------------------------------------------------------------------------------------

def _strerror(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def camera_open_error(spec: DeviceSpec, e: BaseException) -> EngineError:
    """The typed error for a capture device that failed to open (`e` is what PyAV raised)."""
    name = spec.describe()
    code = getattr(e, "errno", None)
    if isinstance(e, FileNotFoundError) or code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return DeviceNotFoundError(f"capture device {name} not found ({_strerror(e)}); plug the camera in or fix "
                                   f"`device` ({_DEVICE_HELP}; `auto` takes the first one)")
    if code == errno.EBUSY:
        return DeviceBusyError(f"capture device {name} is busy: another program is using it; close that program "
                               f"(`fuser {spec.target}` shows it) or choose another `device`")
    if isinstance(e, PermissionError) or code in (errno.EACCES, errno.EPERM):
        return DeviceAccessError(f"no permission to open capture device {name} ({_strerror(e)}); add the user to "
                                 "the `video` group (usermod -aG video $USER, then log in again)")
    if spec.format == "v4l2" and code in (errno.ENOTTY, errno.EINVAL):
        return DeviceNotFoundError(f"{name} is not a video capture device ({_strerror(e)}); pick a camera's "
                                   "/dev/videoN (`v4l2-ctl --list-devices` lists them)")
    if isinstance(e, av.error.ExitError):
        return DeviceNotFoundError(f"capture device {name} did not open within {OPEN_TIMEOUT_S:g}s; check it")
    return DeviceNotFoundError(f"FFmpeg cannot open capture device {name}: {_strerror(e)}; check the device "
                               f"string ({_DEVICE_HELP})")


def read_error(spec: DeviceSpec, e: BaseException | None) -> DeviceLostError:
    """The error for a device that stopped delivering frames (`e` None: its stream ended)."""
    name = spec.describe()
    if e is None:
        return DeviceLostError(f"capture device {name} ended its stream (unplugged, or a lavfi graph with a "
                               "duration); the actor stops and its restart policy decides")
    if isinstance(e, av.error.ExitError):
        return DeviceLostError(f"capture device {name} delivered no frame for {READ_TIMEOUT_S:g}s (read timeout); "
                               "is it still connected?")
    return DeviceLostError(f"capture device {name} failed while reading ({_strerror(e)}); was it unplugged?")


# ---- the device -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaptureMode:
    """The mode a device actually delivers (it may differ from the one asked for)."""

    width: int
    height: int
    fps: float | None  # the stream's frame rate as the device reports it (None if it does not say)
    pix_fmt: str | None  # the pixel format of the decoded frames (e.g. yuyv422, yuvj422p, yuv420p)
    codec: str  # rawvideo, mjpeg, ...

    def as_dict(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "fps": self.fps, "pix_fmt": self.pix_fmt,
                "codec": self.codec}


OpenError = Callable[[DeviceSpec, BaseException], EngineError]


class CaptureDevice:
    """One open input device: `read()` returns its next decoded picture with the device's time in ns.

    Decoder errors on single packets (a corrupt MJPEG frame) are skipped and counted in
    `decode_errors`; the end of the device's stream or a failed read is `DeviceLostError`.
    """

    def __init__(self, spec: DeviceSpec, options: Mapping[str, str] | None = None, *,
                 errors: OpenError = camera_open_error, open_timeout_s: float = OPEN_TIMEOUT_S,
                 read_timeout_s: float = READ_TIMEOUT_S) -> None:
        self.spec = spec
        self.options = dict(options or {})
        self.frames_read = 0
        self.decode_errors = 0
        self._last_ns = -1
        try:
            self._container: Any = av.open(spec.target, "r", format=spec.format, options=self.options,
                                           container_options=OPEN_OPTIONS, timeout=(open_timeout_s, read_timeout_s))
        except (av.error.FFmpegError, OSError) as e:
            raise errors(spec, e) from e
        if not self._container.streams.video:
            self._container.close()
            raise DeviceNotFoundError(f"capture device {spec.describe()} has no video stream; pick a video device")
        self._stream = self._container.streams.video[0]
        ctx = self._stream.codec_context
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        self.mode = CaptureMode(int(ctx.width), int(ctx.height), float(rate) if rate else None,
                                ctx.pix_fmt, ctx.name)
        #: nominal time between the device's frames (from its reported rate; 30/s if it reports none)
        self.frame_ns = round(NS / self.mode.fps) if self.mode.fps else NS // 30
        self._packets = self._container.demux(self._stream)

    def read(self) -> tuple[int, av.VideoFrame]:
        """The next picture and its device time (ns, strictly increasing); blocks until the device has one."""
        while True:
            try:
                packet = next(self._packets)
            except StopIteration:
                raise read_error(self.spec, None) from None
            except (av.error.FFmpegError, OSError) as e:
                raise read_error(self.spec, e) from e
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                self.decode_errors += 1
                continue
            if not frames:
                if packet.size == 0:  # PyAV's flush packet after the device's end
                    raise read_error(self.spec, None)
                continue
            frame = frames[-1]
            self.frames_read += 1
            tb = frame.time_base or self._stream.time_base
            if frame.pts is not None and tb is not None:
                t = round(frame.pts * tb * NS)
            else:
                t = self._last_ns + self.frame_ns if self._last_ns >= 0 else 0
            t = max(t, self._last_ns + 1)
            self._last_ns = t
            if self.frames_read == 1:  # the decoded picture tells the real size and pixel format
                fmt = frame.format.name if frame.format is not None else self.mode.pix_fmt
                self.mode = CaptureMode(frame.width, frame.height, self.mode.fps, fmt, self.mode.codec)
            return t, frame

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class PacedCapture:
    """Reads a device only as far as the engine's media clock has come.

    The first picture asked for (media time `t0`) anchors device time to media time; after that, the
    picture for media time `t` is the newest device frame whose device time is not later than the
    anchored `t` (a quarter interval early counts as on time).  Frames the device makes faster than
    they are shown are read and dropped; a slower device's frames are shown again.  Reads per picture
    are bounded (`MAX_READS_PER_PICTURE`), and where device time and media time drift apart by more than
    `RESYNC_NS` (a stalled graph, a device clock that jumps) the anchor is set again and `resyncs` counts it.
    """

    def __init__(self, device: CaptureDevice, interval_ns: int, max_reads: int = MAX_READS_PER_PICTURE) -> None:
        self.device = device
        self.interval_ns = interval_ns
        self.max_reads = max_reads
        self.resyncs = 0
        self.pictures = 0  # device frames taken (changes whenever the picture does: a cache key)
        self._offset_ns: int | None = None  # device time minus media time
        self._frame: av.VideoFrame | None = None
        self._shown_ns = 0  # device time of `_frame`

    def picture_for(self, media_ns: int) -> av.VideoFrame:
        """The device picture showing at media time `media_ns` (times asked for must not go back)."""
        if self._frame is None or self._offset_ns is None:
            self._take()
            self._offset_ns = self._shown_ns - media_ns
            assert self._frame is not None
            return self._frame
        step = self.device.frame_ns
        due = media_ns + self._offset_ns + min(self.interval_ns, step) // 4
        reads = 0
        while self._shown_ns + step <= due and reads < self.max_reads:  # the next frame is due too: read it
            self._take()
            reads += 1
        if abs(self._shown_ns - (media_ns + self._offset_ns)) > RESYNC_NS:
            self._offset_ns = self._shown_ns - media_ns
            self.resyncs += 1
        return self._frame

    def _take(self) -> None:
        self._shown_ns, self._frame = self.device.read()
        self.pictures += 1



# ---- the source actors' common part --------------------------------------------------------------

def video_to_rgb(frame: av.VideoFrame, width: int, height: int) -> npt.NDArray[np.uint8]:
    """A captured picture as a C-contiguous HxWx3 rgb24 array of the output size (scaled by swscale)."""
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return np.ascontiguousarray(rgb, dtype=np.uint8)


class CaptureSource(Actor[Any]):
    """What `camera` and `screen` share: open a device in `setup`, emit its pictures on the media clock.

    A subclass declares `Options` (with `width`, `height` and `fps`: the output frames, scaled to that
    size) and `open_device()`.  Frame k has `pts_ns = k * interval_ns` and `seq = k` on the engine's
    timeline (`video_indices_due`, like `test_pattern`), so a restarted source continues it.  The first
    tick publishes `capture_opened` with the mode the device actually gives, the mode asked for, and
    whether they agree (a device gives the nearest mode it has).  `metrics()` carries the same mode and
    the counters: frames emitted, device frames read, decode errors, clock re-anchors.
    """

    #: the decoder's I420 goes on as it is when every consumer takes yuv420p (an encoder); rgb24 for filters
    outputs = {"out": OutPort("video", default=True, pix_fmts=("yuv420p", "rgb24"))}
    is_source = True

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        return {"out": checked_video_format(options.width, options.height, options.fps)}

    def open_device(self) -> tuple[CaptureDevice, dict[str, Any] | None]:
        """Open the device; returns it and the mode asked of it (None where the device takes no mode)."""
        raise NotImplementedError

    def setup(self, ctx: Context) -> Actions:
        self._ctx = ctx
        self.tick_interval_ns = round(NS / self.options.fps)
        self.device, self._requested = self.open_device()
        self._paced = PacedCapture(self.device, self.tick_interval_ns)
        self._next: int | None = None
        self._rgb: npt.NDArray[np.uint8] | None = None
        self._rgb_of = -1  # `PacedCapture.pictures` when `_rgb` was converted
        out_fmt = ctx.output_formats.get("out")
        self._pix_fmt = out_fmt.pix_fmt if isinstance(out_fmt, VideoFormat) else "rgb24"  # the loader's choice
        # every device picture is converted into this one buffer: a new 1-3 MB array per frame costs
        # glibc an mmap + munmap and some thousand page faults each time (+2-3 ms measured)
        shape = i420_shape(self.options.width, self.options.height) if self._pix_fmt == "yuv420p" else (
            self.options.height, self.options.width, 3)
        self._converted: npt.NDArray[np.uint8] = np.empty(shape, np.uint8)
        self._announced = False
        self.frames_emitted = 0
        self.repeated_frames = 0  # frames that showed the same device picture as the frame before
        self._emitted_of = -1  # `PacedCapture.pictures` of the last frame emitted
        return None

    def on_tick(self, now_ns: int) -> Actions:
        interval = self.tick_interval_ns
        assert interval is not None, "setup() not called"
        actions: list[Action] = []
        for i, k in enumerate(video_indices_due(self._next, now_ns, interval)):
            self._next = k + 1
            rgb = self._picture(k * interval)
            target = self._ctx.output_buffer("out") if i == 0 else None  # the ring slot, when one is lent
            if target is not None:
                np.copyto(target, rgb)
                rgb = target
            elif rgb is self._converted:  # reused for the next picture: the frame keeps its own copy
                rgb = rgb.copy()
            # meta `source` names the device: a consumer sees a camera switch in order with the frames
            actions.append(Emit("out", Frame(rgb, pts_ns=k * interval, seq=k,
                                             meta={"source": self.device.spec.describe()})))
            self.frames_emitted += 1
        if not self._announced and actions:
            self._announced = True
            actions.insert(0, Event("capture_opened", self.opened()))
        return actions

    def _picture(self, media_ns: int) -> npt.NDArray[np.uint8]:
        frame = self._paced.picture_for(media_ns)
        if self._rgb is None or self._rgb_of != self._paced.pictures:  # convert each device picture once
            self._rgb = self.convert(frame)
            self._rgb_of = self._paced.pictures
        if self._emitted_of == self._paced.pictures:
            self.repeated_frames += 1
        self._emitted_of = self._paced.pictures
        return self._rgb

    def convert(self, frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
        """A device picture as the output frame, in the edge's pixel format (a subclass may crop it first:
        the camera's digital zoom).  Written into the source's one conversion buffer (the next picture
        overwrites it; `on_tick` copies it into the ring slot)."""
        return frame_to_array(frame, self.options.width, self.options.height, self._pix_fmt, self._converted)

    def opened(self) -> dict[str, Any]:
        """The `capture_opened` event: the device, the mode it gives, the mode asked for, and whether
        they agree (None where nothing was asked: a lavfi graph sets its own mode)."""
        mode = self.device.mode
        req = self._requested
        agrees = None
        if req is not None:
            agrees = (mode.width, mode.height) == (req["width"], req["height"]) and (
                mode.fps is None or abs(mode.fps - req["fps"]) < 0.01)
        return {"device": self.device.spec.describe(), "format": self.device.spec.format, **mode.as_dict(),
                "requested": req, "as_requested": agrees,
                "output": {"width": self.options.width, "height": self.options.height, "fps": self.options.fps}}

    def metrics(self) -> dict[str, Any]:
        mode = self.device.mode
        return {"device": self.device.spec.describe(), "capture_width": mode.width, "capture_height": mode.height,
                "capture_fps": mode.fps, "capture_pix_fmt": mode.pix_fmt, "frames_emitted": self.frames_emitted,
                "frames_read": self.device.frames_read, "decode_errors": self.device.decode_errors,
                "resyncs": self._paced.resyncs, "repeated_frames": self.repeated_frames}

    def stop(self) -> Actions:
        self.device.close()
        return None
