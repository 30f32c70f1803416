"""The fault matrix's capture rows: `camera` and `screen` killed, hung and crashed during a push to nginx-rtmp.

One engine pushes two streams to a local nginx-rtmp: a camera (FFmpeg's lavfi device, opened through
the same code as a V4L2 camera) and a screen (x11grab on an Xvfb started here), each through its own
encoder and sender.  Faults are injected one after the other through the control API (`fault`, the
engine runs with --allow-faults), kill, hang and crash for each source.  After each:

- back within 1 s: from the supervisor's `fault_injected` to the restarted node's `capture_opened`
  (its device open again and delivering), with heartbeats every 0.1 s and a 0.5 s hang timeout;
- no restart loop: exactly one restart, then `restart_stable` (1 s of heartbeats), nothing more;
- the device released: the process that held it is gone (reaped, not a zombie holding its file
  handles) and the restarted source opened the same device again;
- the push went on: neither sender restarted nor lost its RTMP connection, and video kept flowing.

The cases are kill + hang + crash per source (the `slow` fault is covered for sources by the main
matrix, tests/fault/test_fault_matrix.py, on test_pattern).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.enginekit import Engine, wait_for
from tests.fault.test_fault_matrix import injected_at
from tests.xdisplay import paint_root, xvfb
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.fault, pytest.mark.rtmp, pytest.mark.timeout(180)]

CAMERA = "lavfi:testsrc2=size=640x360:rate=30"
BACK_S = 1.0
FAULTS = ("kill", "hang", "crash")

TOPOLOGY = """\
version: 1
name: capture_faults
supervisor: {{heartbeat_interval_s: 0.1, heartbeat_timeout_s: 0.5, stable_s: 1.0, backoff_initial_s: 0.0,
             intensity: 20, period_s: 60}}
nodes:
  - {{id: cam,  kind: camera, options: {{device: "{camera}", width: 640, height: 360, fps: 30}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: cam}}, options: {{bitrate_kbps: 600, gop_s: 1, preset: ultrafast}}}}
  - {{id: push, kind: rtmp_sender, inputs: {{video: venc}}, options: {{url: "{cam_url}"}}}}
  - {{id: scr,  kind: screen, options: {{display: "{display}", width: 640, height: 360, fps: 30, draw_mouse: false}}}}
  - {{id: senc, kind: video_encoder, inputs: {{in: scr}}, options: {{bitrate_kbps: 600, gop_s: 1, preset: ultrafast}}}}
  - {{id: spush, kind: rtmp_sender, inputs: {{video: senc}}, options: {{url: "{scr_url}"}}}}
"""


def recent(eng: Engine, node: str, name: str, since: float) -> list[dict[str, Any]]:
    return [e for e in eng.request("snapshot").get("events_recent", [])
            if e.get("node") == node and e.get("name") == name and (e.get("t") or 0) >= since]


def sender(eng: Engine, node: str) -> dict[str, Any]:
    n = eng.node(node)
    return {"pid": n["pid"], "restarts": n["restarts"], **(n["metrics"].get("actor") or {})}


def gone(pid: int) -> bool:
    """The process is gone and reaped (a zombie would still be there: not reaped by the supervisor)."""
    try:
        psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return False


def test_capture_sources_recover_from_kill_hang_and_crash_during_a_push(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, tmp_path: Path) -> None:
    with xvfb(640, 360) as display:
        paint_root(display, 640, 360, [(0, 0, 320, 360, (200, 30, 30)), (320, 0, 320, 360, (30, 30, 200))])
        topo = tmp_path / "capture_faults.yaml"
        topo.write_text(TOPOLOGY.format(camera=CAMERA, display=display, cam_url=rtmp_server.url(stream="fcam"),
                                        scr_url=rtmp_server.url(stream="fscr")))
        eng = engine_runner(topo, "--allow-faults")
        eng.wait_running()
        for push in ("push", "spush"):
            wait_for(lambda push=push: sender(eng, push).get("state") == "connected", 20, f"{push} connected")
        before = {p: sender(eng, p) for p in ("push", "spush")}
        rows = []
        for node, device in (("cam", CAMERA), ("scr", None)):
            for fault in FAULTS:
                rows.append(_fault(eng, node, device, fault))
        after = {p: sender(eng, p) for p in ("push", "spush")}
        for p in ("push", "spush"):  # the pushes went on through every fault
            assert after[p]["pid"] == before[p]["pid"] and after[p]["restarts"] == before[p]["restarts"], (p, after)
            assert after[p].get("connection_losses") == before[p].get("connection_losses"), (p, after)
            assert after[p].get("state") == "connected" and after[p]["bitrate_kbps"]["video"] > 0, (p, after)
        eng.request("stop")
        assert eng.wait(30) == 0, eng.log
    print("\nCAPTURE-FAULTS " + " ".join(f"{r['node']}/{r['fault']}:{r['back_s']}s" for r in rows))


def _fault(eng: Engine, node: str, device: str | None, fault: str) -> dict[str, Any]:
    wait_for(lambda: eng.node(node)["state"] == "running", 10, f"{node} running before {fault}")
    old = eng.node(node)
    t0 = time.time()
    assert eng.request("fault", node=node, fault=fault, args={})["fault"] == fault
    t_injected = injected_at(eng, node, t0)
    opened = wait_for(lambda: [e for e in recent(eng, node, "capture_opened", t_injected)], 10,
                      f"{node} capturing again after {fault}")[0]
    back_s = round(opened["t"] - t_injected, 3)
    wait_for(lambda: recent(eng, node, "restart_stable", t_injected), 10, f"{node} stable after {fault}")
    new = eng.node(node)
    row = {"node": node, "fault": fault, "back_s": back_s, "restarts": new["restarts"] - old["restarts"],
           "old_pid": old["pid"], "new_pid": new["pid"]}
    print(f"\nCAPTURE-FAULT {row}")
    assert back_s <= BACK_S, f"{node} took {back_s}s to capture again after {fault}: {row}"
    assert row["restarts"] == 1, f"not exactly one restart (a loop?): {row}"
    assert new["state"] == "running" and new["pid"] != old["pid"], row
    assert gone(old["pid"]), f"the process that held the device is still there: {row}"
    if device is not None:  # the restarted camera opened the very device again
        assert opened["data"]["device"] == device, opened
    assert not recent(eng, node, "restarting", opened["t"]), f"{node} restarted again after recovering: {row}"
    return row
