"""`Configure` (a node setting another node's live options, routed by the supervisor): the rate
controller drives a real encoder, and a target that does not exist comes back as `configure_failed`
on the sender with the protocol's code, while the push goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.enginekit import Engine, wait_for
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp, pytest.mark.timeout(90)]


def topology(path: Path, target: str) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "name": "configure_route", "nodes": [
        {"id": "src", "kind": "test_pattern", "options": {"width": 320, "height": 240, "fps": 15}},
        {"id": "venc", "kind": "video_encoder", "inputs": {"in": "src"},
         "options": {"bitrate_kbps": 900, "preset": "ultrafast"}},
        {"id": "push", "kind": "rtmp_sender", "inputs": {"video": "venc"},
         "options": {"url": "${PUSH_URL}", "abr": "custom", "abr_encoder": target, "abr_target_kbps": 700,
                     "abr_min_kbps": 200, "abr_initial_kbps": 333}},
    ]}))
    return path


def named(eng: Engine, node: str, name: str) -> list[dict[str, Any]]:
    return [e for e in eng.request("snapshot").get("events_recent", [])
            if e.get("node") == node and e.get("name") == name]


def test_configure_reaches_the_encoder_and_a_missing_target_is_reported(
        tmp_path: Path, engine_runner: Callable[..., Engine], rtmp_server: RtmpServer) -> None:
    eng = engine_runner(topology(tmp_path / "ok.yaml", "venc"), env={"PUSH_URL": rtmp_server.url(stream="cfg-ok")})
    eng.wait_running()
    # the sender's controller set the encoder to the custom initial rate: the encoder applied it
    wait_for(lambda: [e for e in named(eng, "venc", "bitrate_changed") if e["data"]["bitrate_kbps"] == 333],
             20, "venc at the controller's initial rate")
    assert not named(eng, "push", "configure_failed")
    eng.request("stop")
    assert eng.wait(30) == 0, eng.log

    eng = engine_runner(topology(tmp_path / "ghost.yaml", "ghost"),
                        env={"PUSH_URL": rtmp_server.url(stream="cfg-ghost")})
    eng.wait_running()
    failed = wait_for(lambda: named(eng, "push", "configure_failed"), 20, "configure_failed")[0]["data"]
    assert failed["target"] == "ghost" and failed["code"] == 1404 and "no node 'ghost'" in failed["message"]
    assert eng.node("push")["state"] == "running"  # the sender goes on with its stream
    eng.request("stop")
    assert eng.wait(30) == 0, eng.log
