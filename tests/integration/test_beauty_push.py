"""beauty end to end: a real face (tests/facekit.py) through beauty, the H.264 encoder and the RTMP sender to
a local nginx-rtmp, checked on what the server relays.

- `mediaengine play URL --snapshot` pulls a picture: the face on it is measured as in the unit tests
  (landmarks re-detected with iris refinement): eye area +15% or more, jaw 5% or more narrower, the
  distances between the eyes and from nose to mouth within 2%.
- `mediaengine ctl beauty set eye=0 thin=0` during the push: the node's `beauty_applied` event names the
  first frame with the new settings (`pts_ns`) and the last before it (`after_pts_ns`): at most 2 frames
  apart.
  The source burns each frame's number into its corner (`image_source` with `stamp: true`), so on the
  relayed stream every frame up to `after_seq` still shows the enlarged eyes and every frame from `seq`
  on shows the plain ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="the beauty extra needs mediapipe 0.10.21 (Python 3.9-3.12)")

from mediaengine.sdk import stamp

from tests import facekit as fk
from tests.enginekit import ROOT, Engine, wait_for
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp, pytest.mark.timeout(180)]

FRAME_NS = round(1e9 / 30)  # image_source at 30 fps


def topology(tmp_path: Path, picture: Path, url: str) -> Path:
    path = tmp_path / "beauty.yaml"
    path.write_text(f"""version: 1
name: beauty_e2e
nodes:
  - {{id: src, kind: image_source, options: {{path: '{picture}', fps: 30, stamp: true}}}}
  - {{id: beauty, kind: beauty, inputs: {{in: src}}, options: {{level: 0, eye: 60, thin: 60}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: beauty}}, options: {{bitrate_kbps: 6000, gop_s: 1, preset: veryfast,
                                                                      tune: zerolatency}}}}
  - {{id: push, kind: rtmp_sender, inputs: {{video: venc}}, options: {{url: '{url}'}}}}
""")
    return path


def cli(eng: Engine, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(eng.runtime_dir)}
    return subprocess.run([sys.executable, "-m", "mediaengine.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


class EyeWatcher:
    """Decodes the relayed stream in a thread; per frame: the stamp's frame number and how far the eye
    region is from the source's: 1 - the correlation of their luma (the codec's colour conversions shift
    levels by more than the codec's noise, but not the picture's structure; enlarged eyes change it)."""

    def __init__(self, url: str, source: np.ndarray, eye_box: tuple[int, int, int, int]) -> None:
        self.url, self.source, self.box = url, source, eye_box
        self.seen: list[tuple[int, float]] = []
        self.error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        x0, y0, x1, y1 = self.box
        ref = fk.luma(self.source[y0:y1, x0:x1]).astype(np.float64).ravel()
        try:
            with av.open(self.url, options={"rw_timeout": "10000000"}, timeout=(20.0, 10.0)) as c:
                for frame in c.decode(video=0):
                    rgb = frame.to_ndarray(format="rgb24")
                    mark = stamp.read(rgb)
                    if mark is not None:
                        eye = fk.luma(rgb[y0:y1, x0:x1]).astype(np.float64).ravel()
                        self.seen.append((mark.counter, 1.0 - float(np.corrcoef(eye, ref)[0, 1])))
                    if self.stopping:
                        return
        except BaseException as exc:  # reported by the test
            self.error = exc

    def close(self) -> None:
        self.stopping = True
        self.thread.join(20)


def events(eng: Engine, name: str) -> list[dict[str, Any]]:
    return [e for e in eng.request("snapshot").get("events_recent", []) if e.get("name") == name]


def test_beauty_on_the_relayed_stream_and_a_live_change_within_two_frames(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, tmp_path: Path) -> None:
    source = np.array(fk.place_face())
    picture = tmp_path / "face.png"
    cv2.imwrite(str(picture), cv2.cvtColor(source, cv2.COLOR_RGB2BGR))
    before = fk.measure(source, samples=5)
    assert before is not None
    url = rtmp_server.url(stream="beauty-e2e")
    eng = engine_runner(topology(tmp_path, picture, url))
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 30, "the push connected")
    eyes = np.concatenate([before.landmarks[fk.LEFT_EYE], before.landmarks[fk.RIGHT_EYE]])
    (x0, y0), (x1, y1) = eyes.min(axis=0).astype(int) - 12, eyes.max(axis=0).astype(int) + 12
    watcher = EyeWatcher(url, source, (x0, y0, x1, y1))
    try:
        # the picture a viewer gets, pulled by the project's own player
        snap = tmp_path / "snap.png"
        played = cli(eng, "play", url, "--snapshot", str(snap), "--duration", "8", "--timeout", "15", "--json")
        assert played.returncode == 0 and snap.exists(), (played.stdout[-3000:], played.stderr, eng.request("snapshot"))
        pulled = cv2.cvtColor(cv2.imread(str(snap)), cv2.COLOR_BGR2RGB)
        after = fk.measure(pulled, samples=5)
        assert after is not None, "no face on the pulled picture"
        change = after.change(before)
        print("on the relayed picture:", {k: f"{100 * v:+.1f}%" for k, v in change.items()})
        assert change["eye_area"] >= 0.15 and change["jaw_width"] <= -0.05
        assert abs(change["eye_distance"]) <= 0.02 and abs(change["nose_mouth"]) <= 0.02

        # a live change, by the command line
        wait_for(lambda: len(watcher.seen) >= 30 or watcher.error, 20, "30 relayed frames")
        assert watcher.error is None, watcher.error
        set_ = cli(eng, "ctl", "beauty", "set", "eye=0", "thin=0", "--json")
        assert set_.returncode == 0, set_.stderr
        assert json.loads(set_.stdout)["result"] == {"eye": 0, "thin": 0}
        (applied,) = wait_for(lambda: events(eng, "beauty_applied"), 10, "the beauty_applied event")
        # image_source frame k has pts k * FRAME_NS and carries k in its stamp
        first, last_old = (round(applied["data"][k] / FRAME_NS) for k in ("pts_ns", "after_pts_ns"))
        assert first - last_old <= 2, applied
        wait_for(lambda: any(c >= first + 30 for c, _ in watcher.seen) or watcher.error, 20, "30 frames after it")
        assert watcher.error is None, watcher.error
        old = [d for c, d in watcher.seen if c <= last_old]
        new = [d for c, d in watcher.seen if c >= first]
        assert len(old) >= 20 and len(new) >= 30
        print(f"eye region vs the source (1 - correlation): up to frame {last_old} {min(old):.4f}..{max(old):.4f}, "
              f"from frame {first} {min(new):.4f}..{max(new):.4f}")
        assert min(old) > 3 * max(new), ("the change did not land on the frame the node names", applied,
                                          [(c, round(d, 3)) for c, d in watcher.seen if first - 5 <= c <= first + 10])
        assert eng.node("beauty")["restarts"] == 0, eng.log
    finally:
        watcher.close()
        eng.request("stop")
    assert eng.wait(30) == 0, eng.log
