"""Faults while the rate controller drives the encoder (topologies/adaptive_push.yaml on a local
nginx-rtmp): the video encoder killed, then hung.  A restarted encoder comes back at its topology bit
rate; the sender notices it in the next keyframe's params and sets the controller's rate again
(`encoder_resync`), the RTMP connection stays up, and a viewer gets fresh video.  Two cases (kill and
hang of `venc`) keep this within the suite's time budget; the sender's own faults are the matrix's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.enginekit import Engine, wait_for
from tests.fault.test_fault_matrix import connected, fault, fresh_video, injected_at
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.fault, pytest.mark.rtmp, pytest.mark.timeout(180)]

TOPOLOGY = "topologies/adaptive_push.yaml"
TOPOLOGY_KBPS = 1500  # venc's bitrate_kbps in the file
TARGET_KBPS = 500  # resolution_first at 360p: 500 / 150 / 400 target / floor / initial


def events(eng: Engine, since: float, node: str, name: str) -> list[dict[str, Any]]:
    return [e for e in eng.request("snapshot").get("events_recent", [])
            if e.get("node") == node and e.get("name") == name and (e.get("t") or 0) >= since]


@pytest.mark.parametrize("what", ["kill", "hang"])
def test_encoder_fault_under_abr(what: str, engine_runner: Callable[..., Engine], rtmp_server: RtmpServer) -> None:
    url = rtmp_server.url(stream=f"abr-{what}")
    eng = engine_runner(TOPOLOGY, "--allow-faults", "--set", "src.width=640", "--set", "src.height=360",
                        "--set", "venc.codec=libx264", env={"PUSH_URL": url})
    eng.wait_running()
    wait_for(lambda: connected(eng), 20, "the sender connected")
    # the controller took over and reached the mode's target: from now on it has nothing to change, so
    # only the sender's resync can bring a restarted encoder back to the controller's rate
    wait_for(lambda: [e for e in events(eng, 0, "venc", "bitrate_changed")
                      if e["data"]["bitrate_kbps"] == TARGET_KBPS], 30, "the encoder at the mode's target")
    losses = connected(eng)["connection_losses"]  # type: ignore[index]
    restarts = eng.node("venc")["restarts"]
    t0 = time.time()
    assert fault(eng, "venc", what)["fault"] == what
    t_fault = injected_at(eng, "venc", t0)
    wait_for(lambda: eng.node("venc")["restarts"] > restarts and eng.node("venc")["state"] == "running",
             30, "venc restarted")
    # the new encoder started at the file's rate, and the sender set the controller's rate again
    resync = wait_for(lambda: events(eng, t_fault, "push", "encoder_resync"), 20, "encoder_resync")[0]["data"]
    assert resync == {"encoder_kbps": TOPOLOGY_KBPS, "bitrate_kbps": TARGET_KBPS}
    wait_for(lambda: [e for e in events(eng, t_fault, "venc", "bitrate_changed")
                      if e["data"]["bitrate_kbps"] == resync["bitrate_kbps"]], 10, "venc back at the controller's rate")
    assert not events(eng, t_fault, "push", "configure_failed") or what == "hang"  # a hung node may not answer
    fresh_video(url, int(t_fault * 1000), 20)  # a viewer decodes pictures rendered after the fault
    s = connected(eng)
    assert s is not None and s["connection_losses"] == losses and s["dropped"]["audio"] == 0
    eng.request("stop")
    assert eng.wait(30) == 0, eng.log
