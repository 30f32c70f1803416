"""What the player reports must be true: stalls are measured as a viewer's playout buffer running dry
(HLS segment bursts are not stalls, a late segment is), x264's encoder-information SEI is not a live
Q&A message, and what the player keeps from network data is bounded (SEI parsing in C-speed passes,
the dedupe window, the records queue)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from mediaengine.sdk.pull import (
    MAX_OPEN_SEI,
    MAX_RECORDS,
    Connected,
    PlaySession,
    SeiDeduper,
    StallDetector,
    StreamPuller,
    VideoFrameInfo,
    VideoPacketInfo,
)
from mediaengine.sdk.sei import (
    MAX_MESSAGES_PER_ACCESS_UNIT,
    OUR_UUID,
    START_CODE,
    X264_UUID,
    build_sei_nal,
    escape_rbsp,
    parse_sei_payloads,
)

FPS = 30


def hls_arrivals(segments: int, *, late: dict[int, float] | None = None) -> list[tuple[float, float]]:
    """(arrival, pts) of the frames of a live HLS stream of 1 s segments as FFmpeg's demuxer delivers
    them: the first three segments at once (it starts three from the live edge), then each one in a
    burst when it is published, a second after the previous one (`late` delays segment k by s)."""
    out = []
    for k in range(segments):
        arrival = 0.2 if k < 3 else 0.2 + (k - 2) * 1.0 + 0.35  # published ~1 s apart, fetched in a burst
        arrival += (late or {}).get(k, 0.0)
        out += [(arrival + i * 0.002, k + i / FPS) for i in range(FPS)]
    return out


def run_detector(arrivals: list[tuple[float, float]], buffer_s: float = 0.5) -> StallDetector:
    d = StallDetector(buffer_s)
    t = 0.0
    for arrival, pts in arrivals:
        while t < arrival:  # the player's loop ticks every 50 ms
            d.poll(t)
            t += 0.05
        d.frame(arrival, pts)
    d.finish(arrivals[-1][0] + 0.01)
    return d


def test_hls_segment_bursts_are_not_stalls() -> None:
    d = run_detector(hls_arrivals(12))
    assert (d.count, d.total_s(99.0)) == (0, 0.0)


def test_a_segment_that_comes_too_late_is_one_stall_until_playback_resumes() -> None:
    # segment 7 should play at 0.2 + 0.5 + 7 = 7.7 s; it arrives 3 s late (at 8.55 + 0.002 i)
    d = run_detector(hls_arrivals(12, late={7: 3.0, 8: 3.0, 9: 3.0, 10: 3.0, 11: 3.0}))
    assert d.count == 1
    # dry at 7.7 s, the late frame at 8.55 s, playback again 0.5 s later: 1.35 s frozen
    assert d.total_s(99.0) == pytest.approx(8.55 + 0.5 - 7.7, abs=0.01)


def test_steady_arrival_with_jitter_below_the_buffer_is_not_a_stall_and_a_pause_is() -> None:
    steady = [(1.0 + i / FPS + (0.2 if i % 7 == 3 else 0.0), i / FPS) for i in range(90)]
    assert run_detector(steady).count == 0
    paused = [*steady, *[(3.0 + 2.0 + i / FPS, 3.0 + i / FPS) for i in range(30)]]  # 2 s without data
    d = run_detector(paused)
    assert d.count == 1 and d.total_s(99.0) == pytest.approx(5.0 + 0.5 - (1.0 + 0.5 + 3.0), abs=0.05)


def test_x264_encoder_information_is_not_a_message_unless_asked() -> None:
    x264_text = b"x264 - core 164 r3095 - H.264/MPEG-4 AVC codec - options: cabac=1 ref=1"
    for all_sei, kinds in ((False, ["sei", "sei_other"]), (True, ["sei", "sei"])):
        s = PlaySession("rtmp://h/live/KEY", 0.0, sei_gap_frames=5, all_sei=all_sei)
        events: list[dict[str, Any]] = s.feed(Connected(0.1, {"codec": "h264", "width": 8, "height": 8}, None))
        for i in range(20):
            sei = ((X264_UUID, x264_text),) if i == 0 else ((OUR_UUID, b"Q1?"),) if 5 <= i < 8 else ()
            events += s.feed(VideoPacketInfo(i, 0.2 + i / FPS, i == 0, sei))
            events += s.feed(VideoFrameInfo(0.2 + i / FPS, 8, 8, None, None, None, i / FPS))
        events += s.finish(1.0, "duration")
        sei_events = [e for e in events if e["type"] in ("sei", "sei_other")]
        assert sorted(e["type"] for e in sei_events) == kinds
        summary = events[-1]
        if all_sei:
            assert summary["sei_messages"] == 2 and summary["sei_other"] == 0
        else:
            [other] = [e for e in sei_events if e["type"] == "sei_other"]
            assert other["uuid"] == "dc45e9bd-e6d9-48b7-962c-d820d923eeef" and other["source"].startswith("x264")
            assert "text" not in other and other["bytes"] == len(x264_text)
            assert summary["sei_messages"] == 1 and summary["sei_other"] == 1
            assert [e["text"] for e in sei_events if e["type"] == "sei"] == ["Q1?"]


def test_sei_parsing_of_a_huge_nal_is_not_a_per_byte_python_loop() -> None:
    payload = (b"\x00\x00\x01\x00\x00\x03" + bytes(range(10))) * 1_000_000  # 16 MB, escapes everywhere
    nal = build_sei_nal(payload)
    t0 = time.perf_counter()
    [(uuid, got)] = parse_sei_payloads(nal)
    elapsed = time.perf_counter() - t0
    assert (uuid, got) == (OUR_UUID, payload)
    assert elapsed < 2.0, f"parsing a 16 MB SEI NAL took {elapsed:.2f} s"


def test_one_access_unit_yields_a_bounded_number_of_sei_messages() -> None:
    body = (b"\x05\x11" + bytes(17)) * 50_000 + b"\x80"
    found = parse_sei_payloads(START_CODE + b"\x06" + escape_rbsp(body))
    assert len(found) == MAX_MESSAGES_PER_ACCESS_UNIT


def test_the_sei_dedupe_window_is_bounded() -> None:
    d = SeiDeduper(gap_frames=1000)
    closed = []
    for i in range(50):
        closed += d.feed(i, [(OUR_UUID, f"{i}-{j}".encode()) for j in range(60)])
    assert len(d._open) <= MAX_OPEN_SEI
    assert len(closed) + len(d.flush()) == 50 * 60  # none lost: the stalest are closed early


def test_the_pulling_thread_waits_when_the_session_is_too_far_behind() -> None:
    p = StreamPuller("rtmp://127.0.0.1:1/live/x")  # never started: we play the thread's part
    done = threading.Event()

    def produce() -> None:
        for i in range(MAX_RECORDS + 500):
            p._put(VideoPacketInfo(i, float(i), False, ()))
        done.set()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while p.records.qsize() < MAX_RECORDS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.records.qsize() == MAX_RECORDS and not done.is_set()  # bounded: the producer waits
    p.records.get_nowait()
    p._stop.set()  # the session went away: the producer gives up instead of hanging
    assert done.wait(5)
    t.join(5)
    assert p.records.qsize() <= MAX_RECORDS
