"""The player's pure parts (stalls, SEI dedupe, latency, counters, events, JSON lines), the whole Player on
a local FLV file (AVCC packets with SEI, stamped pictures, a PNG snapshot), and the rtmp_puller actor's
hooks with a fake puller thread.  No network, no processes; every time is injected."""

from __future__ import annotations

import io
import itertools
import json
import queue
import subprocess
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import mediaengine.actors.rtmp_puller as puller_mod
import numpy as np
import pytest
from mediaengine.actors.rtmp_puller import AudioChunker, PtsMapper, RtmpPuller, RtmpPullerOptions
from mediaengine.cli.main import build_parser
from mediaengine.cli.play import _printer, format_event
from mediaengine.sdk import stamp
from mediaengine.sdk.actor import Context, Emit, EndOfStream, Event
from mediaengine.sdk.errors import ConnectError, FileError, OptionError
from mediaengine.sdk.formats import NS
from mediaengine.sdk.options import check_instance
from mediaengine.sdk.pull import (
    AudioInfo,
    Connected,
    CounterGaps,
    Ended,
    LatencyStats,
    Player,
    PlaySession,
    SeiDeduper,
    StallDetector,
    VideoFrameInfo,
    VideoPacketInfo,
    luma,
    redact_url,
    save_png,
)
from mediaengine.sdk.sei import OUR_UUID, build_sei_nal, insert_sei
from numpy.typing import NDArray

OTHER_UUID = bytes(range(16))


# ---- StallDetector --------------------------------------------------------------------------------

def test_no_stall_while_frames_come_in_time() -> None:
    d = StallDetector(0.5)
    for i in range(100):
        t = i / 30
        assert d.frame(t) is None
        assert d.poll(t + 0.02) is False
    assert (d.count, d.total_s(100 / 30)) == (0, 0.0)


def test_a_gap_is_one_stall_with_its_whole_length() -> None:
    d = StallDetector(0.5)
    d.frame(10.0)
    assert d.poll(10.4) is False  # not yet over the threshold
    assert d.poll(10.6) is True  # begins: reported once
    assert d.poll(10.9) is False
    assert d.count == 1 and d.total_s(11.0) == pytest.approx(1.0)  # includes the stall in progress
    assert d.frame(11.2) == pytest.approx(1.2)  # ends: the whole gap
    assert d.frame(11.23) is None
    assert d.count == 1 and d.total_s(20.0) == pytest.approx(1.2)


def test_a_gap_seen_only_when_the_next_frame_comes_still_counts() -> None:
    d = StallDetector(0.5)
    d.frame(1.0)
    assert d.frame(1.8) == pytest.approx(0.8)  # nobody polled in between
    assert d.count == 1


def test_stall_in_progress_closes_at_finish_and_reset_forgets_the_gap() -> None:
    d = StallDetector(0.5)
    assert d.finish(3.0) is None  # no frame yet: connecting is not a stall
    d.frame(1.0)
    assert d.poll(2.0)
    assert d.finish(2.5) == pytest.approx(1.5)
    d.frame(5.0)
    d.reset()  # a new connection
    assert d.poll(9.0) is False
    assert d.frame(9.0) is None


# ---- SeiDeduper -----------------------------------------------------------------------------------

def feed_frames(dedup: SeiDeduper, frames: range, sei_at: dict[int, list[tuple[bytes, bytes]]]) -> list[Any]:
    closed = []
    for i in frames:
        closed += dedup.feed(i, sei_at.get(i, []))
    return closed + dedup.flush()


def test_a_message_repeated_over_frames_is_reported_once_with_first_and_last_frame() -> None:
    d = SeiDeduper(gap_frames=5)
    sei = {i: [(OUR_UUID, b"question 1")] for i in range(10, 20)}
    closed = []
    for i in range(0, 30):
        got = d.feed(i, sei.get(i, []))
        if got:
            closed.append((i, got))
    assert len(closed) == 1
    at, [msg] = closed[0]
    assert at == 25  # reported once more than gap_frames frames went by without it
    assert (msg.uuid, msg.payload, msg.first_frame, msg.last_frame, msg.frames) == (OUR_UUID, b"question 1", 10, 19, 10)
    assert d.flush() == []


def test_the_same_text_after_a_gap_is_a_new_message_and_a_short_gap_is_not() -> None:
    d = SeiDeduper(gap_frames=5)
    sei = {i: [(OUR_UUID, b"hi")] for i in [*range(0, 5), *range(8, 10), *range(20, 23)]}
    msgs = feed_frames(d, range(0, 30), sei)
    assert [(m.first_frame, m.last_frame, m.frames) for m in msgs] == [(0, 9, 7), (20, 22, 3)]


def test_messages_are_told_apart_by_payload_and_uuid_and_duplicates_in_one_unit_count_once() -> None:
    d = SeiDeduper(gap_frames=3)
    both = [(OUR_UUID, b"a"), (OUR_UUID, b"b"), (OTHER_UUID, b"a"), (OUR_UUID, b"a")]
    msgs = feed_frames(d, range(0, 4), {1: both, 2: both})
    assert sorted((m.uuid, m.payload, m.first_frame, m.last_frame, m.frames) for m in msgs) == sorted([
        (OUR_UUID, b"a", 1, 2, 2), (OUR_UUID, b"b", 1, 2, 2), (OTHER_UUID, b"a", 1, 2, 2)])


def test_sei_event_fields_and_binary_payloads() -> None:
    [msg] = feed_frames(SeiDeduper(), range(3), {1: [(OUR_UUID, "é?".encode())]})
    assert msg.to_event() == {"type": "sei", "uuid": "ba1c3e09-a64a-5765-bf19-d9e939d9bdf0", "text": "é?",
                              "first_frame": 1, "last_frame": 1, "frames": 1}
    [raw] = feed_frames(SeiDeduper(), range(3), {0: [(OTHER_UUID, b"\xff\x00")]})
    assert raw.to_event()["hex"] == "ff00"
    with pytest.raises(ValueError):
        SeiDeduper(gap_frames=0)


# ---- LatencyStats and CounterGaps -----------------------------------------------------------------

def test_latency_window_and_overall() -> None:
    s = LatencyStats(window_s=1.0)
    assert s.window(0.0) == (None, None, 0)
    for i in range(20):  # 0..1.9 s: 10 ms in the first second, 100 ms in the second
        s.add(i / 10, 10.0 if i < 10 else 100.0)
    assert s.window(1.95) == (100.0, 100.0, 10)
    median, p95, n = s.overall()
    assert n == 20 and median == pytest.approx(55.0) and p95 == pytest.approx(100.0)
    s.add(2.0, 300.0)
    median, p95, n = s.window(2.0)
    assert n == 10 and median == 100.0 and p95 == pytest.approx(210.0)  # numpy's linear interpolation
    assert s.window(10.0) == (None, None, 0)


def test_counter_gaps() -> None:
    c = CounterGaps()
    assert [c.feed(x) for x in (5, 6, 9, 9, 10, 14)] == [0, 0, 2, 0, 0, 3]
    assert (c.missing, c.repeated) == (5, 1)
    assert c.feed(0) == 0  # the source restarted its count: not thousands missing
    c.reset()
    assert c.feed(100) == 0 and c.missing == 5


# ---- URLs and luma ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "shown"), [
    ("rtmp://example.com/live/s3cr3t-key", "rtmp://example.com/live/***"),
    ("rtmp://example.com:1935/app/inst/key?token=abc", "rtmp://example.com:1935/app/***"),
    ("https://cdn.example.com/live/s3cr3t-key/index.m3u8", "https://cdn.example.com/live/***"),
    ("rtmps://user:pw@example.com/live/key", "rtmps://***@example.com/live/***"),
    ("http://127.0.0.1:8080/hls/stream.m3u8", "http://127.0.0.1:8080/hls/***"),
    ("rtmp://example.com", "rtmp://example.com"),
    ("/tmp/media/secret.flv", "/tmp/media/***"),
    ("secret.flv", "***"),
])
def test_redact_url_hides_the_stream_key(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def yuv_frame(rgb: NDArray[np.uint8], fmt: str = "yuv420p") -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)


def test_stamp_reads_from_the_luma_plane_without_rgb_conversion() -> None:
    rgb = np.full((360, 640, 3), 90, np.uint8)
    stamp.burn(rgb, 1234, 1_700_000_000_123)
    for fmt in ("yuv420p", "nv12", "rgb24"):
        frame = yuv_frame(rgb, fmt)
        y = luma(frame)
        assert y.shape == (360, 640) and y.dtype == np.uint8
        assert stamp.read(y) == stamp.Stamp(1234, 1_700_000_000_123), fmt


def test_snapshot_that_cannot_be_written_is_a_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(FileError, match="cannot write snapshot"):
        save_png(np.zeros((8, 8, 3), np.uint8), blocker / "x.png")
    assert save_png(np.zeros((8, 8, 3), np.uint8), tmp_path / "ok.png") == tmp_path / "ok.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "ok.png"]  # no temporary file left


# ---- PlaySession: records in, events out ----------------------------------------------------------

def frame_info(t: float, counter: int | None = None, latency: float | None = None) -> VideoFrameInfo:
    st = None if counter is None else stamp.Stamp(counter, 0)
    return VideoFrameInfo(t, 1280, 720, st, latency)


def session_events(records: list[tuple[str, Any]], *, end: float, reason: str = "duration") -> list[dict[str, Any]]:
    """Feed (kind, value) steps: ("rec", record) or ("tick", now); then finish at `end`."""
    session = PlaySession("rtmp://h/live/KEY", 100.0, stall_s=0.5, sei_gap_frames=5)
    events: list[dict[str, Any]] = []
    for kind, value in records:
        events += session.feed(value) if kind == "rec" else session.tick(value)
    return events + session.finish(end, reason)


def steady_stream(start: float, n: int, fps: float = 30.0, first_index: int = 0,
                  sei: dict[int, list[tuple[bytes, bytes]]] | None = None) -> Iterator[tuple[str, Any]]:
    for k in range(n):
        i = first_index + k
        t = start + k / fps
        yield "rec", VideoPacketInfo(i, t, i % 30 == 0, tuple((sei or {}).get(i, [])))
        yield "rec", frame_info(t + 0.002, counter=1000 + i, latency=20.0 + (i % 5))
        if k % 2 == 0:
            yield "rec", AudioInfo(t, 1024, 44100, 2)
        yield "tick", t + 0.003


def test_session_events_for_a_steady_stream() -> None:
    connected = Connected(100.5, {"codec": "h264", "width": 1280, "height": 720, "fps": 30.0},
                          {"codec": "aac", "rate": 44100, "channels": 2})
    sei = {i: [(OUR_UUID, b"q1")] for i in range(10, 20)}
    events = session_events([("rec", connected), *steady_stream(100.6, 90, sei=sei)], end=103.7)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "connected" and kinds[-2:] == ["ended", "summary"]
    assert events[0] == {"type": "connected", "t": 0.5, "url": "rtmp://h/live/***", "video": connected.video,
                         "audio": connected.audio, "connect_ms": 500}
    assert kinds.count("stats") == 3  # at 1, 2 and 3 s after connecting
    stats = [e for e in events if e["type"] == "stats"]
    assert [s["t"] for s in stats] == pytest.approx([1.5, 2.5, 3.5], abs=0.04)
    for s in stats[1:]:
        assert s["fps"] == pytest.approx(30.0, abs=1.5)
        assert (s["stalls"], s["stall_ms"], s["missing"], s["width"], s["height"]) == (0, 0, 0, 1280, 720)
        assert s["latency_ms_median"] == 22.0 and s["latency_ms_p95"] == 24.0 and s["latency_samples"] >= 29
        assert s["audio"]["rate"] == 44100 and s["audio"]["channels"] == 2 and s["audio"]["frames"] > 0
    [q] = [e for e in events if e["type"] == "sei"]
    assert (q["text"], q["first_frame"], q["last_frame"], q["frames"]) == ("q1", 10, 19, 10)
    assert "stall" not in kinds and "stall_start" not in kinds
    summary = events[-1]
    assert summary["frames"] == 90 and summary["fps"] == pytest.approx(30.0, abs=0.1)
    assert summary["latency_samples"] == 90 and summary["latency_ms_median"] == 22.0
    assert summary["sei_messages"] == 1 and summary["reason"] == "duration" and summary["missing"] == 0
    # every event is one JSON line that round-trips
    for e in events:
        assert json.loads(json.dumps(e)) == e


def test_session_reports_a_pause_as_one_stall_and_counts_missing_counters() -> None:
    steps = [("rec", Connected(100.1, {"codec": "h264", "width": 1280, "height": 720, "fps": 30.0}, None)),
             *steady_stream(100.2, 30), ("tick", 101.5), ("tick", 102.0),
             *steady_stream(102.25, 30, first_index=35)]  # counters 1030..1034 never come
    events = session_events(steps, end=103.5)
    starts = [e for e in events if e["type"] == "stall_start"]
    stalls = [e for e in events if e["type"] == "stall"]
    assert len(starts) == 1 and starts[0]["after_frame"] == 29 and starts[0]["t"] == 2.0
    gap_ms = (102.252 - (100.2 + 29 / 30 + 0.002)) * 1000  # last picture before the pause -> first after
    assert len(stalls) == 1 and stalls[0]["duration_ms"] == round(gap_ms) and stalls[0]["after_frame"] == 29
    summary = events[-1]
    assert (summary["stalls"], summary["missing"], summary["frames"]) == (1, 5, 60)
    assert summary["stall_ms"] == round(gap_ms)
    stats = [e for e in events if e["type"] == "stats"]
    assert any(s["stalls"] == 1 for s in stats) and stats[0]["stalls"] == 0


def test_session_without_a_connection_and_audio_only() -> None:
    events = session_events([("tick", 101.0)], end=102.0, reason="stopped")
    assert [e["type"] for e in events] == ["ended", "summary"]
    assert events[-1]["connected"] is False and events[-1]["frames"] == 0
    steps = [("rec", Connected(100.2, None, {"codec": "aac", "rate": 48000, "channels": 1})),
             *[("rec", AudioInfo(100.3 + i / 47, 1024, 48000, 1)) for i in range(60)], ("tick", 101.25)]
    events = session_events(steps, end=101.5)
    [stats] = [e for e in events if e["type"] == "stats"]
    assert stats["width"] is None and stats["fps"] == 0.0 and stats["audio"]["frames"] == 60


# ---- CLI output -----------------------------------------------------------------------------------

def test_json_lines_and_human_lines() -> None:
    connected = Connected(100.5, {"codec": "h264", "width": 640, "height": 360, "fps": 30.0},
                          {"codec": "aac", "rate": 48000, "channels": 2})
    steps = [("rec", connected), *steady_stream(100.6, 40, sei={3: [(OUR_UUID, b"poll")]}), ("tick", 101.9),
             ("tick", 102.8)]
    events = session_events(steps, end=103.0)
    out = io.StringIO()
    emit = _printer(True, out)
    for e in events:
        emit(e)
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == events
    assert all("\n" not in line and line.startswith('{"type":') for line in lines)

    human = [format_event(e) for e in events]
    text = "\n".join(human)
    assert "connected to rtmp://h/live/*** in 500 ms: h264 640x360, aac 48000 Hz 2ch" in text
    assert "SEI ba1c3e09-a64a-5765-bf19-d9e939d9bdf0: 'poll' (frames 3-3, in 1)" in text
    assert "stall of" in text and "stalled after frame 39" in text
    assert human[-1].startswith("summary: 3.0 s, 40 frames (30.0 fps), latency median 22 ms p95 24 ms, 1 stalls")
    assert "KEY" not in text


def test_play_subcommand_is_registered() -> None:
    args = build_parser().parse_args(["play", "rtmp://h/live/k", "--duration", "2", "--json",
                                                "--snapshot", "x.png", "--input-option", "fflags=nobuffer"])
    assert (args.url, args.duration, args.json, args.snapshot, args.input_option) == (
        "rtmp://h/live/k", 2.0, True, "x.png", ["fflags=nobuffer"])


# ---- the whole Player on a local FLV file ----------------------------------------------------------

WALL0_MS = 1_700_000_000_000


def write_flv(path: Path, n: int = 45, *, skip: int | None = None,
              sei: dict[int, bytes] | None = None) -> None:
    """A 320x180 FLV (H.264 AVCC + AAC) whose frame i carries stamp (i, WALL0_MS + 33*i), skipping
    counter `skip`, with an SEI message prepended to the access units listed in `sei`."""
    out = av.open(str(path), "w", format="flv")
    v = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "tune": "zerolatency"})
    v.width, v.height, v.pix_fmt = 320, 180, "yuv420p"
    v.codec_context.gop_size, v.codec_context.max_b_frames = 15, 0
    a = out.add_stream("aac", rate=44100, layout="stereo")
    sent = 0
    counters = [i for i in range(n + 1) if i != skip][:n]
    for i, counter in enumerate(counters):
        rgb = np.full((180, 320, 3), (i * 5) % 256, np.uint8)
        stamp.burn(rgb, counter, WALL0_MS + 33 * counter)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = i, Fraction(1, 30)
        for pkt in v.encode(frame):
            if sei and i in sei:
                new = av.Packet(insert_sei(bytes(pkt), build_sei_nal(sei[i])))
                new.pts, new.dts, new.time_base, new.is_keyframe = pkt.pts, pkt.dts, pkt.time_base, pkt.is_keyframe
                new.stream = pkt.stream
                pkt = new
            out.mux(pkt)
        while sent < (i + 1) * 44100 // 30:
            af = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
            af.sample_rate, af.pts, af.time_base = 44100, sent, Fraction(1, 44100)
            sent += 1024
            out.mux(a.encode(af))
    out.mux(v.encode(None))
    out.mux(a.encode(None))
    out.close()


def counting_wall_clock(latency_ms: float) -> Callable[[], float]:
    """A wall clock that reads `latency_ms` after frame k's stamp at the k-th call (one call per frame)."""
    calls = itertools.count()
    return lambda: (WALL0_MS + 33 * next(calls) + latency_ms) / 1000.0


def test_player_reads_sei_stamps_and_snapshot_from_an_flv_file(tmp_path: Path) -> None:
    flv = tmp_path / "in.flv"
    sei = {i: b"question 1" for i in range(5, 15)} | {i: b"question 2" for i in range(20, 25)}
    write_flv(flv, 45, sei=sei)
    events: list[dict[str, Any]] = []
    png = tmp_path / "snaps" / "first.png"
    report = Player(str(flv), snapshot=png, on_event=events.append, sei_gap_frames=3,
                    wall_clock=counting_wall_clock(40.0)).run()
    assert report.connected and report.reason == "end of stream"
    assert report.frames == 45 and (report.width, report.height) == (320, 180)
    assert report.latency_ms_median == pytest.approx(40.0) and report.latency_ms_p95 == pytest.approx(40.0)
    assert report.latency_samples == 45 and report.missing == 0 and report.stalls == 0
    assert report.audio_frames > 0 and report.decode_errors == 0
    ours = [(e["text"], e["first_frame"], e["last_frame"], e["frames"]) for e in events
            if e["type"] == "sei" and e["uuid"] == "ba1c3e09-a64a-5765-bf19-d9e939d9bdf0"]
    assert ours == [("question 1", 5, 14, 10), ("question 2", 20, 24, 5)]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "connected" and kinds[-2:] == ["ended", "summary"] and kinds.count("snapshot") == 1
    img = cv2.imread(str(png))
    assert img is not None and img.shape == (180, 320, 3)
    assert stamp.read(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)) == stamp.Stamp(0, WALL0_MS)  # the first frame


def test_player_counts_missing_counters(tmp_path: Path) -> None:
    flv = tmp_path / "gap.flv"
    write_flv(flv, 20, skip=7)
    report = Player(str(flv)).run(duration_s=30)
    assert report.frames == 20 and report.missing == 1 and report.snapshot is None


def test_player_errors_name_the_place_without_the_key(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=r"cannot open .*/\*\*\*") as info:
        Player(str(tmp_path / "secret-key.flv")).run(duration_s=2)
    assert "secret-key" not in str(info.value)
    with pytest.raises(ConnectError) as info2:
        Player("rtmp://127.0.0.1:9/live/secret-key", timeout_s=2).run(duration_s=3)
    assert info2.value.code == 1302 and "secret-key" not in str(info2.value)
    assert "rtmp://127.0.0.1:9/live/***" in str(info2.value)


# ---- the rtmp_puller actor with a fake puller thread -----------------------------------------------

def test_pts_mapper_anchors_follows_and_reanchors() -> None:
    m = PtsMapper(max_drift_ns=NS)
    assert m.map(10.0, 5 * NS) == 5 * NS
    assert m.map(10.5, 5 * NS + 520_000_000) == 5 * NS + 500_000_000  # follows the stream's clock
    assert m.map(30.0, 6 * NS) == 6 * NS  # 19 s off the engine clock: re-anchored
    m.reset()
    assert m.map(0.0, 7 * NS) == 7 * NS


def test_audio_chunker_emits_exact_frames_with_counted_pts() -> None:
    c = AudioChunker(48000, 2, 1024)
    with pytest.raises(RuntimeError):
        c.push(np.zeros((10, 2), np.int16))
    c.start(NS)  # sample 48000
    pcm = np.arange(2500 * 2, dtype=np.int16).reshape(2500, 2)
    out = c.push(pcm)
    assert [p for _, p in out] == [NS, (48000 + 1024) * NS // 48000]
    assert all(chunk.shape == (1024, 2) for chunk, _ in out)
    np.testing.assert_array_equal(np.concatenate([ch for ch, _ in out]), pcm[:2048])
    c.start(0)  # a new connection never moves audio backwards; the old one's unfinished chunk is dropped
    [(_, pts)] = c.push(np.zeros((1024, 2), np.int16))
    assert pts == (48000 + 2500) * NS // 48000


class FakePuller:
    """Stands in for StreamPuller: the test feeds records, frames and audio."""

    made: list[FakePuller] = []

    def __init__(self, url: str, **kwargs: Any) -> None:
        self.url, self.kwargs = url, kwargs
        self.records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.video: list[tuple[av.VideoFrame, float]] = []
        self.audio: list[tuple[NDArray[np.int16], float]] = []
        self.decode_errors = self.dropped_video = 0
        self.started = self.stopped = False
        FakePuller.made.append(self)

    def start(self) -> None:
        self.started = True

    def stop(self, wait_s: float = 1.0) -> bool:
        self.stopped = True
        return True

    def take_video(self) -> list[tuple[av.VideoFrame, float]]:
        out, self.video = self.video, []
        return out

    def take_audio(self) -> list[tuple[NDArray[np.int16], float]]:
        out, self.audio = self.audio, []
        return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def actor(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RtmpPuller, FakeClock]]:
    FakePuller.made.clear()
    clock = FakeClock()
    monkeypatch.setattr(puller_mod, "StreamPuller", FakePuller)
    monkeypatch.setattr(RtmpPuller, "clock", staticmethod(clock))
    a = RtmpPuller(RtmpPullerOptions(url="rtmp://h/live/KEY", width=320, height=180, fps=30, rate=48000,
                                     channels=2, retries=2, retry_interval_s=1.0))
    a.setup(Context(node_id="pull"))
    yield a, clock
    a.stop()


def picture(counter: int) -> av.VideoFrame:
    rgb = np.full((360, 640, 3), 60, np.uint8)
    stamp.burn(rgb, counter, WALL0_MS)
    return yuv_frame(rgb)


def emitted(actions: list[Any], pad: str) -> list[Any]:
    return [a.media for a in actions if isinstance(a, Emit) and a.pad == pad]


def named_events(actions: list[Any]) -> list[str]:
    return [a.name for a in actions if isinstance(a, Event)]


def test_actor_emits_scaled_pictures_and_chunked_audio_on_the_engine_clock(
        actor: tuple[RtmpPuller, FakeClock]) -> None:
    a, clock = actor
    assert a.tick_interval_ns == round(NS / 30)
    assert a.on_tick(10 * NS) == [] and len(FakePuller.made) == 1  # connects at the first tick
    p = FakePuller.made[0]
    assert p.started and p.url == "rtmp://h/live/KEY" and p.kwargs["audio_format"] == (48000, 2)
    p.records.put(Connected(clock.now, {"codec": "h264", "width": 640, "height": 360, "fps": 30.0},
                            {"codec": "aac", "rate": 44100, "channels": 2}))
    p.records.put(VideoFrameInfo(clock.now, 640, 360, stamp.Stamp(0, WALL0_MS), 25.0))
    p.video = [(picture(0), 50.0)]
    p.audio = [(np.ones((1500, 2), np.int16), 50.0)]
    actions = a.on_tick(11 * NS)
    assert named_events(actions) == ["connected"]
    [video] = emitted(actions, "video")
    assert video.data.shape == (180, 320, 3) and video.data.dtype == np.uint8 and video.pts_ns == 11 * NS
    assert stamp.read(video.data) == stamp.Stamp(0, WALL0_MS)  # the stamp survives the scaling
    [audio] = emitted(actions, "audio")
    assert audio.data.shape == (1024, 2) and audio.pts_ns == 11 * NS

    # next tick: two pictures 1/30 s apart (one tick was late) -> both, on the stream's timeline
    p.video = [(picture(1), 50.0 + 1 / 30), (picture(2), 50.0 + 2 / 30)]
    p.audio = [(np.ones((1500, 2), np.int16), 50.0 + 1500 / 48000)]
    actions = a.on_tick(11 * NS + 70_000_000)
    assert [f.pts_ns for f in emitted(actions, "video")] == [11 * NS + round(NS / 30), 11 * NS + round(2 * NS / 30)]
    assert [f.pts_ns for f in emitted(actions, "audio")] == [11 * NS + 1024 * NS // 48000]  # 476 + 1500 samples
    # a 120 fps source is thinned to 30 fps; more than two pending pictures: the oldest are dropped
    base = 50.0 + 3 / 30
    p.video = [(picture(k), base + k / 120) for k in range(4)]
    actions = a.on_tick(11 * NS + 110_000_000)
    assert len(emitted(actions, "video")) == 1
    assert a.metrics()["dropped_video"] == 3
    assert a.metrics()["connected"] is True


def test_actor_reconnects_then_gives_up_with_a_redacted_connect_error(actor: tuple[RtmpPuller, FakeClock]) -> None:
    a, clock = actor
    a.on_tick(0)
    first = FakePuller.made[0]
    first.records.put(Connected(clock.now, {"codec": "h264", "width": 640, "height": 360, "fps": 30.0}, None))
    assert named_events(a.on_tick(NS)) == ["connected"]
    clock.now += 2
    first.records.put(Ended(clock.now, "no data for 5 s"))
    actions = a.on_tick(2 * NS)
    assert named_events(actions) == ["disconnected", "reconnecting"]
    assert [a_.data for a_ in actions if isinstance(a_, Event)][1]["attempt"] == 1
    assert a.on_tick(2 * NS + 1) == [] and len(FakePuller.made) == 1  # waits retry_interval_s
    clock.now += 1.0
    a.on_tick(3 * NS)
    assert len(FakePuller.made) == 2
    refused = ConnectError("cannot connect to rtmp://h/live/***: Connection refused")
    FakePuller.made[1].records.put(Ended(clock.now, "connect failed", refused))
    assert named_events(a.on_tick(3 * NS + 1)) == ["reconnecting"]
    clock.now += 1.0
    a.on_tick(4 * NS)
    FakePuller.made[2].records.put(Ended(clock.now, "connect failed", refused))
    with pytest.raises(ConnectError, match="gave up after 3 attempts") as info:
        a.on_tick(4 * NS + 1)
    assert "KEY" not in str(info.value) and info.value.code == 1302


def test_actor_options_and_audio_off(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OptionError, match="channels: 3 is not one of 1, 2"):  # declared with option()
        check_instance(RtmpPullerOptions(url="x", channels=3))
    with pytest.raises(OptionError, match="url"):
        RtmpPuller.validate(RtmpPullerOptions(url=""), {})
    fmts = RtmpPuller.output_formats(RtmpPullerOptions(url="rtmp://h/live/k", width=1280, height=720), {})
    assert fmts["video"].describe() == "video rgb24 1280x720@30"
    monkeypatch.setattr(puller_mod, "StreamPuller", FakePuller)
    a = RtmpPuller(RtmpPullerOptions(url="rtmp://h/live/k", audio=False))
    a.setup(Context())
    actions = a.on_tick(0)
    assert [x.pad for x in actions if isinstance(x, EndOfStream)] == ["audio"]
    assert FakePuller.made[-1].kwargs["audio_format"] is None


ENTRY_UNDER_A_PULL_THREAD = """
import atexit, sys, threading, time
from mediaengine.sdk.pull import STREAM_PULLER
from mediaengine.cli.main import entry
threading.Thread(target=time.sleep, args=(30,), name=STREAM_PULLER, daemon=True).start()
atexit.register(print, "finalised")
sys.argv = ["mediaengine", "play", "rtmp://127.0.0.1:1/live/x", "--duration", "0.2", "--timeout", "0.1"]
entry()
"""


def test_the_command_ends_without_finalising_under_a_pull_thread() -> None:
    # finalising the interpreter while a pull thread is inside FFmpeg crashed `play` (SIGSEGV, 1 run in 30
    # on a loaded machine, `play` of an unpublished stream): with such a thread alive the command ends at
    # once with main()'s status, its output flushed; atexit handlers (finalisation) never run
    out = subprocess.run([sys.executable, "-c", ENTRY_UNDER_A_PULL_THREAD], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 1, out.stderr
    assert "(error 1302 ConnectError)" in out.stderr and "finalised" not in out.stdout
