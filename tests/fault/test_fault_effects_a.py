"""The fault matrix for `watermark` and `transform`: kill and hang each during a live push to nginx-rtmp.

topologies/push_rtmp.yaml with three filters put between its caption and its encoder: `wm` (a
watermark: a static mark and an animated one, away from the burned-in stamp) and two `transform`
nodes that each mirror the picture (`flip`, then `unflip`: the stamp reads again only if both ran).
One engine; `kill` (SIGKILL) then `hang` (SIGSTOP, replaced after the heartbeat timeout) on `wm`, then
on `flip`.  After each fault, as in tests/fault/test_fault_matrix.py: the node restarted, the RTMP
connection stayed up, a new viewer (Debian's ffmpeg) decodes pictures rendered after the fault within
the matrix's recovery bound, and the continuous viewer's longest stall stays within the bound of a
filter.  Crash and slow are not repeated here: they go through the same runtime paths the matrix covers
for the `overlay` filter, and the time budget goes to the two new kinds.  At the end a relayed frame
still carries the watermark and reads the right way round.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from mediaengine.sdk import stamp
from PIL import Image

from tests.enginekit import ROOT, Engine, wait_for
from tests.fault.test_fault_matrix import (
    FRESH_FRAMES,
    RECOVERY_LIMIT_S,
    RECOVERY_S,
    H,
    Viewer,
    W,
    connected,
    fresh_video,
    restart_row,
)
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.fault, pytest.mark.rtmp, pytest.mark.timeout(240)]

VICTIMS = ["wm", "flip"]
FAULTS = ["kill", "hang"]
GAP_MS = {"kill": 2000, "hang": 2500}  # the matrix's bounds for its filter (`filt`)
MARK = (255, 0, 255)  # the static mark: opaque magenta, top right
MARK_RECT = (544, 18, 64, 32)  # x, y, w, h at 640x360: x = 0.85, y = 0.05, width = 0.1


def topology(tmp_path: Path) -> Path:
    Image.fromarray(np.full((32, 64, 3), MARK, np.uint8), "RGB").save(tmp_path / "mark.png")
    frames = [Image.fromarray(np.full((24, 48, 3), (40 * i, 200, 80), np.uint8), "RGB") for i in range(4)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    topo = yaml.safe_load((ROOT / "topologies" / "push_rtmp.yaml").read_text())
    nodes = topo["nodes"]
    venc = next(n for n in nodes if n["id"] == "venc")
    at = nodes.index(venc)
    nodes[at:at] = [
        {"id": "wm", "kind": "watermark", "inputs": {"in": "filt"}, "options": {"marks": [
            {"id": "logo", "path": str(tmp_path / "mark.png"), "x": 0.85, "y": 0.05, "width": 0.1},
            {"id": "anim", "path": str(tmp_path / "anim.gif"), "x": 0.85, "y": 0.3, "width": 0.075}]}},
        {"id": "flip", "kind": "transform", "inputs": {"in": "wm"}, "options": {"mirror": True}},
        {"id": "unflip", "kind": "transform", "inputs": {"in": "flip"}, "options": {"mirror": True}},
    ]
    venc["inputs"] = {"in": "unflip"}
    path = tmp_path / "effects_push.yaml"
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path


def relayed_frame(url: str) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-rw_timeout", "5000000", "-i", url, "-map", "0:v:0",
                          "-frames:v", "5", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
                         capture_output=True, timeout=30)
    size = W * H * 3
    assert len(out.stdout) >= size, out.stderr.decode(errors="replace")[-300:]
    return np.frombuffer(out.stdout, np.uint8)[-size:].reshape(H, W, 3)


def test_watermark_and_transform_kill_and_hang_during_a_push(engine_runner: Callable[..., Engine],
                                                             rtmp_server: RtmpServer, tmp_path: Path) -> None:
    url = rtmp_server.url(stream="fx-faults")
    eng = engine_runner(topology(tmp_path), "--allow-faults", "--set", f"src.width={W}", "--set", f"src.height={H}",
                        env={"PUSH_URL": url})
    eng.wait_running()
    wait_for(lambda: connected(eng), 20, "the sender connected")
    fresh_video(url, int(time.time() * 1000), RECOVERY_LIMIT_S)  # the stamp reads: flip + unflip cancel out
    viewer = Viewer(url)
    rows = []
    try:
        wait_for(lambda: viewer.frames() > 30, 20, "the continuous viewer playing")
        for victim in VICTIMS:
            for name in FAULTS:
                row, fresh = restart_row(eng, url, viewer, victim, name)
                rows.append(row)
                print(f"\nMATRIX {json.dumps(row)}")
                assert row["restarts"] >= 1, row
                assert row["rtmp_connection_kept"], f"{name} on {victim} cost the RTMP connection: {row}"
                assert row["fresh_video_s"] <= RECOVERY_S[name], f"{name} on {victim}: recovery too slow: {row}"
                assert fresh >= FRESH_FRAMES, f"{name} on {victim}: only {fresh} new pictures in 10 frames: {row}"
                assert row["longest_gap_ms"] <= GAP_MS[name], f"{name} on {victim}: stall too long: {row}"
    finally:
        viewer.close()
    pic = relayed_frame(url)  # after every restart: the mark is still drawn, and the picture reads right
    x, y, w, h = MARK_RECT
    assert np.abs(pic[y + 4:y + h - 4, x + 4:x + w - 4].reshape(-1, 3).mean(axis=0) - MARK).max() < 12
    assert stamp.read(pic) is not None
    eng.request("stop")
    assert eng.wait(30) == 0, eng.log
    assert [(r["node"], r["fault"]) for r in rows] == [(v, f) for v in VICTIMS for f in FAULTS]
