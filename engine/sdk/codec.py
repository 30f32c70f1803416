"""Glue between the engine's `Packet` and PyAV: stream parameters, wire form and muxer streams.

Encoders in one process and muxers in another (recorder, RTMP sender) share nothing but the packets
that travel between them, so each keyframe packet carries `params`: a small msgpack-able dict that is
enough to set up a muxer stream without the encoder at hand::

    video: {"codec": "h264", "width", "height", "pix_fmt", "fps", "time_base": [num, den],
            "extradata": bytes (Annex B SPS/PPS), "bit_rate", optional "colorspace", "color_range"}
    audio: {"codec": "aac", "rate", "channels", "layout", "time_base": [1, rate],
            "extradata": bytes (AudioSpecificConfig), "bit_rate"}

`add_stream_from_params` builds the muxer stream.  PyAV opens the codec context of every stream made
with `add_stream` when the header is written (an H.264 encoder would then replace our SPS/PPS with its
own), and `add_mux_stream` streams cannot take extradata; a stream made from a template is neither
opened nor left without a context, so that is the route taken here.

The form a packet takes inside a msgpack descriptor is the runtime's (`mediaengine.runtime.wire`).
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Any

import av
import av.container
import av.stream

from .errors import FormatError
from .formats import Packet

VIDEO_CODECS = ("h264",)
AUDIO_CODECS = ("aac",)


def time_base_of(params: dict[str, Any]) -> Fraction:
    """The `time_base` entry of stream params as a Fraction."""
    try:
        num, den = params["time_base"]
        return Fraction(int(num), int(den))
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise FormatError(f"stream params have no valid time_base: {params.get('time_base')!r}") from e


def video_params(ctx: av.VideoCodecContext, fps: float) -> dict[str, Any]:
    """Stream params of an open H.264 encoder (opened with the GLOBAL_HEADER flag)."""
    tb = ctx.time_base
    if tb is None:
        raise FormatError("video encoder has no time base")
    return {
        "codec": "h264",
        "width": ctx.width,
        "height": ctx.height,
        "pix_fmt": ctx.pix_fmt or "yuv420p",
        "fps": float(fps),
        "time_base": [tb.numerator, tb.denominator],
        "extradata": bytes(ctx.extradata or b""),
        "bit_rate": int(ctx.bit_rate or 0),
        "colorspace": int(ctx.colorspace),
        "color_range": int(ctx.color_range),
    }


def audio_params(ctx: av.AudioCodecContext) -> dict[str, Any]:
    """Stream params of an open AAC encoder (opened with the GLOBAL_HEADER flag)."""
    rate = ctx.sample_rate
    return {
        "codec": "aac",
        "rate": rate,
        "channels": ctx.layout.nb_channels,
        "layout": ctx.layout.name,
        "time_base": [1, rate],
        "extradata": bytes(ctx.extradata or b""),
        "bit_rate": int(ctx.bit_rate or 0),
    }


def default_layout(channels: int) -> str:
    """FFmpeg's default channel layout name for a channel count ("mono", "stereo", "5.1", ...)."""
    names = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
    if channels not in names:
        raise FormatError(f"no default channel layout for {channels} channels (1..8 supported)")
    return names[channels]


def _template(codec: str, kind: str) -> av.stream.Stream:
    """A stream of the right codec and type, in a throwaway container, to copy from."""
    scratch = av.open(io.BytesIO(), "w", format="matroska")
    try:
        if kind == "video":
            return scratch.add_stream(codec, rate=30)
        return scratch.add_stream(codec, rate=48000)
    finally:
        scratch.close()  # never started: writes nothing


def add_stream_from_params(container: av.container.OutputContainer,
                           params: dict[str, Any]) -> av.stream.Stream:
    """Add a stream for already-encoded packets described by `params` to an output container.

    Sets the codec parameters a muxer needs in its header (size and pixel format or rate and
    layout, extradata, time base, frame rate).  Packets muxed into it must be in its `time_base`
    or carry their own (see `packet_to_av`).
    """
    codec = params.get("codec")
    tb = time_base_of(params)
    extradata = params.get("extradata") or b""
    if not isinstance(extradata, bytes | bytearray):
        raise FormatError(f"stream params extradata must be bytes, got {type(extradata).__name__}")
    try:
        if codec in VIDEO_CODECS:
            stream = container.add_stream_from_template(_template(str(codec), "video"), opaque=False)
            ctx = stream.codec_context
            assert isinstance(ctx, av.VideoCodecContext)
            ctx.width = int(params["width"])
            ctx.height = int(params["height"])
            ctx.pix_fmt = str(params.get("pix_fmt", "yuv420p"))
            fps = float(params.get("fps") or 0)
            if fps > 0:
                ctx.framerate = Fraction(fps).limit_denominator(1001)
            if "colorspace" in params:
                ctx.colorspace = int(params["colorspace"])
            if "color_range" in params:
                ctx.color_range = int(params["color_range"])
        elif codec in AUDIO_CODECS:
            stream = container.add_stream_from_template(_template(str(codec), "audio"), opaque=False)
            actx = stream.codec_context
            assert isinstance(actx, av.AudioCodecContext)
            actx.sample_rate = int(params["rate"])
            actx.layout = str(params.get("layout") or default_layout(int(params["channels"])))
            ctx = actx
        else:
            raise FormatError(f"cannot mux codec {codec!r}: expected one of "
                              f"{', '.join(VIDEO_CODECS + AUDIO_CODECS)}")
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"bad {codec} stream params ({e}): {sorted(params)}") from e
    ctx.extradata = bytes(extradata) if extradata else None
    ctx.time_base = tb
    ctx.bit_rate = int(params.get("bit_rate") or 0)
    stream.time_base = tb
    return stream


def packet_to_av(packet: Packet, stream: av.stream.Stream | None = None, *,
                 offset: int = 0) -> av.Packet[av.stream.Stream]:
    """An `av.Packet` holding a copy of `packet`, with pts/dts shifted back by `offset` (in the
    packet's own time base); PyAV rescales it to the stream's time base when muxing."""
    out = av.Packet(packet.data)
    out.pts = packet.pts - offset
    out.dts = packet.dts - offset
    out.time_base = packet.time_base
    out.is_keyframe = packet.keyframe
    if stream is not None:
        out.stream = stream
    return out


def packet_from_av(pkt: av.Packet[Any], *, params: dict[str, Any] | None = None,
                   meta: dict[str, Any] | None = None) -> Packet:
    """An engine `Packet` (bytes copied) from an encoder's `av.Packet`."""
    if pkt.pts is None or pkt.time_base is None:
        raise FormatError("encoder returned a packet without pts or time base")
    dts = pkt.dts if pkt.dts is not None else pkt.pts
    return Packet(bytes(pkt), pkt.pts, dts, Fraction(pkt.time_base), pkt.is_keyframe, params,
                  dict(meta or {}))
