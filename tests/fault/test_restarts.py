"""Real processes killed for real: the supervisor brings them back and the output keeps flowing."""

from __future__ import annotations

import json
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
    decoded_stamps,
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


def _recorded_video_frames(eng: Engine) -> int:
    return int(eng.node("rec")["metrics"]["frames_in"].get("video", 0))


LOST_AT_MOST_S = 1.8  # engine SIGKILL -> video missing from the MP4: one 1 s fragment + what is in flight
FRESH_WITHIN_S = 1.5  # kill -> first new picture in the recording (measured 0.2-0.6 s; margin for load)


def fresh_pictures_after(stamps: list[tuple[float, int, int]], t_kill_ms: int) -> tuple[float, int, float]:
    """(stream seconds from the kill to the first picture rendered after it, number of distinct pictures
    rendered after it, stream seconds they span).

    The kill's place on the stream timeline is the first frame of the last picture rendered before it; what
    follows it with an older stamp are the encoder's keepalive repeats, which do not count as new pictures.
    """
    before = [s for s in stamps if s[2] <= t_kill_ms]
    after = [s for s in stamps if s[2] > t_kill_ms]
    assert before, "no picture recorded before the kill"
    assert after, "no new picture after the kill: the recording ends on repeats of the last one"
    last = max(before, key=lambda s: s[2])
    kill_pts = min(pts for pts, counter, _ in before if counter == last[1])
    return after[0][0] - kill_pts, len({counter for _, counter, _ in after}), after[-1][0] - after[0][0]


@pytest.mark.parametrize("victim", ["filt", "venc"])
def test_sigkill_of_filter_or_encoder_is_restarted_without_a_gap(
    engine_runner: Callable[..., Engine], tmp_path: Path, victim: str
) -> None:
    """The victim comes back, the recording has no timestamp gap, and - what the encoder's keepalive
    cannot fake - new pictures (new burned-in counters) arrive within FRESH_WITHIN_S of the kill and keep
    coming at the source's rate."""
    eng, mp4 = _run_demo(engine_runner, tmp_path, "--duration", "9")
    wait_for(lambda: _recorded_video_frames(eng) >= 60, 15, "2 s of video in the recording before the fault")
    before = eng.node(victim)
    t_kill_ms = int(time.time() * 1000)
    os.kill(before["pid"], signal.SIGKILL)
    after = wait_for(lambda: (n := eng.node(victim))["restarts"] == 1 and n["state"] == "running" and n,
                     10, f"{victim} restarted")
    assert after["pid"] != before["pid"]
    # what a user sees: `mediaengine ps --json`
    out = subprocess.run([sys.executable, "-m", "mediaengine.cli", "ps", "--json"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(eng.runtime_dir)},
                         timeout=30)
    assert out.returncode == 0, out.stderr
    nodes = {n["id"]: n for n in json.loads(out.stdout)["engines"][0]["nodes"]}
    assert nodes[victim]["restarts"] == 1 and nodes[victim]["pid"] == after["pid"]
    assert f"node {victim} started pid={after['pid']}" in eng.log
    assert eng.wait(60) == 0, eng.log
    pts = video_pts(mp4)
    assert pts[-1] - pts[0] >= 7.0
    assert max_gap(pts) <= 0.5, f"gap of {max_gap(pts):.3f}s in the recording after killing {victim}"
    fresh_s, fresh, rest_s = fresh_pictures_after(decoded_stamps(mp4), t_kill_ms)
    assert fresh_s <= FRESH_WITHIN_S, f"the first new picture came {fresh_s:.2f}s after killing {victim}"
    # new pictures keep coming: at least half the source's 30 fps over the rest of the recording
    assert rest_s >= 3.0 and fresh >= 15 * rest_s, f"{fresh} new pictures in {rest_s:.1f}s after killing {victim}"
    print(f"\nRESTART-FRESH {victim}: first new picture {fresh_s:.3f}s after the kill, {fresh} new pictures")


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
    """SIGKILL of the whole engine: the fragmented MP4 (fragment_s=1) keeps video and audio up to about 1 s
    before the kill, decodes without a single error, and the next engine removes what this one left."""
    eng, mp4 = _run_demo(engine_runner, tmp_path)
    engine_id = eng.info()["engine_id"]  # type: ignore[index]
    # record a few keyframe intervals (gop 1 s) and fragments (1 s) before the kill
    wait_for(lambda: _recorded_video_frames(eng) >= 120, 20, "4 s of video in the recording")
    t_kill_ms = int(time.time() * 1000)
    os.kill(eng.proc.pid, signal.SIGKILL)
    eng.proc.wait(10)
    # the actors follow their fork server down (parent-death signal)
    wait_for(lambda: not processes_with_marker(f"MEDIAENGINE_RUNTIME_DIR={eng.runtime_dir}"), 10,
             "actors of the killed engine to exit")
    # a later engine removes what the dead one left (its segments and runtime dir); it runs while the file
    # is checked (it records elsewhere), as does a full decode of the file by Debian's ffmpeg
    assert (eng.runtime_dir / engine_id).exists()
    eng2 = engine_runner(DEMO, "--duration", "1", "--set", f"rec.path={tmp_path / 'b.mp4'}",
                         "--set", f"snap.path={tmp_path / 's2.png'}")
    decoding = subprocess.Popen(["ffmpeg", "-v", "error", "-nostdin", "-i", str(mp4), "-f", "null", "-"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        info = ffprobe(mp4, "-show_streams", "-show_format")
        streams = {s["codec_type"]: s for s in info["streams"]}
        assert set(streams) == {"video", "audio"}, f"streams in the file: {sorted(streams)}"
        # what was lost: from the last picture in the file (its burned-in render time) to the kill; at most
        # one fragment (1 s) plus the pictures still in flight (measured 0.7 s in all; more on a loaded machine)
        stamps = decoded_stamps(mp4)
        # ffmpeg exits 0 even when it cannot decode a packet: the log must be empty
        _, decode_errors = decoding.communicate(timeout=60)
    finally:
        if decoding.poll() is None:
            decoding.kill()
            decoding.wait()
    assert decoding.returncode == 0 and decode_errors == "", decode_errors
    lost_s = (t_kill_ms - max(wall for _, _, wall in stamps)) / 1000
    assert lost_s <= LOST_AT_MOST_S, f"{lost_s:.2f}s of video before the kill is missing from the file"
    assert stamps[-1][0] - stamps[0][0] >= 3.0
    audio_s = float(streams["audio"]["duration"])
    assert audio_s >= float(streams["video"]["duration"]) - 1.0, (streams["audio"], streams["video"])
    print(f"\nENGINE-KILL lost {lost_s:.3f}s of video; audio {audio_s:.2f}s")
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
