"""Through the real control port: `snapshot path=...` writes inside the topology's `output_dir` only
(issue 9 item 2).  Before, a client could write, create folders and replace files anywhere the engine
user could; now the reply is OutputPathError (1415) and nothing appears outside."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mediaengine.control.api import Engine
from mediaengine.sdk.errors import OutputPathError

from tests.enginekit import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]



def test_snapshot_commands_stay_inside_output_dir(tmp_path: Path, runtime_dir: Path) -> None:
    out = tmp_path / "shots"
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "precious.png").write_bytes(b"keep me")
    (out / "cams").mkdir(parents=True)
    (out / "escape").symlink_to(outside)
    topo = {"version": 1, "output_dir": str(out), "nodes": [
        {"id": "src", "kind": "test_pattern", "options": {"width": 160, "height": 96, "fps": 10}},
        {"id": "snap", "kind": "snapshot", "inputs": {"in": "src"}, "options": {"path": str(out / "first.png")}},
    ]}
    events: list[dict[str, Any]] = []
    with Engine.start(topo, runtime_dir=runtime_dir) as eng:
        eng.wait_running(60)
        eng.subscribe(lambda topic, ev: events.append(ev))
        refused = {}
        for path in ("../home/precious.png", str(outside / "precious.png"), str(outside / "new" / "x.png"),
                     ".hidden.png", "notes.txt"):
            with pytest.raises(OutputPathError) as info:
                eng.command("snap", "snapshot", path=path)
            refused[path] = info.value
        assert all(e.code == 1415 for e in refused.values()), refused
        reply = eng.command("snap", "snapshot", path="cams/now.png")
        assert reply == {"path": str(out / "cams" / "now.png")}
        wait_for(lambda: (out / "cams" / "now.png").exists(), 30, "the snapshot inside output_dir")
        eng.command("snap", "snapshot", path="escape/precious.png")  # lexically inside: the write refuses it
        failed = wait_for(lambda: [e for e in events if e["name"] == "snapshot_failed"], 30, "snapshot_failed")
        assert failed[0]["data"]["code"] == 1415 and "symbolic link" in failed[0]["data"]["message"]
        snap = next(n for n in eng.request("ps")["nodes"] if n["id"] == "snap")
        assert snap["state"] == "running" and snap["restarts"] == 0  # a client's request never stops the node
    assert (outside / "precious.png").read_bytes() == b"keep me"
    assert sorted(p.name for p in outside.iterdir()) == ["precious.png"]
    assert (out / "cams" / "now.png").read_bytes()[:4] == b"\x89PNG"
