"""Fault cases for the compositor, the switcher and the preview during a live push to nginx-rtmp: kill
and hang each.

One engine pushes test pattern (screen) + test pattern (camera) -> compositor -> switcher -> H.264 ->
RTMP, with an HTTP preview of the switcher's output beside the encoder; the six faults are injected one
after the other with `mediaengine fault`.  After each, the node must be back (restarted by the
supervisor), the RTMP connection must have stayed up (the encoder's keepalive bridges the gap), a new
viewer (Debian's ffmpeg) must decode pictures rendered after the fault (the screen's burned-in stamps)
within the same bound as the fault matrix's filter rows, and the continuous viewer's longest stall must
stay within the matrix's filter bounds; the restarted preview serves a picture again.  crash and slow
behave like kill and hang for these actors (the matrix covers them for `overlay`): they are left out to
keep the suite short.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.enginekit import Engine, wait_for
from tests.fault.test_fault_matrix import (
    GAP_MS,
    RECOVERY_S,
    H,
    Viewer,
    W,
    connected,
    restart_row,
)
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.fault, pytest.mark.rtmp, pytest.mark.timeout(300)]

TOPOLOGY = f"""
version: 1
nodes:
  - {{id: src,  kind: test_pattern, options: {{width: {W}, height: {H}, fps: 30}}}}
  - {{id: cam,  kind: test_pattern, options: {{width: 320, height: 180, fps: 30, pattern: gradient}}}}
  - id: mix
    kind: compositor
    inputs: {{screen: src, cam: cam}}
    options:
      width: {W}
      height: {H}
      fps: 30
      layers: {{cam: {{x: 0.7, y: 0.7, w: 0.28, h: 0.28, z: 1}}}}
  - {{id: sel,  kind: switcher, inputs: {{main: mix}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: sel}}, options: {{bitrate_kbps: 1500, gop_s: 1, preset: veryfast,
                                                                   tune: zerolatency}}}}
  - {{id: push, kind: rtmp_sender, inputs: {{video: venc}}, options: {{url: "${{PUSH_URL}}"}}}}
  - {{id: prev, kind: preview, inputs: {{in: sel}}, options: {{mode: http}}}}
"""

CASES = [("mix", "kill"), ("mix", "hang"), ("sel", "kill"), ("sel", "hang"), ("prev", "kill"), ("prev", "hang")]


def preview_picture(eng: Engine) -> bytes | None:
    """The preview's current JPEG (`/snapshot.jpg` at its `url` metric), None before it has one."""
    url = eng.node("prev")["metrics"].get("actor", {}).get("url")
    if not url:
        return None
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/snapshot.jpg", timeout=5) as reply:
            body: bytes = reply.read()
    except OSError:
        return None
    return body if body.startswith(b"\xff\xd8") else None


def test_compositor_switcher_and_preview_kill_and_hang_during_a_push(engine_runner: Callable[..., Engine],
                                                             rtmp_server: RtmpServer, tmp_path: Path) -> None:
    topo = tmp_path / "effects_b.yaml"
    topo.write_text(TOPOLOGY)
    url = rtmp_server.url(stream="effects-b")
    eng = engine_runner(topo, "--allow-faults", env={"PUSH_URL": url})
    eng.wait_running()
    wait_for(lambda: connected(eng), 20, "the sender connected")
    viewer = Viewer(url)  # the continuous viewer: playing before the faults, every stall recorded
    rows = []
    try:
        wait_for(lambda: viewer.frames() > 30, 20, "the continuous viewer playing")
        for victim, name in CASES:
            row, fresh = restart_row(eng, url, viewer, victim, name)
            rows.append(row)
            print(f"\nEFFECTS-B {json.dumps(row)}")
            assert eng.proc.poll() is None, f"the engine died after {name} on {victim}:\n{eng.log}"
            assert row["restarts"] >= 1 and row["rtmp_connection_kept"], row
            assert row["fresh_video_s"] <= RECOVERY_S[name], f"recovery too slow: {row}"
            assert fresh >= 5, f"only {fresh} new pictures in 10 frames: {row}"
            assert row["longest_gap_ms"] <= GAP_MS["filt", name], f"stall too long: {row}"
            if victim == "prev":  # the restarted preview (a new port) serves pictures again
                wait_for(lambda: preview_picture(eng), 10, "a picture from the restarted preview")
    finally:
        viewer.close()
    eng.request("stop")
    assert eng.wait(30) == 0, eng.log
    assert [(r["node"], r["fault"]) for r in rows] == CASES
