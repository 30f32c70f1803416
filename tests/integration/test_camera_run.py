"""The `camera` source in a real engine: FFmpeg's lavfi device standing in for a camera, through the
same code that opens a V4L2 camera, encoded and recorded; the recording checked with ffprobe and
decoded.  And an absent camera: a typed error naming it, restarted with the supervisor's backoff."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from tests.enginekit import Engine, ffprobe, leftovers, max_gap, video_pts, wait_for

pytestmark = pytest.mark.integration

CAMERA = """\
version: 1
name: camera_record
supervisor: {{intensity: 50, period_s: 60, backoff_initial_s: 0.2, backoff_max_s: 1.0}}
nodes:
  - {{id: cam,  kind: camera, options: {{device: "{device}", width: 640, height: 360, fps: 30}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: cam}}, options: {{bitrate_kbps: 2000, gop_s: 1}}}}
  - {{id: rec,  kind: recorder, inputs: {{video: venc}}, options: {{path: "{path}"}}}}
"""


def topology(tmp_path: Path, device: str, mp4: Path) -> Path:
    path = tmp_path / "camera.yaml"
    path.write_text(CAMERA.format(device=device, path=mp4))
    return path


def events(eng: Engine, node: str, name: str) -> list[dict[str, object]]:
    return [e for e in eng.request("snapshot").get("events_recent", [])
            if e.get("node") == node and e.get("name") == name]


def test_a_lavfi_camera_is_recorded_in_real_time(engine_runner: Callable[..., Engine], tmp_path: Path) -> None:
    mp4 = tmp_path / "cam.mp4"
    eng = engine_runner(topology(tmp_path, "lavfi:testsrc2=size=1280x720:rate=30", mp4), "--duration", "6")
    eng.wait_running()
    (opened,) = wait_for(lambda: events(eng, "cam", "capture_opened"), 20, "the capture_opened event")
    data = opened["data"]
    assert isinstance(data, dict)
    assert (data["width"], data["height"], data["fps"], data["pix_fmt"]) == (1280, 720, 30.0, "yuv420p")
    # read in real time: the device frames read keep step with the frames emitted (lavfi alone would
    # make hundreds per second)
    m = wait_for(lambda: (a := eng.node("cam")["metrics"].get("actor", {})).get("frames_emitted", 0) >= 60 and a,
                 20, "60 camera frames")
    assert m["frames_emitted"] - 2 <= m["frames_read"] <= m["frames_emitted"] * 1.1 + 2, m
    assert m["capture_width"] == 1280 and m["capture_fps"] == 30.0
    assert eng.wait(60) == 0, eng.log

    info = ffprobe(mp4, "-show_streams", "-show_format")
    (video,) = info["streams"]
    assert video["codec_name"] == "h264" and (video["width"], video["height"]) == (640, 360)
    assert video["r_frame_rate"] == "30/1"
    assert 5.0 <= float(info["format"]["duration"]) <= 7.0, info["format"]
    pts = video_pts(mp4)
    assert len(pts) >= 150 and max_gap(pts) <= 1.5 / 30, f"{len(pts)} frames, gap {max_gap(pts):.3f}s"
    # every recorded frame is a new picture of the moving test source (no picture repeated, none stuck)
    with av.open(str(mp4)) as c:
        pics = [f.to_ndarray(format="gray") for f in itertools.islice(c.decode(video=0), 90)]
    same = [i for i, (a, b) in enumerate(itertools.pairwise(pics))
            if np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() < 0.5]
    assert not same, f"frames repeated after {same[:10]}"
    procs, segs = leftovers(eng.runtime_dir, eng.engine_ids)
    assert not procs and not segs


def test_an_absent_camera_is_named_and_restarted_with_backoff(engine_runner: Callable[..., Engine],
                                                              tmp_path: Path) -> None:
    eng = engine_runner(topology(tmp_path, "/dev/video57", tmp_path / "none.mp4"))
    node = wait_for(lambda: (n := eng.node("cam"))["restarts"] >= 2 and n, 30, "two restarts of cam")
    assert "capture device /dev/video57 not found" in (node["last_error"] or ""), node
    errors = events(eng, "cam", "error")
    assert errors and all(e["data"]["code"] == 1320 for e in errors), errors  # type: ignore[index]
    assert eng.node("venc")["restarts"] == 0  # the rest of the engine runs on
    assert eng.stop(30) == 0, eng.log
