"""The switcher during a real push to nginx-rtmp: `select pause` (an image_source still) for ~5 s, then
`select main`.  On what the server relays (copied by Debian's ffmpeg): the still's pixels, then the live
picture again; the video never stalls more than 200 ms; the audio track (a tone that never goes through
the switcher) has no gap."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from mediaengine.sdk.errors import UnknownLayerError
from mediaengine.sdk.stamp import read

from tests.enginekit import Engine, ffprobe, max_gap, video_pts, wait_for
from tests.helpers import start_recorder
from tests.integration.test_compositing import mae, mix_frames, relayed_pictures
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp]

W, H = 640, 360

TOPOLOGY = f"""
version: 1
nodes:
  - {{id: cam,   kind: test_pattern, options: {{width: {W}, height: {H}, fps: 30}}}}
  - {{id: still, kind: image_source, options: {{path: "${{STILL}}", width: {W}, height: {H}, fps: 5}}}}
  - {{id: sel,   kind: switcher, inputs: {{main: cam, pause: still}}}}
  - {{id: tone,  kind: tone, options: {{freq_hz: 440, rate: 48000, channels: 1}}}}
  - {{id: venc,  kind: video_encoder, inputs: {{in: sel}}, options: {{bitrate_kbps: 3000, gop_s: 1, preset: ultrafast,
                                                                    tune: zerolatency}}}}
  - {{id: aenc,  kind: audio_encoder, inputs: {{in: tone}}, options: {{bitrate_kbps: 64}}}}
  - {{id: push,  kind: rtmp_sender, inputs: {{video: venc, audio: aenc}}, options: {{url: "${{PUSH_URL}}"}}}}
"""


def still_picture() -> np.ndarray:
    """Four flat quadrants: easy to recognise after H.264, nothing like the test pattern."""
    img = np.empty((H, W, 3), np.uint8)
    img[: H // 2, : W // 2] = (230, 200, 30)
    img[: H // 2, W // 2:] = (30, 60, 220)
    img[H // 2:, : W // 2] = (20, 160, 60)
    img[H // 2:, W // 2:] = (240, 240, 240)
    return img


def audio_pts(path: Path) -> list[float]:
    data = ffprobe(path, "-select_streams", "a:0", "-show_entries", "packet=pts_time")
    return sorted(float(p["pts_time"]) for p in data["packets"] if p.get("pts_time") not in (None, "N/A"))


def test_pause_image_then_main_without_a_stall_or_an_audio_gap(engine_runner: Callable[..., Engine],
                                                             rtmp_server: RtmpServer, tmp_path: Path) -> None:
    still = still_picture()
    cv2.imwrite(str(tmp_path / "paused.png"), cv2.cvtColor(still, cv2.COLOR_RGB2BGR))
    topo = tmp_path / "switch.yaml"
    topo.write_text(TOPOLOGY)
    url = rtmp_server.url(stream="sel")
    flv = tmp_path / "sel.flv"
    eng = engine_runner(topo, "--duration", "30", env={"PUSH_URL": url, "STILL": str(tmp_path / "paused.png")})
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20, "the push")
    recorder = start_recorder(url, flv)
    try:
        wait_for(lambda: flv.exists() and flv.stat().st_size > 64_000, 20, "the copy to receive the live picture")
        start = mix_frames(eng, "sel")
        wait_for(lambda: mix_frames(eng, "sel") >= start + 30, 20, "1 s more of live frames")
        assert eng.request("command", node="sel", command="select", args={"args": ["pause"]})["showing"] == "pause"
        paused_at = time.monotonic()
        with pytest.raises(UnknownLayerError, match="cannot select 'brb'"):  # refused; the pause goes on
            eng.request("command", node="sel", command="select", args={"args": ["brb"]})
        wait_for(lambda: time.monotonic() - paused_at >= 5.0, 10, "5 s of pause")
        assert eng.request("command", node="sel", command="select", args={"args": ["main"]})["selected"] == "main"
        back = mix_frames(eng, "sel")
        wait_for(lambda: mix_frames(eng, "sel") >= back + 30, 20, "1 s of live frames again")
        assert eng.stop(30) == 0, eng.log
        recorder.wait(30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait(10)

    states = []
    for pic in relayed_pictures(flv):
        if mae(pic, still) < 8:
            states.append("image")
        elif read(pic) is not None:
            states.append("live")
        else:
            raise AssertionError(f"frame {len(states)} is neither the still nor the live picture")
    runs = [(state, len(list(group))) for state, group in itertools.groupby(states)]
    print(f"\nSWITCH runs={runs} video max gap={max_gap(video_pts(flv)):.3f}s "
          f"audio max gap={max_gap(audio_pts(flv)):.4f}s")
    assert [state for state, _ in runs] == ["live", "image", "live"], runs
    assert 4.5 * 30 <= runs[1][1] <= 5.8 * 30, f"the still was shown for {runs[1][1]} frames, not ~5 s"
    assert runs[2][1] >= 15, runs  # the live picture came back
    assert max_gap(video_pts(flv)) <= 0.2, "the video stalled"
    apts = audio_pts(flv)
    assert len(apts) > 300 and max_gap(apts) <= 1.5 * 1024 / 48000, f"audio gap {max_gap(apts):.3f} s"
