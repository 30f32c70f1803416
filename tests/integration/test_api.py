"""The Python API (`mediaengine.control.api`), sync and asyncio, against real engines.

Start from a dict, see a `started` event of every node through a subscription (replayed if it came
before the subscription, and each exactly once), change live options, get the documented error classes
and codes back, pause and resume a video source (video freezes in the recording while audio goes on),
inject a fault, stop in order and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mediaengine.control.api import AsyncEngine, Engine
from mediaengine.sdk.errors import (
    EngineError,
    NotAllowedError,
    OptionError,
    UnknownCommandError,
    UnknownKindError,
    UnknownTargetError,
)

from tests.enginekit import ROOT, decoded_counters, ffprobe, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

NODES = ["src", "tone", "filt", "venc", "aenc", "rec", "snap"]
DOC_CODES = {name: int(code) for code, name in
             re.findall(r"^\| (\d+) \| (\w+) \|", (ROOT / "docs" / "errors.md").read_text(), flags=re.M)}


def demo_dict(tmp_path: Path) -> dict[str, Any]:
    topo: dict[str, Any] = yaml.safe_load((ROOT / "topologies" / "demo.yaml").read_text())
    for node in topo["nodes"]:
        if node["id"] == "rec":
            node["options"]["path"] = str(tmp_path / "api.mp4")
        if node["id"] == "snap":
            node["options"]["path"] = str(tmp_path / "api.png")
    return topo



def _check_code(exc: EngineError, cls: type[EngineError], code: int) -> None:
    assert type(exc) is cls
    assert exc.code == code == DOC_CODES[exc.name], (exc, exc.code)


def _longest_freeze(counters: list[int]) -> tuple[int, int]:
    """(length, index) of the longest run of one repeated frame counter."""
    best, at = 0, 0
    i = 0
    for _, group in itertools.groupby(counters):
        n = len(list(group))
        if n > best:
            best, at = n, i
        i += n
    return best, at


def test_sync_api_start_events_set_errors_pause_stop(runtime_dir: Path, tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def on_event(topic: str, ev: dict[str, Any]) -> None:
        with lock:
            events.append((topic, ev))

    def named(name: str, node: str | None = None) -> list[dict[str, Any]]:
        with lock:
            return [ev for _, ev in events if ev["name"] == name and (node is None or ev["node"] == node)]

    eng = Engine.start(demo_dict(tmp_path), runtime_dir=runtime_dir)
    try:
        sub = eng.subscribe(on_event)
        status = eng.wait_running()
        assert [n["id"] for n in status["nodes"]] == NODES and eng.engine_id == status["engine_id"]
        wait_for(lambda: {e["node"] for e in named("started")} == set(NODES), 10, "a started event of every node")
        assert all(t == f"events.{ev['node']}" for t, ev in events)

        # live options
        assert eng.set("filt", text="hello from the API") == {"text": "hello from the API"}
        assert eng.set("venc", bitrate_kbps=1500) == {"bitrate_kbps": 1500}
        wait_for(lambda: named("bitrate_changed", "venc"), 10, "bitrate_changed through the subscription")
        assert named("bitrate_changed", "venc")[0]["data"]["bitrate_kbps"] == 1500
        wait_for(lambda: eng.ps()["nodes"][3]["metrics"]["actor"]["bitrate_kbps"] == 1500, 5, "the new bitrate")

        # errors: the documented class and code, a message naming the option and the allowed range
        with pytest.raises(OptionError) as e1:
            eng.set("venc", bitrate_kbps=50)
        _check_code(e1.value, OptionError, 1108)
        assert "venc.bitrate_kbps" in str(e1.value) and "100..20000" in str(e1.value)
        with pytest.raises(OptionError, match=r"venc\.no_such_option.*unknown option") as e2:
            eng.set("venc", no_such_option=1)
        _check_code(e2.value, OptionError, 1108)
        with pytest.raises(OptionError, match=r"venc\.preset.*cannot change while running"):
            eng.set("venc", preset="slow")
        with pytest.raises(OptionError, match=r"venc\.bitrate_kbps.*expected"):
            eng.set("venc", bitrate_kbps="fast")
        with pytest.raises(UnknownTargetError, match="no node 'ghost'") as e3:
            eng.command("ghost", "keyframe")
        _check_code(e3.value, UnknownTargetError, 1404)
        with pytest.raises(UnknownCommandError) as e4:
            eng.command("venc", "frobnicate")
        _check_code(e4.value, UnknownCommandError, 1405)
        with pytest.raises(UnknownCommandError):
            eng.command("tone", "pause")  # pause is built in for video sources only
        with pytest.raises(NotAllowedError, match="--allow-faults") as e5:
            eng.fault("filt", "kill")
        _check_code(e5.value, NotAllowedError, 1407)
        assert eng.command("venc", "keyframe") == {"keyframe": "next frame"}

        # the same validation from the command line
        env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(runtime_dir)}
        ctl = subprocess.run([sys.executable, "-m", "mediaengine.cli", "ctl", "venc", "set", "bitrate_kbps=5"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        assert ctl.returncode == 2, ctl.stderr  # an option error is bad input (docs/errors.md)
        assert ctl.stderr.splitlines() == ["error: venc.bitrate_kbps: 5 is out of range 100..20000",
                                           "  (error 1108 OptionError)"]

        # pause the video source: video freezes (the encoder repeats the last picture), audio goes on
        def venc_actor() -> dict[str, Any]:
            return dict(next(n for n in eng.ps()["nodes"] if n["id"] == "venc")["metrics"]["actor"])

        repeated_before = venc_actor()["repeated_frames"]
        assert eng.command("src", "pause") == {"paused": True}
        t_paused = time.monotonic()
        wait_for(lambda: named("paused", "src"), 5, "the paused event")
        wait_for(lambda: time.monotonic() - t_paused > 2.0 and venc_actor()["repeated_frames"] - repeated_before > 30,
                 10, "the encoder repeating the last picture")
        nodes = {n["id"]: n for n in eng.ps()["nodes"]}
        assert nodes["src"]["metrics"]["paused"] is True and nodes["src"]["fps_out"] == 0
        assert nodes["filt"]["fps_in"] == 0
        assert nodes["aenc"]["fps_out"] > 40 and nodes["rec"]["metrics"]["fps_in"]["audio"] > 40
        assert nodes["venc"]["fps_out"] > 20  # the stream keeps its frame rate
        assert eng.command("src", "resume") == {"paused": False}
        wait_for(lambda: next(n for n in eng.ps()["nodes"] if n["id"] == "filt")["fps_in"] > 20, 5,
                 "frames flowing again after resume")
        time.sleep(1.0)  # some moving video after the freeze, in the recording

        assert eng.stop() == 0
        assert not sub.active and sub.error is None
        # checked only now that the subscription has ended, so a late duplicate (the live copy of a
        # replayed event, or a replay delivered twice) had the whole run to show up; no node restarted
        assert sorted(e["node"] for e in named("started")) == sorted(NODES), "each started event exactly once"
    finally:
        eng.stop()
    assert "node src started" in eng.log

    # the recording: one long run of a repeated frame (frozen video), then the counter jumps ahead
    # (the source's timeline went on), and audio covers the whole recording
    mp4 = tmp_path / "api.mp4"
    counters = decoded_counters(mp4)
    run, at = _longest_freeze(counters)
    assert run >= 45, f"no frozen stretch in the video (longest repeat {run} frames)"
    jump = counters[at + run] - counters[at]
    assert jump == pytest.approx(run, abs=6), (run, jump)
    streams = {s["codec_type"]: s for s in ffprobe(mp4, "-show_streams")["streams"]}
    assert float(streams["audio"]["duration"]) >= float(streams["video"]["duration"]) - 0.5


def test_sync_api_bad_topologies_raise_the_loaders_error(runtime_dir: Path) -> None:
    with pytest.raises(OptionError, match=r"fps") as e1:
        Engine.start({"version": 1, "nodes": [{"id": "a", "kind": "test_pattern", "options": {"fps": "fast"}}]},
                     runtime_dir=runtime_dir)
    _check_code(e1.value, OptionError, 1108)
    with pytest.raises(UnknownKindError, match="camra") as e2:
        Engine.start({"version": 1, "nodes": [{"id": "a", "kind": "camra"}]}, runtime_dir=runtime_dir)
    _check_code(e2.value, UnknownKindError, 1103)


def test_asyncio_api(runtime_dir: Path, tmp_path: Path) -> None:
    async def scenario() -> None:
        eng = await AsyncEngine.start(demo_dict(tmp_path), runtime_dir=runtime_dir, allow_faults=True)
        try:
            started: list[str] = []
            async with asyncio.timeout(20), contextlib.aclosing(eng.events()) as stream:
                async for topic, ev in stream:
                    assert topic == f"events.{ev['node']}"
                    if ev["name"] == "started":
                        started.append(ev["node"])
                    if set(started) == set(NODES):
                        break
            assert sorted(started) == sorted(NODES)
            status = await eng.wait_running()
            assert status["state"] == "running"

            seen: list[dict[str, Any]] = []

            async def on_filt(topic: str, ev: dict[str, Any]) -> None:
                seen.append(ev)

            sub = await eng.subscribe(on_filt, topics=("events.filt",), replay=False)
            assert await eng.set("filt", text="async text") == {"text": "async text"}
            assert await eng.set("venc", bitrate_kbps=900) == {"bitrate_kbps": 900}
            with pytest.raises(OptionError) as e1:
                await eng.set("filt", no_such_option=True)
            _check_code(e1.value, OptionError, 1108)
            with pytest.raises(UnknownTargetError) as e2:
                await eng.command("ghost", "keyframe")
            _check_code(e2.value, UnknownTargetError, 1404)

            # a crash in the filter: the subscription sees it die and come back
            assert await eng.fault("filt", "crash") == {"fault": "crash"}
            async with asyncio.timeout(15):
                while not any(e["name"] == "started" and e["data"].get("restarts") == 1 for e in seen):
                    await asyncio.sleep(0.05)
            names = [e["name"] for e in seen]
            for name in ("fault_injected", "error", "exited", "restarting", "started"):
                assert name in names, names
            assert {e["node"] for e in seen} == {"filt"}

            # metrics arrive as a stream too
            async with asyncio.timeout(10), contextlib.aclosing(eng.events(("metrics.venc",))) as metrics:
                async for topic, m in metrics:
                    assert topic == "metrics.venc" and m["node"] == "venc"
                    if m["actor"]["bitrate_kbps"] == 900 and sum(m["fps_out"].values()) > 0:
                        break
            await sub.close()
            assert not sub.active
            assert await eng.stop() == 0
        finally:
            await eng.stop()

    asyncio.run(scenario())
