"""A live size change travels down a real engine: source -> overlay -> encoder -> recorder, no restart.

The test pattern starts at 640x360 and is switched to 1280x720 with `mediaengine ctl src set
width=1280 height=720` while it runs.  The overlay follows its input (the default
`on_format_changed`), the encoder reopens x264 at the new size, and the recorder writes the new
SPS/PPS in-band: the MP4, read back with ffprobe and decoded by ffmpeg, holds 640x360 frames and
then 1280x720 frames, decodes without an error and the burned-in frame counter has no gap.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.enginekit import ROOT, Engine, decoded_counters, leftovers, wait_for

pytestmark = pytest.mark.integration

TOPOLOGY = """\
version: 1
name: format-change
nodes:
  - {{id: src,  kind: test_pattern,  options: {{width: 640, height: 360, fps: 15, max_width: 1280, max_height: 720}}}}
  - id: filt
    kind: overlay
    inputs: {{in: {{from: src, policy: block}}}}
    options: {{text: "format change", x: 0.6, y: 0.85, box: true}}
  - {{id: venc, kind: video_encoder, inputs: {{in: filt}}, options: {{bitrate_kbps: 1000, gop_s: 1}}}}
  - {{id: rec,  kind: recorder,      inputs: {{video: venc}}, options: {{path: "{path}"}}}}
"""


def _ctl(eng: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(eng.runtime_dir)}
    return subprocess.run([sys.executable, "-m", "mediaengine.cli", "ctl", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)


def _frames_out(eng: Engine, node: str) -> int:
    return sum((eng.node(node)["metrics"].get("frames_out") or {}).values())


def _actor_metrics(eng: Engine, node: str) -> dict[str, Any]:
    return dict(eng.node(node)["metrics"].get("actor") or {})


def _frame_sizes(path: Path) -> list[tuple[int, int]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=width,height", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [(int(w), int(h)) for w, h in (line.split(",")[:2] for line in out.stdout.split())]


def test_a_source_switches_size_live_and_filter_encoder_and_recorder_follow(
        engine_runner: Callable[..., Engine], tmp_path: Path) -> None:
    mp4 = tmp_path / "switch.mp4"
    topo = tmp_path / "switch.yaml"
    topo.write_text(TOPOLOGY.format(path=mp4))
    eng = engine_runner(topo)
    eng.wait_running()
    wait_for(lambda: _frames_out(eng, "src") >= 30, 30, "two seconds of 640x360 frames")

    too_big = _ctl(eng, "src", "set", "width=1920", "height=1080")
    assert too_big.returncode != 0 and "max_width" in too_big.stderr, too_big

    switched = _ctl(eng, "src", "set", "width=1280", "height=720")
    assert switched.returncode == 0, switched.stderr
    at_switch = _frames_out(eng, "src")
    wait_for(lambda: _frames_out(eng, "src") >= at_switch + 40, 30, "more frames after the switch")
    wait_for(lambda: _actor_metrics(eng, "rec").get("params_changes", 0) >= 1, 15,
             "the recorder to see the new stream parameters")

    nodes = {n["id"]: n for n in eng.ps()["nodes"]}
    restarts = {nid: n["restarts"] for nid, n in nodes.items()}
    assert restarts == {"src": 0, "filt": 0, "venc": 0, "rec": 0}, eng.log
    assert _actor_metrics(eng, "venc")["reopens"] == 1  # the encoder got the event and reopened x264
    for nid in ("src", "filt", "venc"):  # each announced or received the change on its edge
        assert nodes[nid]["metrics"]["counters"].get("format_changes", 0) >= 1, nid

    eng.proc.send_signal(signal.SIGINT)
    assert eng.wait(60) == 0, eng.log

    sizes = _frame_sizes(mp4)
    runs = [(size, len(list(group))) for size, group in itertools.groupby(sizes)]
    assert [size for size, _ in runs] == [(640, 360), (1280, 720)], runs
    assert all(n >= 20 for _, n in runs), runs
    decode = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(mp4), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    # the burned-in counters: in order (a repeat is the encoder's keepalive under load), and no frame
    # lost at the switch itself
    counters = decoded_counters(mp4)
    assert all(a <= b for a, b in itertools.pairwise(counters)), counters
    last_small = counters[runs[0][1] - 1]
    assert counters[runs[0][1]] == last_small + 1, (counters, runs)
    procs, segs = leftovers(eng.runtime_dir, eng.engine_ids)
    assert not procs and not segs


def test_a_filter_restarted_after_the_switch_resumes_at_the_new_size(
        engine_runner: Callable[..., Engine], tmp_path: Path) -> None:
    """The restarted overlay reads the stream's current size from the ring header, not the topology's."""
    mp4 = tmp_path / "restart.mp4"
    topo = tmp_path / "restart.yaml"
    topo.write_text(TOPOLOGY.format(path=mp4))
    eng = engine_runner(topo)
    eng.wait_running()
    wait_for(lambda: _frames_out(eng, "src") >= 30, 30, "two seconds of 640x360 frames")
    switched = _ctl(eng, "src", "set", "width=1280", "height=720")
    assert switched.returncode == 0, switched.stderr
    wait_for(lambda: _actor_metrics(eng, "venc").get("reopens", 0) >= 1, 15, "the encoder to reopen")

    before = eng.node("filt")
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: (n := eng.node("filt"))["restarts"] == 1 and n["state"] == "running", 15, "filt restarted")
    at_restart = _frames_out(eng, "src")
    wait_for(lambda: _frames_out(eng, "src") >= at_restart + 30, 30, "frames after the restart")
    wait_for(lambda: sum((eng.node("filt")["metrics"].get("frames_out") or {}).values()) >= 20, 15,
             "the restarted filter to emit frames")

    restarts = {n["id"]: n["restarts"] for n in eng.ps()["nodes"]}
    assert restarts == {"src": 0, "filt": 1, "venc": 0, "rec": 0}, eng.log
    eng.proc.send_signal(signal.SIGINT)
    assert eng.wait(60) == 0, eng.log
    runs = [(size, len(list(group))) for size, group in itertools.groupby(_frame_sizes(mp4))]
    assert [size for size, _ in runs] == [(640, 360), (1280, 720)], runs
    decode = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(mp4), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
