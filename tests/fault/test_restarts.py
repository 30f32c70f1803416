"""Real processes killed for real: the supervisor brings them back and the output keeps flowing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.enginekit import (
    ROOT,
    Engine,
    ffprobe,
    leftovers,
    max_gap,
    processes_with_marker,
    video_pts,
    wait_for,
)

pytestmark = pytest.mark.fault

DEMO = "topologies/demo.yaml"


def _run_demo(engine_runner: Callable[..., Engine], tmp_path: Path, *extra: str) -> tuple[Engine, Path]:
    mp4 = tmp_path / "out.mp4"
    eng = engine_runner(DEMO, "--set", f"rec.path={mp4}", "--set", f"snap.path={tmp_path / 's.png'}", *extra)
    eng.wait_running()
    return eng, mp4


@pytest.mark.parametrize("victim", ["filt", "venc"])
def test_sigkill_of_filter_or_encoder_is_restarted_without_a_gap(
    engine_runner: Callable[..., Engine], tmp_path: Path, victim: str
) -> None:
    eng, mp4 = _run_demo(engine_runner, tmp_path, "--duration", "9")
    time.sleep(2.0)  # let the recording run before the fault (the fault is the point of the test)
    before = eng.node(victim)
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(lambda: (n := eng.node(victim))["restarts"] == 1 and n["state"] == "running" and n,
                     10, f"{victim} restarted")
    assert after["pid"] != before["pid"]
    # what a user sees: `mediaengine ps --json`
    out = subprocess.run([sys.executable, "-m", "mediaengine.cli", "ps", "--json"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(eng.runtime_dir)},
                         timeout=30)
    assert out.returncode == 0, out.stderr
    import json

    nodes = {n["id"]: n for n in json.loads(out.stdout)["engines"][0]["nodes"]}
    assert nodes[victim]["restarts"] == 1 and nodes[victim]["pid"] == after["pid"]
    assert f"node {victim} started pid={after['pid']}" in eng.log
    assert eng.wait(60) == 0, eng.log
    pts = video_pts(mp4)
    assert pts[-1] - pts[0] >= 7.0
    assert max_gap(pts) <= 0.5, f"gap of {max_gap(pts):.3f}s in the recording after killing {victim}"


def test_sigstop_is_detected_by_missed_heartbeats_and_replaced(
    engine_runner: Callable[..., Engine], tmp_path: Path
) -> None:
    eng, _ = _run_demo(engine_runner, tmp_path)
    before = eng.node("filt")
    os.kill(before["pid"], signal.SIGSTOP)
    after = wait_for(lambda: (n := eng.node("filt"))["restarts"] == 1 and n["state"] == "running" and n,
                     15, "stopped filter replaced")
    assert after["pid"] != before["pid"]
    assert "filt missed heartbeats" in eng.log
    eng.proc.send_signal(signal.SIGTERM)
    assert eng.wait(30) == 0, eng.log


def test_sigkill_of_the_engine_leaves_a_playable_file_and_next_start_cleans_up(
    engine_runner: Callable[..., Engine], tmp_path: Path
) -> None:
    eng, mp4 = _run_demo(engine_runner, tmp_path)
    engine_id = eng.info()["engine_id"]  # type: ignore[index]
    time.sleep(4.0)  # record a few keyframe intervals (gop 1 s) before the kill
    os.kill(eng.proc.pid, signal.SIGKILL)
    eng.proc.wait(10)
    # the actors follow their fork server down (parent-death signal)
    wait_for(lambda: not processes_with_marker(f"MEDIAENGINE_RUNTIME_DIR={eng.runtime_dir}"), 10,
             "actors of the killed engine to exit")
    info = ffprobe(mp4, "-show_streams", "-show_format")
    assert {s["codec_type"] for s in info["streams"]} >= {"video"}
    pts = video_pts(mp4)
    assert pts[-1] - pts[0] >= 2.0, f"only {pts[-1] - pts[0]:.2f}s survived the kill"
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-f", "null", "-"],
                             capture_output=True, text=True, timeout=60)
    assert decoded.returncode == 0, decoded.stderr
    # a later engine removes what the dead one left (its segments and runtime dir)
    assert (eng.runtime_dir / engine_id).exists()
    eng2 = engine_runner(DEMO, "--duration", "1", "--set", f"rec.path={tmp_path / 'b.mp4'}",
                         "--set", f"snap.path={tmp_path / 's2.png'}")
    assert eng2.wait(60) == 0, eng2.log
    assert f"removed what a dead engine {engine_id} left behind" in eng2.log
    assert not (eng.runtime_dir / engine_id).exists()
    procs, segs = leftovers(eng.runtime_dir, {engine_id} | eng2.engine_ids)
    assert not procs and not segs


def test_exceeding_intensity_stops_the_engine_with_a_clear_error(
    engine_runner: Callable[..., Engine], tmp_path: Path
) -> None:
    topo = tmp_path / "small.yaml"
    topo.write_text(
        "version: 1\n"
        "supervisor: {intensity: 3, period_s: 30}\n"
        "nodes:\n"
        "  - {id: src, kind: test_pattern, options: {width: 320, height: 180, fps: 15}}\n"
        "  - {id: filt, kind: overlay, inputs: {in: src}}\n"
        f"  - {{id: snap, kind: snapshot, inputs: {{in: filt}}, options: {{path: {tmp_path / 'x.png'}}}}}\n"
    )
    eng = engine_runner(topo, "--allow-faults")
    eng.wait_running()
    for n in range(4):  # the 4th restart within 30 s is one too many
        wait_for(lambda n=n: (x := eng.node("filt"))["state"] == "running" and x["restarts"] == n, 15,
                 f"filt running after {n} restarts")
        eng.request("fault", node="filt", fault="crash" if n % 2 else "kill", args={})
    code = eng.wait(30)
    assert code == 1, eng.log
    assert "more than 3 restarts within 30s" in eng.log
    assert "injected crash" in eng.log  # the actor's own error is part of the story
    assert "error 1501" in eng.log
    procs, segs = leftovers(eng.runtime_dir, eng.engine_ids)
    assert not procs and not segs


@pytest.mark.parametrize(("strategy", "victim", "expected"), [
    ("one_for_all", "venc", {"filt": 1, "venc": 1, "rec": 1, "src": 0}),
    ("rest_for_one", "venc", {"filt": 0, "venc": 1, "rec": 1, "src": 0}),
])
def test_group_strategies_restart_the_right_members(
    engine_runner: Callable[..., Engine], tmp_path: Path, strategy: str, victim: str, expected: dict[str, int]
) -> None:
    topo = tmp_path / "group.yaml"
    topo.write_text(
        "version: 1\n"
        "nodes:\n"
        "  - {id: src, kind: test_pattern, options: {width: 320, height: 180, fps: 15}}\n"
        "  - {id: filt, kind: overlay, inputs: {in: src}}\n"
        "  - {id: venc, kind: video_encoder, inputs: {in: filt}, options: {bitrate_kbps: 300}}\n"
        f"  - {{id: rec, kind: recorder, inputs: {{video: venc}}, options: {{path: {tmp_path / 'g.mp4'}}}}}\n"
        "groups:\n"
        f"  chain: {{members: [filt, venc, rec], strategy: {strategy}, intensity: 5, period_s: 30}}\n"
    )
    eng = engine_runner(topo)
    eng.wait_running()
    pids = {n["id"]: n["pid"] for n in eng.ps()["nodes"]}
    os.kill(pids[victim], signal.SIGKILL)

    def settled() -> dict[str, dict[str, object]] | None:
        nodes = {n["id"]: n for n in eng.ps()["nodes"]}
        ok = all(nodes[k]["restarts"] == v and nodes[k]["state"] == "running" for k, v in expected.items())
        return nodes if ok else None

    nodes = wait_for(settled, 15, f"{strategy} restarts {expected}")
    for nid, count in expected.items():
        assert (nodes[nid]["pid"] != pids[nid]) == (count > 0), nid
    eng.proc.send_signal(signal.SIGTERM)
    assert eng.wait(30) == 0, eng.log
