"""Format changes and typed descriptors, without processes: the wire, the ring header, the hooks.

The end-to-end path (real processes, a real recording) is tests/integration/test_format_change.py.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from mediaengine.actors.overlay import Overlay
from mediaengine.actors.recorder import Recorder
from mediaengine.actors.test_pattern import TestPattern, TestPatternOptions
from mediaengine.actors.video_encoder import VideoEncoder
from mediaengine.runtime.decisions import check_input_format
from mediaengine.runtime.wire import (
    EosDesc,
    FormatDesc,
    FrameDesc,
    PacketDesc,
    decode_desc,
    eos_desc,
    format_desc,
    frame_desc,
    packet_desc,
)
from mediaengine.sdk.actor import ChangeFormat, Emit, Event
from mediaengine.sdk.errors import FormatChangeError, FormatError, MalformedDescriptorError, OptionError
from mediaengine.sdk.formats import AAC, H264, NS, AudioFormat, Frame, Packet, VideoFormat, format_from_wire
from mediaengine.testing import ActorHarness

SMALL = VideoFormat(640, 360, 30.0, max_width=1280, max_height=720)
BIG = VideoFormat(1280, 720, 30.0, max_width=1280, max_height=720)


# ---- the wire ---------------------------------------------------------------------------------------

def test_each_descriptor_decodes_into_its_dataclass() -> None:
    pkt = Packet(b"\x00\x00\x00\x01\x65", pts=3000, dts=3000, time_base=Fraction(1, 90000), keyframe=True)
    assert decode_desc(frame_desc("in", 3, 17, 5 * NS, {"a": 1})) == FrameDesc("in", 3, 17, 5 * NS, {"a": 1})
    assert decode_desc(packet_desc("video", pkt)) == PacketDesc("video", pkt)
    assert decode_desc(eos_desc("in")) == EosDesc("in")
    assert decode_desc(format_desc("in", BIG)) == FormatDesc("in", BIG)
    assert decode_desc(format_desc("a", AudioFormat(48000, 2))) == FormatDesc("a", AudioFormat(48000, 2))
    assert decode_desc(format_desc("v", H264)) == FormatDesc("v", H264)


@pytest.mark.parametrize("msg", [
    b"\xc1",  # not msgpack
    [1, 2],
    {"s": 1, "q": 1, "t": 0},  # no pad
    {"p": 7, "e": 1},
    {"p": "in", "s": "x", "q": None},  # the runtime's `corrupt` fault
    {"p": "in", "s": 1, "q": 1},  # no pts
    {"p": "in", "s": 1, "q": True, "t": 0},
    {"p": "in", "s": 1, "q": 1, "t": 0, "m": [1]},
    {"p": "in", "k": {"d": "text", "pts": 0, "dts": 0, "tb": [1, 1], "key": True}},
    {"p": "in", "k": [1]},
    {"p": "in", "f": {"kind": "video", "width": "640", "height": 360, "fps": 30, "pix_fmt": "rgb24"}},
    {"p": "in", "f": {"kind": "video", "width": 640}},
    {"p": "in", "f": {"kind": "smell"}},
    {"p": "in", "f": 3},
    {"p": "in"},
])
def test_a_malformed_descriptor_is_a_format_error_never_a_crash(msg: Any) -> None:
    raw = msg if isinstance(msg, bytes) else msgpack.packb(msg)
    with pytest.raises(MalformedDescriptorError) as info:
        decode_desc(raw)
    assert isinstance(info.value, FormatError) and info.value.code == 1201


def test_format_from_wire_checks_fields_and_keeps_the_maximum_size() -> None:
    assert format_from_wire({"kind": "video", "width": 640, "height": 360, "fps": 30, "pix_fmt": "rgb24",
                             "max_width": 1280, "max_height": 720}) == SMALL
    assert SMALL.slot_bytes == BIG.frame_bytes == 1280 * 720 * 3
    assert VideoFormat(640, 360, 30.0).slot_bytes == 640 * 360 * 3
    with pytest.raises(FormatError, match="fps"):
        format_from_wire({"kind": "video", "width": 640, "height": 360, "fps": "fast", "pix_fmt": "rgb24"})


# ---- the hooks --------------------------------------------------------------------------------------

def test_a_pass_through_filter_follows_its_input_by_default() -> None:
    ov = ActorHarness(Overlay, {"text": "hi"}, node_id="filt", input_formats={"in": SMALL})
    assert ov.format_changed("in", BIG) == [ChangeFormat("out", BIG)]
    out = ov.frame("in", Frame(np.zeros((720, 1280, 3), np.uint8), pts_ns=0))
    assert isinstance(out[0], Emit) and isinstance(out[0].media, Frame)
    assert out[0].media.data.shape == (720, 1280, 3)
    with pytest.raises(FormatChangeError, match="expects video"):
        ov.format_changed("in", AudioFormat(48000, 2))
    with pytest.raises(FormatChangeError, match="pixel format"):
        ov.format_changed("in", VideoFormat(1280, 720, 30.0, "gray"))


def test_test_pattern_announces_a_live_size_change_before_its_first_frame() -> None:
    src = ActorHarness(TestPattern, {"width": 640, "height": 360, "max_width": 1280, "max_height": 720},
                       node_id="src")
    assert src.output_formats == {"out": SMALL}
    first = src.tick(0)
    assert [type(a) for a in first] == [Emit]
    assert src.set(width=1280, height=720) == {"width": 1280, "height": 720}
    actions = src.tick(NS // 30)
    assert actions[0] == ChangeFormat("out", BIG)
    frames = [a.media for a in actions[1:] if isinstance(a, Emit)]
    assert frames and all(isinstance(f, Frame) and f.data.shape == (720, 1280, 3) for f in frames)
    assert not any(isinstance(a, ChangeFormat) for a in src.tick(2 * NS // 30))
    with pytest.raises(OptionError, match="max_width"):
        src.set(width=1920, height=1080)
    with pytest.raises(OptionError, match="max_width"):
        TestPattern.validate(TestPatternOptions(width=1920, height=1080, max_width=1280), {})


def _encode(enc: ActorHarness, start: int, n: int, w: int, h: int) -> list[Any]:
    actions: list[Any] = []
    for i in range(start, start + n):
        img = np.full((h, w, 3), (i * 7) % 256, np.uint8)
        actions += enc.frame("in", Frame(img, pts_ns=3 * NS + i * NS // 30))
    return actions


def test_the_encoder_reopens_at_the_new_size_and_the_recorder_writes_both(tmp_path: Path) -> None:
    enc = ActorHarness(VideoEncoder, {"keepalive_ms": 0}, node_id="venc", input_formats={"in": SMALL})
    actions = list(enc.actions)  # setup's encoder_started
    actions += _encode(enc, 0, 20, 640, 360)
    actions += enc.format_changed("in", BIG)
    assert enc.actor.reopens == 1
    actions += _encode(enc, 20, 20, 1280, 720)
    actions += enc.stop()
    started = [a.data for a in actions if isinstance(a, Event) and a.name == "encoder_started"]
    assert [(s["width"], s["height"], s["reopen"]) for s in started] == [(640, 360, 0), (1280, 720, 1)]
    pkts = [a.media for a in actions if isinstance(a, Emit) and isinstance(a.media, Packet)]
    assert len(pkts) == 40
    assert [(p.params or {}).get("width") for p in pkts if p.keyframe] == [640, 1280]
    with pytest.raises(FormatChangeError, match="even"):
        enc.format_changed("in", VideoFormat(641, 360, 30.0))

    rec = ActorHarness(Recorder, {"path": str(tmp_path / "both.mp4")}, node_id="rec", input_formats={"video": H264})
    for p in pkts:
        rec.frame("video", p)
    rec.eos("video")
    path = rec.actor.path
    assert path is not None
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "frame=width,height", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, timeout=60, check=True)
    sizes = [tuple(map(int, line.split(",")[:2])) for line in probe.stdout.split()]
    assert sizes == [(640, 360)] * 20 + [(1280, 720)] * 20
    decode = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=60)
    assert decode.returncode == 0 and decode.stderr == ""


def test_an_audio_port_refuses_video_and_the_encoder_keeps_its_codec() -> None:
    assert Recorder.inputs["audio"].accepts(AAC) is None
    with pytest.raises(FormatChangeError, match="expects aac"):
        check_input_format(Recorder, "audio", H264, where="rec")


def test_a_request_pad_made_from_a_template_takes_a_format_change() -> None:
    from mediaengine.sdk.actor import Actor, InPort

    class Sink(Actor[Any]):
        inputs = {"in_%s": InPort("audio", policy="block")}

    sink = ActorHarness(Sink, None, node_id="mix", input_formats={"in_mic": AudioFormat(48000, 1)})
    assert sink.format_changed("in_mic", AudioFormat(44100, 2)) == []
    with pytest.raises(FormatChangeError, match="no input pad 'out'"):
        check_input_format(Sink, "out", AudioFormat(44100, 2), where="mix")
