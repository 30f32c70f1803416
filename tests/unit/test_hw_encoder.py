"""Hardware H.264 encoders with fallback (`video_encoder` `codec`, `mediaengine.sdk.h264`).

These run the real encoders this FFmpeg build has on this machine: where a GPU (or a V4L2 M2M
device) can open one, `auto` uses it and the tests check that; where none can (the CI machines),
`auto` falls back to libx264 with an `encoder_fallback` event.  Each test records which happened
(`record_property("encoder", ...)`, shown in the junit XML and with `-rA`).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest
from mediaengine.actors.video_encoder import VideoEncoder
from mediaengine.sdk.errors import EncoderError, HardwareEncoderError
from mediaengine.sdk.formats import NS, Frame, VideoFormat
from mediaengine.sdk.h264 import HARDWARE, SOFTWARE, EncoderSettings, candidates, codec_options, open_codec
from mediaengine.testing import ActorHarness

from .test_encoders import decode_video, gradient, packets

SETTINGS = EncoderSettings(320, 240, 30.0, Fraction(1, 90_000), 60, 0, 800, 1.0)


def _opens(codec: str) -> str | None:
    """None if `codec` opens on this machine, else why not."""
    if codec not in av.codecs_available:
        return "not in this FFmpeg build"
    try:
        open_codec(codec, SETTINGS)
    except (av.FFmpegError, ValueError, EncoderError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def say(record_property: Callable[[str, object], None], what: str) -> None:
    """Tell which encoder ran: a junit property, and stdout (`pytest -rA` shows it)."""
    record_property("encoder", what)
    print(f"encoder: {what}")


def encoder(**opts: Any) -> ActorHarness:
    return ActorHarness(VideoEncoder, opts, input_formats={"in": VideoFormat(320, 240, 30.0)}, node_id="venc")


def encode_some(enc: ActorHarness, n: int = 10) -> list[Any]:
    out: list[Any] = []
    for i in range(n):
        out += packets(enc.frame("in", Frame(gradient(i, 320, 240), i * NS // 30)))
    return out


# ---- pure functions ----------------------------------------------------------------------------

def test_candidates_try_hardware_in_the_build_then_libx264() -> None:
    build = {"h264_nvenc", "h264_qsv", SOFTWARE}
    assert candidates("auto", False, build) == ["h264_nvenc", "h264_qsv", SOFTWARE]
    assert candidates("libx264", False, build) == [SOFTWARE]
    assert candidates("h264_nvenc", False, build) == ["h264_nvenc"]
    assert candidates("h264_vaapi", True, build) == ["h264_vaapi", SOFTWARE]


def test_every_codec_gets_a_bit_rate_cap() -> None:
    for codec in (SOFTWARE, "h264_nvenc", "h264_qsv", "h264_vaapi"):
        opts = codec_options(codec, SETTINGS)
        assert opts["maxrate"] == "800k" and opts["bufsize"] == "800k", codec
    assert codec_options(SOFTWARE, SETTINGS)["tune"] == "zerolatency"


# ---- the real encoders on this machine -----------------------------------------------------------

def test_auto_uses_hardware_that_opens_or_falls_back_with_the_event(
        record_property: Callable[[str, object], None]) -> None:
    why_not = {c: _opens(c) for c in HARDWARE}
    usable = [c for c in HARDWARE if why_not[c] is None]
    enc = encoder(codec="auto")
    started = enc.events("encoder_started")[0].data
    fallbacks = [e.data for e in enc.events("encoder_fallback")]
    if usable:  # a machine with the hardware: auto uses the first that opens
        say(record_property, f"hardware: {usable[0]}")
        assert started["codec"] == usable[0]
    else:  # no GPU: libx264, and the event names every hardware encoder of the build that failed
        say(record_property, f"fallback to libx264: {why_not}")
        assert started["codec"] == SOFTWARE
        assert len(fallbacks) == 1 and fallbacks[0]["requested"] == "auto"
        assert fallbacks[0]["codec"] == SOFTWARE
        failed = {f["codec"]: f["error"] for f in fallbacks[0]["failed"]}
        assert set(failed) == {c for c in HARDWARE if c in av.codecs_available}
        assert all(failed.values())
    assert enc.actor.metrics()["codec"] == started["codec"]
    pkts = encode_some(enc)
    assert len(decode_video(pkts)) == 10  # whatever encoded it, it decodes as H.264


def test_nvenc_without_fallback_fails_with_its_code(record_property: Callable[[str, object], None]) -> None:
    why_not = _opens("h264_nvenc")
    if why_not is None:  # a machine with an NVIDIA GPU: it is used, no error
        say(record_property, "hardware: h264_nvenc")
        enc = encoder(codec="h264_nvenc")
        assert enc.events("encoder_started")[0].data["codec"] == "h264_nvenc"
        assert len(decode_video(encode_some(enc))) == 10
        return
    say(record_property, f"h264_nvenc cannot open here: {why_not}")
    with pytest.raises(HardwareEncoderError) as info:
        encoder(codec="h264_nvenc")
    err = info.value
    assert err.code == 1350 and not err.restartable
    assert err.where == "venc"
    assert "h264_nvenc cannot open here" in err.message and "fallback: true" in err.message


def test_nvenc_with_fallback_uses_libx264_and_says_why(record_property: Callable[[str, object], None]) -> None:
    if _opens("h264_nvenc") is None:
        pytest.skip("h264_nvenc opens on this machine: nothing falls back")
    say(record_property, "h264_nvenc -> libx264")
    enc = encoder(codec="h264_nvenc", fallback=True)
    fb = enc.events("encoder_fallback")[0].data
    assert fb["requested"] == "h264_nvenc" and fb["codec"] == SOFTWARE
    assert [f["codec"] for f in fb["failed"]] == ["h264_nvenc"]
    assert enc.events("encoder_started")[0].data["codec"] == SOFTWARE
    # a bit rate raise reopens the chosen encoder at the next keyframe, without probing the GPU again
    enc.set(bitrate_kbps=2000)
    enc.control("keyframe")
    assert len(decode_video(encode_some(enc))) == 10
    assert len(enc.events("encoder_fallback")) == 1
    assert [e.data["codec"] for e in enc.events("encoder_started")] == [SOFTWARE, SOFTWARE]


def test_max_fps_skips_frames_live() -> None:
    enc = encoder(keepalive_ms=0)
    pkts = encode_some(enc, 30)
    enc.set(max_fps=10.0)
    assert enc.events("fps_changed")[-1].data == {"max_fps": 10.0, "input_fps": 30.0, "at_keyframe": True}
    later: list[Any] = []
    for i in range(30, 90):
        later += packets(enc.frame("in", Frame(gradient(i, 320, 240), i * NS // 30)))
    # it applies at the next keyframe (gop_s 2: frame 60), where x264 reopens at 10 fps
    assert len(pkts) == 30 and len(later) == 30 + 10  # then every third frame, one second of input
    assert enc.actor.skipped_frames == 20
    assert later[30].keyframe and np.all(np.diff([p.pts for p in later[30:]]) == 9000)
    assert [e.data["fps"] for e in enc.events("encoder_started")] == [30.0, 10.0]
