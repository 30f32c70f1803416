"""Camera switch during a push to nginx-rtmp: two lavfi "cameras" of different pictures and sizes.

The `switch` command (through the control API, as `Engine.command` sends it, and `ctl cam switch`)
opens the other device while the push goes on.  Measured: from just before the command is sent to the
supervisor's receipt of the encoder's `source_changed` event for the new device (its first frame at the
encoder), at most 500 ms, printed per switch (measured on the API path: the CLI's own Python start-up
is not part of a switch).  A puller (`mediaengine play --json`, decoding the stream nginx relays) never
stalls longer than 500 ms and sees no decode error; the stream keeps the output size throughout.
Also here: `ctl cam capabilities` and the live digital zoom (`ctl cam set zoom=...`) on a running engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mediaengine.sdk.errors import ControlUnsupportedError

from tests.enginekit import ROOT, Engine, wait_for
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp, pytest.mark.timeout(120)]

CAM_A = "lavfi:testsrc2=size=1280x720:rate=30"
CAM_B = "lavfi:smptebars=size=640x480:rate=30"
SWITCH_LIMIT_S = 0.5
STALL_LIMIT_MS = 500
PLAY_S = 15

TOPOLOGY = f"""\
version: 1
name: camera_switch
nodes:
  - {{id: cam,  kind: camera, options: {{devices: ["{CAM_A}", "{CAM_B}"], width: 640, height: 360, fps: 30}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: cam}},
     options: {{bitrate_kbps: 800, gop_s: 1, preset: ultrafast, tune: zerolatency}}}}
  - {{id: push, kind: rtmp_sender, inputs: {{video: venc}}, options: {{url: "${{PUSH_URL}}"}}}}
"""


class Player:
    """`mediaengine play --json` for a fixed time: every event line with the time it arrived."""

    def __init__(self, url: str, seconds: int) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mediaengine.cli", "play", url, "--json", "--duration",
                                      str(seconds), "--timeout", "20"], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.events: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue

    def frames(self) -> int:
        stats = [e for e in self.events if e.get("type") == "stats"]
        return int(stats[-1]["frames"]) if stats else 0

    def close(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def ctl(eng: Engine, *args: str) -> Any:
    env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(eng.runtime_dir)}
    out = subprocess.run([sys.executable, "-m", "mediaengine.cli", "ctl", *args, "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["result"]


def source_changed(eng: Engine, source: str, since: float) -> float | None:
    """Unix time the supervisor got the encoder's `source_changed` event for `source` at or after `since`."""
    ts = [e["t"] for e in eng.request("snapshot").get("events_recent", [])
          if e.get("node") == "venc" and e.get("name") == "source_changed" and (e.get("t") or 0) >= since
          and e.get("data", {}).get("source") == source]
    return min(ts) if ts else None


def test_switching_cameras_during_a_push(engine_runner: Callable[..., Engine], rtmp_server: RtmpServer,
                                         tmp_path: Path) -> None:
    url = rtmp_server.url(stream="camswitch")
    topo = tmp_path / "switch.yaml"
    topo.write_text(TOPOLOGY)
    eng = engine_runner(topo, env={"PUSH_URL": url})
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20, "connected")
    player = Player(url, PLAY_S)
    try:
        wait_for(lambda: player.frames() > 30, 20, "the puller playing")
        caps = ctl(eng, "cam", "capabilities")
        assert caps["device"] == CAM_A and caps["zoom"] == "digital" and caps["controls"] == []
        assert caps["devices"] == [CAM_A, CAM_B]

        latencies = []
        for i, target in enumerate([CAM_B, CAM_A, CAM_B, CAM_A]):
            t0 = time.time()
            if i < 3:  # through the control API, as Engine.command("cam", "switch") sends it
                reply = eng.request("command", node="cam", command="switch", args={})
            else:  # through the CLI, naming the device (its Python start-up is not part of the switch)
                reply = ctl(eng, "cam", "switch", f"device={target}")
            assert reply["device"] == target, reply
            t_enc = wait_for(lambda target=target, t0=t0: source_changed(eng, target, t0), 10,
                             f"the encoder's first frame of {target}")
            if i < 3:
                latencies.append(round(t_enc - t0, 3))
            print(f"\nSWITCH {i}: to {target}: command -> first frame at the encoder {t_enc - t0:.3f}s "
                  f"(device open {reply['open_ms']} ms)")
            time.sleep(1.0)  # pushing on the new device for a while before the next switch (a pace, not a wait)
        with pytest.raises(ControlUnsupportedError, match="has no camera controls") as refused:
            eng.request("set", node="cam", options={"focus": 40})  # as Engine.set("cam", focus=40) sends it
        assert refused.value.code == 1325
        zoom = ctl(eng, "cam", "set", "zoom=2", "zoom_x=0.25")
        assert zoom == {"zoom": 2.0, "zoom_x": 0.25}
        assert wait_for(lambda: eng.node("cam")["metrics"].get("actor", {}).get("zoom") == 2.0, 10, "zoom 2")
    finally:
        player.close(PLAY_S + 25)

    events = player.events
    stalls = [e["duration_ms"] for e in events if e.get("type") == "stall"]
    summary = next(e for e in events if e.get("type") == "summary")
    print(f"SWITCH-LATENCIES {latencies} stalls_ms={stalls} decode_errors={summary['decode_errors']}")
    assert all(lat <= SWITCH_LIMIT_S for lat in latencies), latencies
    assert not [s for s in stalls if s > STALL_LIMIT_MS], stalls
    assert summary["decode_errors"] == 0, summary
    assert (summary["width"], summary["height"]) == (640, 360), summary
    assert summary["frames"] >= 25 * (PLAY_S - 4), summary  # the puller kept playing through the switches
    assert eng.node("cam")["restarts"] == 0 and eng.node("push")["restarts"] == 0
    eng.request("stop")
    assert eng.wait(30) == 0, eng.log
