"""Recorder hooks fed with real encoder output that went through the wire form (msgpack), checked
with Debian's ffprobe: what a user opening the file would get.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
from mediaengine.actors.audio_encoder import AudioEncoder
from mediaengine.actors.recorder import Recorder, RecorderOptions, choose_path, container_format
from mediaengine.actors.video_encoder import VideoEncoder
from mediaengine.runtime.wire import packet_from_wire, packet_to_wire
from mediaengine.sdk.actor import Emit, Event
from mediaengine.sdk.errors import OptionError
from mediaengine.sdk.formats import AAC, H264, NS, AudioFormat, Frame, Packet, VideoFormat
from mediaengine.testing import ActorHarness

ROOT = Path(__file__).resolve().parents[2]
START_NS = 3_200_000_000
FPS = 30
SECONDS = 3
RATE = 48000

Wire = list[tuple[str, bytes]]  # (pad, msgpack bytes) in arrival order


@pytest.fixture(scope="module")
def av_stream() -> Wire:
    """3 s of 640x360@30 H.264 (GOP 1 s) and 48 kHz stereo AAC, as msgpack messages, interleaved
    in time order the way they would arrive from two encoder processes."""
    venc = ActorHarness(VideoEncoder, {"gop_s": 1.0}, input_formats={"in": VideoFormat(640, 360, FPS)})
    aenc = ActorHarness(AudioEncoder, {}, input_formats={"in": AudioFormat(RATE, 2, 480)})
    out: list[tuple[Fraction, str, Packet]] = []

    def take(pad: str, actions: Any) -> None:
        for a in actions or []:
            if isinstance(a, Emit) and isinstance(a.media, Packet):
                out.append((a.media.pts * a.media.time_base, pad, a.media))

    x = np.arange(640)[None, :]
    for i in range(FPS * SECONDS):
        img = np.zeros((360, 640, 3), np.uint8)
        img[..., 0] = (x + 4 * i) % 256
        img[..., 1] = np.arange(360)[:, None] * 255 // 360
        take("video", venc.frame("in", Frame(img, START_NS + i * NS // FPS)))
    for k in range(RATE * SECONDS // 480):
        t = np.arange(k * 480, (k + 1) * 480) / RATE
        pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        take("audio", aenc.frame("in", Frame(np.stack([pcm, pcm], 1), START_NS + k * 480 * NS // RATE)))
    take("video", venc.stop())
    take("audio", aenc.stop())
    out.sort(key=lambda x: x[0])
    return [(pad, msgpack.packb(packet_to_wire(p))) for _, pad, p in out]


def unwire(stream: Wire) -> list[tuple[str, Packet]]:
    return [(pad, packet_from_wire(msgpack.unpackb(b))) for pad, b in stream]


def record(path: Path, stream: list[tuple[str, Packet]], *, pads: tuple[str, ...] = ("video", "audio"),
           stop: bool = True, restart_count: int = 0, **opts: Any) -> tuple[ActorHarness, list[Event]]:
    fmts = {"video": H264, "audio": AAC}
    rec = ActorHarness(Recorder, {"path": str(path), **opts}, node_id="rec", restart_count=restart_count,
                       input_formats={p: fmts[p] for p in pads})
    for pad, p in stream:
        rec.frame(pad, p)
    if stop:
        rec.stop()
    return rec, rec.events()


def probe(path: Path) -> dict[str, Any]:
    r = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format",
                        "-of", "json", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    info: dict[str, Any] = json.loads(r.stdout)
    info["by_type"] = {s["codec_type"]: s for s in info["streams"]}
    return info


def packet_times(path: Path) -> dict[int, list[float]]:
    r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,pts_time",
                        "-of", "json", str(path)], capture_output=True, text=True, timeout=30)
    times: dict[int, list[float]] = {}
    for p in json.loads(r.stdout)["packets"]:
        times.setdefault(p["stream_index"], []).append(float(p["pts_time"]))
    return times


# ---- the recording -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["demo.mp4", "demo.flv", "demo.ts"])
def test_records_h264_and_aac(av_stream: Wire, tmp_path: Path, name: str) -> None:
    path = tmp_path / "out" / name  # parent folder does not exist yet
    rec, evs = record(path, unwire(av_stream))
    info = probe(path)
    v, a = info["by_type"]["video"], info["by_type"]["audio"]
    assert (v["codec_name"], v["width"], v["height"], v["pix_fmt"]) == ("h264", 640, 360, "yuv420p")
    assert int(v["nb_read_frames"]) == FPS * SECONDS  # every frame, none lost or repeated
    assert (a["codec_name"], int(a["sample_rate"]), a["channels"]) == ("aac", RATE, 2)
    assert int(a["nb_read_frames"]) >= RATE * SECONDS // 1024
    assert abs(float(info["format"]["start_time"])) < 0.001  # the file's timeline starts at 0
    assert abs(float(info["format"]["duration"]) - SECONDS) < 0.05
    times = packet_times(path)
    vt = np.diff(sorted(times[int(v["index"])]))
    at = np.diff(sorted(times[int(a["index"])]))
    assert np.all(np.abs(vt - 1 / FPS) < 0.0015), vt  # no gaps, no duplicates (FLV rounds to ms)
    assert np.all(np.abs(at - 1024 / RATE) < 0.0015), at
    started = [e.data for e in evs if e.name == "recording_started"]
    finished = [e.data for e in evs if e.name == "recording_finished"]
    assert started == [{"path": str(path), "format": container_format(rec.options), "restart_count": 0,
                        "streams": ["video", "audio"]}]
    assert finished[0]["path"] == str(path) and abs(finished[0]["duration_s"] - SECONDS) < 0.05
    assert rec.actor.dropped_non_monotonic == 0 and rec.actor.dropped_waiting == 0


def test_hls_playlist(av_stream: Wire, tmp_path: Path) -> None:
    path = tmp_path / "hls" / "live.m3u8"
    record(path, unwire(av_stream))
    playlist = path.read_text()
    assert "#EXT-X-ENDLIST" in playlist and "live_00000.ts" in playlist
    info = probe(path)
    assert int(info["by_type"]["video"]["nb_read_frames"]) == FPS * SECONDS
    assert info["by_type"]["audio"]["codec_name"] == "aac"


def test_late_starting_audio_stays_in_sync_in_mp4(av_stream: Wire, tmp_path: Path) -> None:
    stream = unwire(av_stream)
    cut = Fraction(START_NS + NS // 2, NS)  # audio starts 0.5 s after video
    stream = [(pad, p) for pad, p in stream if pad == "video" or p.pts * p.time_base >= cut]
    first_v = next(p for pad, p in stream if pad == "video")
    first_a = next(p for pad, p in stream if pad == "audio")
    expected = float(first_a.pts * first_a.time_base - first_v.pts * first_v.time_base)
    path = tmp_path / "late.mp4"
    record(path, stream)
    info = probe(path)
    assert abs(float(info["by_type"]["video"]["start_time"])) < 0.001
    assert abs(float(info["by_type"]["audio"]["start_time"]) - expected) < 0.002, expected


def test_starts_at_a_keyframe_and_trims_earlier_audio(av_stream: Wire, tmp_path: Path) -> None:
    stream = unwire(av_stream)
    vids = [i for i, (pad, _) in enumerate(stream) if pad == "video"]
    stream = [x for i, x in enumerate(stream) if i not in set(vids[:10])]  # join mid-GOP
    path = tmp_path / "join.mp4"
    rec, _ = record(path, stream)
    info = probe(path)
    assert int(info["by_type"]["video"]["nb_read_frames"]) == FPS * SECONDS - FPS  # from the 1 s keyframe
    assert abs(float(info["format"]["duration"]) - (SECONDS - 1)) < 0.05
    assert abs(float(info["format"]["start_time"])) < 0.001
    # frames 10..29 (not keyframes) and the AAC packets that end before the keyframe: pts from
    # -1024 (priming) to 46080 samples after the start
    assert rec.actor.dropped_waiting == 20 + 47


def test_non_monotonic_packet_is_dropped_and_video_waits_for_a_keyframe(
        av_stream: Wire, tmp_path: Path) -> None:
    stream = unwire(av_stream)
    vids = [i for i, (pad, _) in enumerate(stream) if pad == "video"]
    dup_at = vids[45]
    stream.insert(dup_at + 1, stream[dup_at])  # a duplicate of video frame 45 (GOP 30..59)
    path = tmp_path / "dup.mp4"
    rec, _ = record(path, stream)
    assert rec.actor.dropped_non_monotonic == 1 + 14  # the duplicate, then 46..59 until the keyframe at 60
    m = rec.metrics()
    assert m["dropped_non_monotonic"] == 15 and m["packets_muxed"] == len(stream) - 15
    msgpack.packb(m)
    info = probe(path)  # decodes without errors
    assert int(info["by_type"]["video"]["nb_read_frames"]) == FPS * SECONDS - 14


# ---- inputs and options ------------------------------------------------------------------------

def test_audio_only_and_option_checks(av_stream: Wire, tmp_path: Path) -> None:
    path = tmp_path / "voice.m4a"
    audio = [(pad, p) for pad, p in unwire(av_stream) if pad == "audio"]
    record(path, audio, pads=("audio",))
    info = probe(path)
    assert [s["codec_name"] for s in info["streams"]] == ["aac"]
    assert abs(float(info["format"]["duration"]) - SECONDS) < 0.05
    with pytest.raises(OptionError, match="at least one linked input"):
        Recorder.validate(RecorderOptions(path="x.mp4"), {})
    with pytest.raises(OptionError, match="at least one linked input"):  # as the loader checks it
        ActorHarness(Recorder, {"path": str(tmp_path / "x.mp4")}, input_formats={})
    with pytest.raises(OptionError, match="container"):
        Recorder.validate(RecorderOptions(path="x.avi"), {"video": H264})
    with pytest.raises(OptionError, match="format: 'avi' is not one of"):  # the declared choices
        ActorHarness(Recorder, {"path": "x.mp4", "format": "avi"}, input_formats={"video": H264})
    Recorder.validate(RecorderOptions(path="x.bin", format="flv"), {"audio": AAC})


def test_starts_without_an_input_that_never_sends_params(av_stream: Wire, tmp_path: Path) -> None:
    video = [(pad, p) for pad, p in unwire(av_stream) if pad == "video"]
    path = tmp_path / "novoice.mp4"
    _, evs = record(path, video, start_timeout_s=1.0)
    assert [e.data["pad"] for e in evs if e.name == "input_missing"] == ["audio"]
    info = probe(path)
    assert [s["codec_name"] for s in info["streams"]] == ["h264"]
    assert int(info["streams"][0]["nb_read_frames"]) == FPS * SECONDS


def test_no_params_means_no_file(tmp_path: Path) -> None:
    path = tmp_path / "never.mp4"
    _, evs = record(path, [])
    assert not path.exists()
    assert [e.data["path"] for e in evs if e.name == "recording_finished"] == [None]


def test_choose_path() -> None:
    p = Path("/nonexistent-dir/demo.mp4")
    assert choose_path(p, may_overwrite=True) == p
    assert choose_path(p, may_overwrite=False) == p  # free


def test_restarted_recorder_never_overwrites(av_stream: Wire, tmp_path: Path) -> None:
    path = tmp_path / "out" / "demo.mp4"
    path.parent.mkdir()
    path.write_bytes(b"a previous run's file")
    short = [x for x in unwire(av_stream) if x[1].pts * x[1].time_base < Fraction(START_NS + NS, NS)]
    record(path, short)  # first writer of a run: overwrites `path`
    first = path.read_bytes()
    assert first.startswith(b"\x00\x00\x00") and b"ftyp" in first[:16]
    _, evs1 = record(path, short, restart_count=1)
    _, evs2 = record(path, short, restart_count=2)
    assert path.read_bytes() == first  # untouched by the restarted recorders
    started = [e.data["path"] for e in evs1 + evs2 if e.name == "recording_started"]
    assert started == [str(tmp_path / "out" / "demo.1.mp4"), str(tmp_path / "out" / "demo.2.mp4")]
    for name in ("demo.1.mp4", "demo.2.mp4"):
        assert int(probe(tmp_path / "out" / name)["by_type"]["video"]["nb_read_frames"]) == FPS
    _, evs3 = record(path, short, overwrite=False)
    assert [e.data["path"] for e in evs3 if e.name == "recording_started"] == [
        str(tmp_path / "out" / "demo.3.mp4")]


# ---- crash safety ------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import msgpack
    from mediaengine.actors.recorder import Recorder, RecorderOptions
    from mediaengine.sdk.formats import AAC, H264
    from mediaengine.runtime.wire import packet_from_wire
    from mediaengine.testing import ActorHarness
    rec = ActorHarness(Recorder, {"path": sys.argv[2]}, input_formats={"video": H264, "audio": AAC})
    with open(sys.argv[3], "rb") as f:
        for pad, raw in msgpack.Unpacker(f):
            rec.frame(pad, packet_from_wire(msgpack.unpackb(raw)))
    os.kill(os.getpid(), signal.SIGKILL)  # no stop(), no trailer, no finalizers
""")


@pytest.mark.parametrize(("name", "min_frames"), [("crash.mp4", 60), ("crash.flv", 80)])
def test_killed_recorder_leaves_a_playable_file(av_stream: Wire, tmp_path: Path, name: str,
                                                min_frames: int) -> None:
    feed = tmp_path / "packets.msgpack"
    with feed.open("wb") as f:
        for pad, raw in av_stream:
            f.write(msgpack.packb([pad, raw]))
    path = tmp_path / name
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(path), str(feed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, err.decode()
    info = probe(path)
    frames = int(info["by_type"]["video"]["nb_read_frames"])
    # MP4 keeps every fragment that was cut (at the keyframe at 2 s); FLV nearly every packet
    assert min_frames <= frames <= FPS * SECONDS, frames
    assert info["by_type"]["audio"]["codec_name"] == "aac"
    assert os.path.getsize(path) > 50_000
