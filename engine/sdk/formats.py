"""Formats declared on ports, and the frames and packets that travel between actors.

A format says what travels on an edge; the topology loader computes every output format before any
process starts and rejects links whose formats do not match.  Three families:

- `VideoFormat`: raw pictures, size and fps: `rgb24` (HxWx3 uint8, what filters work on) or
  `yuv420p` (I420: one (H*3/2)xW uint8 array, the Y plane then U then V, what decoders give and the
  encoder takes; the loader picks it for an edge when the producer can emit it and every consumer
  accepts it, see `negotiate_pix_fmt` and docs/architecture.md "Pixel formats on the rings");
- `AudioFormat`: raw PCM (`s16` interleaved, shape (samples, channels) int16), rate, channels and
  samples per frame;
- `EncodedFormat`: compressed packets (`h264` Annex B, `aac` raw), which travel inline in the
  descriptor instead of a ring slot.

Media time is integer nanoseconds (`pts_ns`) on raw frames; packets carry PyAV-style pts/dts with a
time base.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Literal

import numpy.typing as npt

from .errors import FormatError, FrameSizeError, OptionError

MediaKind = Literal["video", "audio", "encoded"]

NS = 1_000_000_000


@dataclass(frozen=True)
class VideoFormat:
    """Raw video.  `max_width` x `max_height` (0 = the size itself) bound the sizes this stream may
    switch to mid-stream (`ChangeFormat`): ring slots are sized for the bound, so a change within it
    needs no new segment (docs/architecture.md, "Format changes")."""

    width: int
    height: int
    fps: float
    pix_fmt: str = "rgb24"
    kind: MediaKind = "video"
    max_width: int = 0
    max_height: int = 0

    @property
    def channels(self) -> int:
        return {"rgb24": 3, "bgr24": 3, "gray": 1, "rgba": 4}.get(self.pix_fmt, 3)

    @property
    def shape(self) -> tuple[int, ...]:
        """The frame array's shape: HxWxC for packed RGB, (H*3/2)xW for I420 (`yuv420p`)."""
        if self.pix_fmt == "yuv420p":
            return i420_shape(self.width, self.height)
        return (self.height, self.width, self.channels)

    @property
    def frame_bytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def slot_bytes(self) -> int:
        """Bytes a ring slot needs for any frame of this stream, up to its declared maximum size."""
        w, h = max(self.width, self.max_width), max(self.height, self.max_height)
        if self.pix_fmt == "yuv420p":
            return w * (h + (h + 1) // 2)
        return w * h * self.channels

    @property
    def dtype(self) -> str:
        return "uint8"

    def describe(self) -> str:
        return f"video {self.pix_fmt} {self.width}x{self.height}@{self.fps:g}"


@dataclass(frozen=True)
class AudioFormat:
    rate: int
    channels: int
    samples_per_frame: int = 1024
    sample_fmt: str = "s16"
    kind: MediaKind = "audio"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.samples_per_frame, self.channels)

    @property
    def frame_bytes(self) -> int:
        return self.samples_per_frame * self.channels * 2

    @property
    def slot_bytes(self) -> int:
        return self.frame_bytes

    @property
    def dtype(self) -> str:
        return "int16"

    def describe(self) -> str:
        return f"audio {self.sample_fmt} {self.rate}Hz {self.channels}ch x{self.samples_per_frame}"


@dataclass(frozen=True)
class EncodedFormat:
    codec: str  # "h264" | "aac"
    bitstream: str = ""  # "annexb" for h264, "raw" for aac
    kind: MediaKind = "encoded"

    def describe(self) -> str:
        return f"encoded {self.codec}/{self.bitstream}" if self.bitstream else f"encoded {self.codec}"


Format = VideoFormat | AudioFormat | EncodedFormat

#: the pixel formats a video edge (a ring) can carry
RING_PIX_FMTS: tuple[str, ...] = ("rgb24", "yuv420p")


def i420_shape(width: int, height: int) -> tuple[int, int]:
    """The array shape of an I420 (`yuv420p`) picture: the Y plane (H rows) then U and V (H/4 rows
    each at full width), i.e. (H*3/2, W), which is what `av.VideoFrame.from_ndarray(a, "yuv420p")` and
    `cv2.cvtColor(..., COLOR_RGB2YUV_I420)` use.  Width and height must be even."""
    return (height * 3 // 2, width)


def pix_fmt_fits(pix_fmt: str, width: int, height: int) -> bool:
    """Whether a `width` x `height` picture can travel as `pix_fmt` (I420 needs an even size)."""
    return pix_fmt != "yuv420p" or (width % 2 == 0 and height % 2 == 0)


#: the largest frame the engine accepts (width x height): 8K UHD.  A source that declares more (a
#: 16k x 16k image, a crafted stream header) fails at load with FrameSizeError instead of allocating
#: rings and buffers of gigabytes.
MAX_FRAME_PIXELS = 7680 * 4320


def check_frame_size(width: int, height: int, what: str) -> None:
    """Raise FrameSizeError unless 1 <= width, height and width x height <= MAX_FRAME_PIXELS."""
    if width < 1 or height < 1 or width * height > MAX_FRAME_PIXELS:
        raise FrameSizeError(f"{what} is {width}x{height} ({width * height:,} pixels); at most "
                             f"{MAX_FRAME_PIXELS:,} pixels (7680x4320) are accepted: scale it down")


def checked_video_format(width: int, height: int, fps: float, pix_fmt: str = "rgb24") -> VideoFormat:
    """A VideoFormat from actor options, or an OptionError saying which value is out of range."""
    if not (16 <= width <= 7680 and 16 <= height <= 4320):
        raise OptionError(f"size {width}x{height} is out of range (16..7680 x 16..4320)")
    if not 0.1 <= fps <= 240.0:
        raise OptionError(f"fps {fps:g} is out of range (0.1..240)")
    return VideoFormat(width, height, fps, pix_fmt)


def checked_audio_format(rate: int, channels: int, samples_per_frame: int) -> AudioFormat:
    """An AudioFormat from actor options, or an OptionError saying which value is out of range."""
    if channels not in (1, 2):
        raise OptionError(f"channels must be 1 or 2, got {channels}")
    if not 8000 <= rate <= 192000:
        raise OptionError(f"rate {rate} is out of range (8000..192000)")
    if not 16 <= samples_per_frame <= rate:
        raise OptionError(f"samples_per_frame {samples_per_frame} is out of range (16..rate)")
    return AudioFormat(rate, channels, samples_per_frame)

H264 = EncodedFormat("h264", "annexb")
AAC = EncodedFormat("aac", "raw")


def format_to_wire(fmt: Format) -> dict[str, Any]:
    """A msgpack-able dict for a format (used in ring headers and descriptors)."""
    if isinstance(fmt, VideoFormat):
        d: dict[str, Any] = {"kind": "video", "width": fmt.width, "height": fmt.height, "fps": fmt.fps,
                             "pix_fmt": fmt.pix_fmt}
        if fmt.max_width or fmt.max_height:
            d.update(max_width=fmt.max_width, max_height=fmt.max_height)
        return d
    if isinstance(fmt, AudioFormat):
        return {"kind": "audio", "rate": fmt.rate, "channels": fmt.channels,
                "samples_per_frame": fmt.samples_per_frame, "sample_fmt": fmt.sample_fmt}
    return {"kind": "encoded", "codec": fmt.codec, "bitstream": fmt.bitstream}


def _field(d: dict[str, Any], name: str, tp: type[Any], default: Any = None) -> Any:
    value = d.get(name, default)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, tp) or isinstance(value, bool):
        raise FormatError(f"format field {name!r} is {value!r}, expected {tp.__name__}")
    return value


def format_from_wire(d: Any) -> Format:
    """Inverse of `format_to_wire`, checking every field: anything malformed is a FormatError."""
    if not isinstance(d, dict):
        raise FormatError(f"a format must be a map, got {type(d).__name__}")
    kind = d.get("kind")
    if kind == "video":
        return VideoFormat(_field(d, "width", int), _field(d, "height", int), _field(d, "fps", float),
                           _field(d, "pix_fmt", str), max_width=_field(d, "max_width", int, 0),
                           max_height=_field(d, "max_height", int, 0))
    if kind == "audio":
        return AudioFormat(_field(d, "rate", int), _field(d, "channels", int),
                           _field(d, "samples_per_frame", int), _field(d, "sample_fmt", str))
    if kind == "encoded":
        return EncodedFormat(_field(d, "codec", str), _field(d, "bitstream", str, ""))
    raise FormatError(f"unknown format kind {kind!r} (video, audio or encoded)")


@dataclass
class Frame:
    """A raw video or audio frame.

    `data` is a numpy array: HxWxC uint8 for video, (samples, channels) int16 for audio.  Frames
    handed to `on_frame` are zero-copy views into a shared-memory slot, valid only during the call:
    copy what you keep.  `seq` is the producer's sequence number on its port.
    """

    data: npt.NDArray[Any]
    pts_ns: int
    seq: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Frame:
        return replace(self, **changes)


@dataclass
class Packet:
    """An encoded packet (H.264 access unit in Annex B, or a raw AAC frame).

    `params` carries what a muxer needs to set the stream up (codec, size or rate, extradata); an
    encoder attaches it to every keyframe so a restarted consumer can start from any keyframe.
    """

    data: bytes
    pts: int
    dts: int
    time_base: Fraction
    keyframe: bool = False
    params: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pts_ns(self) -> int:
        return int(self.pts * self.time_base * NS)

    def replace(self, **changes: Any) -> Packet:
        return replace(self, **changes)


Media = Frame | Packet
