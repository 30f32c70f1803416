"""Picture-in-picture pushed to a real nginx-rtmp and checked on what it relays (Debian ffmpeg copies the
stream, PyAV decodes it): the camera layer shows the camera's picture at its rectangle and the screen
shows everywhere else; a layer moved live (`layer cam x=.. y=..`) is at its new place within 2 frames.

The "screen" is a test_pattern (its burned-in stamp numbers every frame on the engine clock, the same
clock the compositor's frames are numbered on) and the camera is the camera actor on FFmpeg's lavfi
`smptebars` (a still pattern, so a reference picture can be made with ffmpeg)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
from mediaengine.actors.compositor import Layer, place, render_layer
from mediaengine.actors.test_pattern import make_background, render_frame
from mediaengine.sdk.errors import LayerGeometryError, UnknownLayerError
from mediaengine.sdk.stamp import read

from tests.enginekit import ROOT, Engine, wait_for
from tests.helpers import start_recorder
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp]

W, H, FPS = 640, 360, 30
CAM = Layer(x=0.70, y=0.68, w=0.28, h=0.28, z=1, fit="stretch")
MOVED = Layer(x=0.35, y=0.35, w=0.28, h=0.28, z=1, fit="stretch")

TOPOLOGY = f"""
version: 1
nodes:
  - {{id: scr,  kind: test_pattern, options: {{width: {W}, height: {H}, fps: {FPS}, pattern: gradient}}}}
  - {{id: cam,  kind: camera, options: {{device: "lavfi:smptebars=size=320x240:rate=30", width: 320, height: 240,
                                        fps: 30}}}}
  - id: mix
    kind: compositor
    inputs: {{screen: scr, cam: cam}}
    options:
      width: {W}
      height: {H}
      fps: {FPS}
      layers: {{cam: {{x: {CAM.x}, y: {CAM.y}, w: {CAM.w}, h: {CAM.h}, z: 1, fit: stretch}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: mix}}, options: {{bitrate_kbps: 4000, gop_s: 1, preset: ultrafast,
                                                                   tune: zerolatency}}}}
  - {{id: push, kind: rtmp_sender, inputs: {{video: venc}}, options: {{url: "${{PUSH_URL}}"}}}}
"""


def smptebars(w: int, h: int) -> np.ndarray:
    """FFmpeg's own smptebars picture as rgb24 (the reference for the camera layer)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"smptebars=size={w}x{h}", "-frames:v", "1",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=30)
    return np.frombuffer(raw.stdout, np.uint8).reshape(h, w, 3)


def mix_frames(eng: Engine, node: str = "mix") -> int:
    """Frames the compositor (or switcher) `node` has made so far (its own metrics)."""
    return int(eng.node(node)["metrics"].get("actor", {}).get("frames", 0))


def relayed_pictures(flv: Path) -> list[np.ndarray]:
    """Every picture of the copied stream from its first keyframe on (the copy may start mid-GOP)."""
    pictures = []
    with av.open(str(flv)) as c:
        started = False
        for packet in c.demux(video=0):
            started = started or packet.is_keyframe
            if started:
                pictures += [f.to_ndarray(format="rgb24") for f in packet.decode()]
    return pictures


def interior(rect: tuple[int, int, int, int], margin: int = 4) -> tuple[slice, slice]:
    x0, y0, x1, y1 = rect
    return slice(y0 + margin, y1 - margin), slice(x0 + margin, x1 - margin)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_pip_shows_camera_in_its_rectangle_and_moves_live(engine_runner: Callable[..., Engine],
                                                          rtmp_server: RtmpServer, tmp_path: Path) -> None:
    topo = tmp_path / "pip.yaml"
    topo.write_text(TOPOLOGY)
    url = rtmp_server.url(stream="pip")
    flv = tmp_path / "pip.flv"
    eng = engine_runner(topo, "--duration", "30", env={"PUSH_URL": url})
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20, "the push")
    recorder = start_recorder(url, flv)
    try:
        wait_for(lambda: flv.exists() and flv.stat().st_size > 64_000, 20, "the copy to receive the stream")
        start = mix_frames(eng)
        wait_for(lambda: mix_frames(eng) >= start + 30, 20, "1 s more of composed frames")
        # the move as a user types it: `mediaengine ctl mix layer cam x=.. y=..`
        ctl = subprocess.run([sys.executable, "-m", "mediaengine.cli", "ctl", "--json", "mix", "layer", "cam",
                              f"x={MOVED.x}", f"y={MOVED.y}"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                             env={**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(eng.runtime_dir)})
        assert ctl.returncode == 0, ctl.stderr
        reply = json.loads(ctl.stdout)["result"]
        assert reply["cam"]["x"] == MOVED.x and reply["applies_from"] > 0, reply
        with pytest.raises(UnknownLayerError, match="no layer 'webcam'"):  # bad input: refused, the stream goes on
            eng.request("command", node="mix", command="layer", args={"args": ["webcam"], "x": 0.1})
        with pytest.raises(LayerGeometryError, match="w=0"):
            eng.request("command", node="mix", command="layer", args={"args": ["cam"], "w": 0})
        moved = mix_frames(eng)
        wait_for(lambda: mix_frames(eng) >= moved + 30, 20, "1 s of frames after the move")
        assert eng.stop(30) == 0, eng.log
        recorder.wait(30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(10)

    bars = smptebars(320, 240)
    old, new = place(CAM, 320, 240, W, H), place(MOVED, 320, 240, W, H)
    ref_layer = render_layer(bars, old)  # same size at both places
    background = make_background("gradient", W, H)
    outside = np.ones((H, W), bool)  # away from both places of the camera layer (and their edges)
    for x0, y0, x1, y1 in (old.dst, new.dst):
        outside[max(0, y0 - 8):y1 + 8, max(0, x0 - 8):x1 + 8] = False
    where: list[tuple[int, str]] = []  # (screen frame counter, where the camera layer is)
    screen_errors = []
    pictures = relayed_pictures(flv)
    stamps = [read(pic) for pic in pictures]
    # at the end the screen (a source) stops first and its layer goes away: only the last frames may lack it
    ended = [i for i, st in enumerate(stamps) if st is None]
    assert ended == list(range(len(stamps) - len(ended), len(stamps))) and len(ended) <= 3, ended
    for pic, stamp in zip(pictures, stamps, strict=True):
        if stamp is None:
            continue
        at_old = mae(pic[interior(old.dst)], ref_layer[interior((0, 0, *old.size))]) < 12
        at_new = mae(pic[interior(new.dst)], ref_layer[interior((0, 0, *new.size))]) < 12
        assert at_old != at_new, f"frame {stamp.counter}: camera layer at old {at_old}, at new {at_new}"
        where.append((stamp.counter, "old" if at_old else "new"))
        if len(where) % 8 == 1:  # every 8th frame: the screen everywhere else is the test pattern's own rendering
            ref = render_frame(np.empty((H, W, 3), np.uint8), background, stamp.counter, FPS, stamp.wall_ms,
                               pattern="gradient")
            screen_errors.append(float(np.abs(pic.astype(np.int16) - ref)[outside].mean()))
    assert len(where) >= 90, f"only {len(where)} frames relayed"
    states = [s for _, s in where]
    first_new = states.index("new")
    assert "old" not in states[first_new:], "the layer went back to its old place"
    moved_at = where[first_new][0]
    # the frame that answered the command is frame `applies_from`; the screen picture in a composed frame
    # is at most one frame older than the compositor's own frame number
    print(f"\nPIP moved: applies_from={reply['applies_from']} first frame at the new place={moved_at} "
          f"frames={len(where)} screen mean abs error max={max(screen_errors):.2f}")
    assert moved_at - reply["applies_from"] <= 2, (moved_at, reply)
    assert max(screen_errors) < 6, f"the screen differs from the test pattern: mean abs error {max(screen_errors)}"
