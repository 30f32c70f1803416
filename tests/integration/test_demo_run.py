"""The demo topology end to end: real actor processes, a real MP4 checked by ffprobe and decoded."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from tests.enginekit import Engine, decoded_counters, ffprobe, leftovers, max_gap, video_pts, wait_for

pytestmark = pytest.mark.integration

DEMO = "topologies/demo.yaml"


def test_demo_writes_a_gapless_h264_aac_mp4(engine_runner: Callable[..., Engine], tmp_path: Path) -> None:
    mp4, png = tmp_path / "demo.mp4", tmp_path / "snap.png"
    eng = engine_runner(DEMO, "--duration", "10", "--set", f"rec.path={mp4}", "--set", f"snap.path={png}")
    eng.wait_running()  # also learns the engine's id, so the leftovers check below sees its segments
    assert eng.wait(60) == 0, eng.log
    log = eng.log
    for node in ("src", "tone", "filt", "venc", "aenc", "rec", "snap"):
        assert f"node {node} started pid=" in log

    info = ffprobe(mp4, "-show_streams", "-show_format")
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (640, 360)
    assert 9.0 <= float(info["format"]["duration"]) <= 11.5
    # the stream's rate is 30/s; whether frames are missing is what the gap check below says (the average
    # rate, frames over the stream's duration, read 28.6 in a CI run on a loaded machine)
    assert streams["video"]["r_frame_rate"] == "30/1"

    pts = video_pts(mp4)
    assert max_gap(pts) <= 1.5 / 30, f"video timestamp gap of {max_gap(pts):.3f}s"
    counters = decoded_counters(mp4)
    assert len(counters) >= 270
    missing = [b for a, b in itertools.pairwise(counters) if b != a + 1]
    assert not missing, f"frame counter jumps at {missing[:10]}"

    snap = cv2.imread(str(png))
    assert snap is not None and snap.shape == (360, 640, 3)
    procs, segs = leftovers(eng.runtime_dir, eng.engine_ids)
    assert not procs and not segs


def test_ctrl_c_stops_in_order_and_leaves_nothing(engine_runner: Callable[..., Engine], tmp_path: Path) -> None:
    mp4 = tmp_path / "demo.mp4"
    eng = engine_runner(DEMO, "--set", f"rec.path={mp4}", "--set", f"snap.path={tmp_path / 's.png'}")
    eng.wait_running()
    # the recorder creates its file on the first packets of both tracks: stop once it has (on a busy
    # machine `running` can come before the encoders' first packets)
    wait_for(lambda: mp4.exists(), 20, "the recorder writing its file")
    eng.proc.send_signal(signal.SIGINT)
    assert eng.wait(30) == 0, eng.log
    assert "SIGINT: stopping" in eng.log
    # the recorder finalised the file: ffprobe reads both streams to the end
    info = ffprobe(mp4, "-show_streams", "-show_format")
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    procs, segs = leftovers(eng.runtime_dir, eng.engine_ids)
    assert not procs, f"processes left: {procs}"
    assert not segs, f"segments left: {segs}"
