"""Choosing and opening an H.264 encoder: libx264 or a hardware encoder, with fallback.

`codec: auto` tries, in order, the hardware encoders this FFmpeg build has (`HARDWARE`) and that the
machine can open (a GPU, a driver, a device node), then libx264.  An explicit hardware codec that
cannot open raises `HardwareEncoderError` (code 1350), unless `fallback` is true: then libx264 opens
and the failures are returned so the actor can publish an `encoder_fallback` event naming them.

Each codec gets the rate-control options that make its bit rate a target with a VBV cap
(`codec_options`), so the rate controller's `bitrate_kbps` changes mean the same for every codec.
Only libx264 retargets its bit rate in place (`RETARGETS_IN_PLACE`); the others reopen (an IDR).

Measured on the build PyAV 18 bundles (no GPU on the test machines): `h264_nvenc` is in the build
and fails to open with EPERM (no CUDA device), `h264_qsv` and `h264_v4l2m2m` are in the build and
fail with EINVAL (no device), `h264_vaapi` is not in the build.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av

from .errors import EncoderError, HardwareEncoderError

SOFTWARE = "libx264"
#: hardware encoders `auto` tries, in this order
HARDWARE: tuple[str, ...] = ("h264_nvenc", "h264_vaapi", "h264_qsv", "h264_v4l2m2m")
CODECS: tuple[str, ...] = ("auto", SOFTWARE, *HARDWARE)
#: the pixel format each encoder is fed (the actor converts yuv420p to it when it differs)
PIX_FMTS: Mapping[str, str] = {"libx264": "yuv420p", "h264_nvenc": "yuv420p", "h264_vaapi": "yuv420p",
                               "h264_qsv": "nv12", "h264_v4l2m2m": "yuv420p"}
#: codecs whose bit rate can be lowered in place (the others reopen at the new rate)
RETARGETS_IN_PLACE = frozenset({SOFTWARE})


@dataclass(frozen=True)
class EncoderSettings:
    """What every H.264 encoder is opened with (codec-specific options derive from it)."""

    width: int
    height: int
    fps: float
    time_base: Fraction
    gop: int
    bframes: int
    bitrate_kbps: int
    vbv_buffer_s: float
    threads: int = 1
    preset: str = "veryfast"  # x264 preset (hardware encoders use their own low-latency preset)
    tune: str = "zerolatency"  # x264 tune(s)
    profile: str = ""
    colorspace: int = 0  # AVColorSpace tag (0 = unspecified)
    color_range: int = 0  # AVColorRange tag (0 = unspecified)
    vbv_init: float = 0.0  # x264: the VBV buffer's fill at open, as a share of it (0 = x264's own, 0.9)


#: x264's VBV fill for an encoder reopened mid-stream (a bit rate raise, a new size): x264 starts 90%
#: full, so its first frames (the IDR above all) may spend almost a whole buffer at once: with noise at
#: 2 Mbit/s, 2.0 Mbit in the first 250 ms, which queues for half a second on a link with room and reads
#: as congestion.  At 0.3: 0.8 Mbit (nominal 0.5), the IDR still gets 0.3 s of the bit rate
#: (measured: docs/architecture.md "A raise's keyframe is not congestion").
REOPEN_VBV_INIT = 0.3


@dataclass(frozen=True)
class Failure:
    """One encoder that could not open, and why (for `encoder_fallback` and error messages)."""

    codec: str
    error: str


def candidates(codec: str, fallback: bool, available: frozenset[str] | set[str]) -> list[str]:
    """The encoders to try, in order, for `codec` (`auto` = the hardware ones in the build, then
    libx264; an explicit hardware codec = it, then libx264 only with `fallback`)."""
    if codec == "auto":
        return [c for c in HARDWARE if c in available] + [SOFTWARE]
    if codec == SOFTWARE:
        return [SOFTWARE]
    return [codec, SOFTWARE] if fallback else [codec]


def codec_options(codec: str, s: EncoderSettings) -> dict[str, str]:
    """The FFmpeg private options for `codec`: low latency, bit rate with a VBV cap of the bit rate."""
    rate = f"{s.bitrate_kbps}k"
    buf = f"{max(1, round(s.bitrate_kbps * s.vbv_buffer_s))}k"
    if codec == SOFTWARE:
        opts = {"preset": s.preset, "maxrate": rate, "bufsize": buf, "forced-idr": "1",
                "sc_threshold": "0"}  # no scene-cut keyframes: a steady GOP for players and HLS
        if s.tune:
            opts["tune"] = s.tune
        if s.profile:
            opts["profile"] = s.profile
        if s.vbv_init:
            opts["x264-params"] = f"vbv-init={s.vbv_init:g}"
        return opts
    if codec == "h264_nvenc":
        opts = {"preset": "p1", "tune": "ll", "rc": "cbr", "zerolatency": "1", "delay": "0",
                "forced-idr": "1", "maxrate": rate, "bufsize": buf}
    elif codec == "h264_qsv":
        opts = {"preset": "veryfast", "look_ahead": "0", "maxrate": rate, "bufsize": buf}
    elif codec == "h264_vaapi":
        opts = {"rc_mode": "CBR", "maxrate": rate, "bufsize": buf}
    else:  # h264_v4l2m2m: the device's own rate control takes only the bit rate
        opts = {}
    if s.profile:
        opts["profile"] = s.profile
    return opts


def open_codec(codec: str, s: EncoderSettings) -> av.VideoCodecContext:
    """Open one encoder with a global header (SPS/PPS in extradata); FFmpeg's errors pass through."""
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, av.VideoCodecContext)
    ctx.width = s.width
    ctx.height = s.height
    ctx.pix_fmt = PIX_FMTS.get(codec, "yuv420p")
    ctx.time_base = s.time_base
    ctx.framerate = Fraction(s.fps).limit_denominator(1001)
    ctx.gop_size = s.gop
    ctx.max_b_frames = s.bframes
    ctx.bit_rate = s.bitrate_kbps * 1000
    ctx.thread_count = s.threads
    if s.colorspace:
        ctx.colorspace = s.colorspace
    if s.color_range:
        ctx.color_range = s.color_range
    ctx.flags |= av.codec.context.Flags.global_header
    ctx.options = codec_options(codec, s)
    ctx.open()
    if not ctx.extradata:
        raise EncoderError(f"{codec} opened without extradata (SPS/PPS) despite GLOBAL_HEADER")
    return ctx


Opener = Callable[[str, EncoderSettings], av.VideoCodecContext]


def open_h264(codec: str, fallback: bool, s: EncoderSettings, *, where: str | None = None,
              available: frozenset[str] | set[str] | None = None,
              opener: Opener = open_codec) -> tuple[av.VideoCodecContext, str, list[Failure]]:
    """Open the first encoder of `candidates(...)` that works: (context, its name, the failures
    before it).  Raises HardwareEncoderError when an explicit hardware codec fails without
    `fallback`, EncoderError when libx264 itself fails."""
    have = set(av.codecs_available) if available is None else available
    failures: list[Failure] = []
    tried: Sequence[str] = candidates(codec, fallback, have)
    for name in tried:
        if name not in have:
            failures.append(Failure(name, "not in this FFmpeg build"))
            continue
        try:
            return opener(name, s), name, failures
        except (av.FFmpegError, ValueError, EncoderError) as e:
            failures.append(Failure(name, f"{type(e).__name__}: {e}"))
    last = failures[-1]
    if last.codec != SOFTWARE:
        raise HardwareEncoderError(
            f"{last.codec} cannot open here ({last.error}); use codec: auto or libx264, or set "
            "fallback: true to fall back to libx264", where=where)
    raise EncoderError(
        f"libx264 failed to open {s.width}x{s.height}@{s.fps:g} with preset={s.preset!r} tune={s.tune!r} "
        f"profile={s.profile!r} bframes={s.bframes} bitrate_kbps={s.bitrate_kbps}: {last.error}", where=where)
