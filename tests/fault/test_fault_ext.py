"""Fault cases for `external_source` (the ext area's rows of the fault matrix), live on nginx-rtmp.

A Python caller keeps pushing pictures (frame counter and wall clock burned in) and PCM through the API
from its own thread while the node is killed, then hung (`mediaengine fault`, the engine runs with
--allow-faults).  After each fault: the supervisor restarts the node once (no restart loop), the
caller's pushes reach the restarted node by themselves (the ingress socket is bound again at the same
path; pushes made while it was down are dropped after the `block` timeout and counted), a viewer pulling
from the server decodes pictures drawn after the fault within a bound, and the RTMP connection stays up
(the sender neither restarts nor reconnects: the encoder's keepalive holds the picture meanwhile).
Crash is not run: for this node it takes the same path as kill (the process dies, the sentinel sees it).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mediaengine.control.api import Engine

from tests.enginekit import wait_for
from tests.fault.test_fault_matrix import H, W, fresh_video
from tools.external_frames_check import load_example
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.fault, pytest.mark.rtmp, pytest.mark.timeout(180)]

RECOVERY_S = {"kill": 6.0, "hang": 8.0}  # fault -> a viewer decodes a picture drawn after it (cf. the matrix)
EXAMPLE = load_example()


class Caller(threading.Thread):
    """The user's program: pushes at 30 fps from its own thread, through its own `Engine` handle."""

    def __init__(self, engine_id: str, runtime_dir: Path) -> None:
        super().__init__(daemon=True)
        self.engine_id, self.runtime_dir = engine_id, runtime_dir
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.totals: dict[str, Any] = {}

    def run(self) -> None:
        try:
            eng = Engine.attach(self.engine_id, runtime_dir=self.runtime_dir)
            try:
                feed = EXAMPLE.Feed(eng, W, H, 30)
                while not self.stop_flag.is_set():
                    self.totals = feed.push(0.2)
            finally:
                eng.close()
        except BaseException as e:  # reported by the test
            self.error = e


def node(eng: Engine, nid: str) -> dict[str, Any]:
    return dict(next(n for n in eng.ps()["nodes"] if n["id"] == nid))


def test_external_source_kill_and_hang_during_a_push(runtime_dir: Path, rtmp_server: RtmpServer) -> None:
    url = rtmp_server.url(stream="ext-faults")
    topo = EXAMPLE.topology(url, W, H, 30)
    topo["supervisor"] = {"heartbeat_timeout_s": 1.0}
    eng = Engine.start(topo, runtime_dir=runtime_dir, allow_faults=True)
    caller = Caller(eng.engine_id, runtime_dir)
    rows = []
    try:
        eng.wait_running()
        caller.start()
        wait_for(lambda: node(eng, "push")["metrics"].get("actor", {}).get("state") == "connected", 20,
                 "the sender connected")
        fresh_video(url, int(time.time() * 1000), 15)  # a viewer sees pushed pictures before any fault
        push0 = node(eng, "push")
        for n, fault in enumerate(("kill", "hang"), start=1):
            before = node(eng, "app")
            t_fault = time.time()
            eng.fault("app", fault)
            back = wait_for(lambda n=n: (a := node(eng, "app"))["restarts"] >= n and a["state"] == "running" and a, 15,
                            f"app restarted after {fault}")
            back_at = time.time()
            t_view = time.time()
            first_s, new_pictures = fresh_video(url, int(t_fault * 1000), 15)
            m = wait_for(lambda: (a := node(eng, "app")["metrics"].get("actor", {})).get("frames_in", 0) > 30 and a,
                         10, "the restarted node taking pushes again")
            rows.append({"fault": fault, "restarts": back["restarts"],
                         "restarted_after_s": round(back_at - t_fault, 2),
                         "fresh_picture_after_s": round(t_view - t_fault + first_s, 2),
                         "new_pictures": new_pictures, "frames_in_after": m["frames_in"]})
            assert back["pid"] != before["pid"], fault
            assert new_pictures >= 5, rows[-1]
        # no restart loop: one restart per fault
        assert node(eng, "app")["restarts"] == 2 and node(eng, "app")["state"] == "running"
        push1 = node(eng, "push")
        assert push1["restarts"] == push0["restarts"] == 0, push1
        losses = push1["metrics"].get("actor", {}).get("connection_losses", 0)
        assert losses == 0, push1["metrics"]  # the RTMP connection stayed up through both
    finally:
        caller.stop_flag.set()
        caller.join(30)
        eng.stop()
    print("\nEXT-FAULTS " + json.dumps(rows))
    assert caller.error is None, repr(caller.error)
    assert eng.returncode == 0, eng.log
    for row in rows:
        assert row["fresh_picture_after_s"] <= RECOVERY_S[row["fault"]], row
