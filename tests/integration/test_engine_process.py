"""`EngineProcess`, the one class that starts an engine (used by the Python API, the tests and the
benchmarks), against real engines: it runs, answers, stops in order, and after `cleanup` nothing of it
is left - processes, shared-memory segments, its runtime-dir entry - however it ended."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from mediaengine.control.process import EngineProcess
from mediaengine.runtime.ring import list_segments
from mediaengine.sdk.errors import UnknownKindError

from tests.enginekit import ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEMO = ROOT / "topologies" / "demo.yaml"
NODES = ["src", "tone", "filt", "venc", "aenc", "rec", "snap"]



def _demo(tmp_path: Path, runtime_dir: Path) -> EngineProcess:
    return EngineProcess.launch(DEMO, runtime_dir=runtime_dir, log_path=tmp_path / "engine.log", duration=60,
                                overrides=[f"rec.path={tmp_path / 'demo.mp4'}", f"snap.path={tmp_path / 's.png'}"],
                                cwd=ROOT)


def _nothing_left(proc: EngineProcess, engine_id: str) -> None:
    assert proc.leftover_processes() == []
    assert list_segments(engine_id) == []
    assert not (proc.runtime_dir / engine_id).exists()


def test_it_runs_answers_stops_in_order_and_leaves_nothing(tmp_path: Path, runtime_dir: Path) -> None:
    proc = _demo(tmp_path, runtime_dir)
    with proc:
        status = proc.wait_running()
        assert [n["id"] for n in status["nodes"]] == NODES
        info = proc.info()
        assert info is not None and info["pid"] == proc.pid
        engine_id = str(info["engine_id"])
        assert proc.engine_ids == {engine_id} and (runtime_dir / engine_id / "engine.json").is_file()
        assert proc.request("ps")["engine_id"] == engine_id
        # every process of the launch carries its marker: the engine and each actor
        actors = {int(n["pid"]) for n in status["nodes"]}
        assert {proc.pid, *actors} <= set(proc.leftover_processes())
        assert list_segments(engine_id), "the demo's rings are shared-memory segments"
        # overrides travel in the environment, never on the command line every local user can read
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            assert b"demo.mp4" not in f.read()

        assert proc.stop() == 0 and not proc.forced
        assert proc.result() == {"exit": 0, "error": None}
        found = proc.cleanup()
    assert found.clean, found
    _nothing_left(proc, engine_id)
    assert "node src started" in proc.log


def test_cleanup_after_the_engine_was_killed_removes_what_it_left(tmp_path: Path, runtime_dir: Path) -> None:
    proc = _demo(tmp_path, runtime_dir)
    try:
        status = proc.wait_running()
        engine_id = str(status["engine_id"])
        os.kill(proc.pid, signal.SIGKILL)  # only the supervisor: its actors are orphaned
        assert proc.wait(10) == -signal.SIGKILL
        assert proc.final_error().code == 1000 and "status -9" in str(proc.final_error())  # no result file
        assert list_segments(engine_id), "a killed engine cannot unlink its rings"
    finally:
        found = proc.cleanup()
    assert not found.was_running
    assert found.segments and found.entries == [runtime_dir / engine_id]
    _nothing_left(proc, engine_id)


def test_cleanup_kills_an_engine_that_still_runs(tmp_path: Path, runtime_dir: Path) -> None:
    proc = _demo(tmp_path, runtime_dir)
    try:
        engine_id = str(proc.wait_started()["engine_id"])
        wait_for(lambda: len(proc.leftover_processes()) > 2, 30, "actor processes")
    finally:
        found = proc.cleanup()
    assert found.was_running and proc.returncode == -signal.SIGKILL
    _nothing_left(proc, engine_id)


def test_an_engine_that_fails_to_start_raises_its_typed_error(tmp_path: Path, runtime_dir: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nnodes: [{id: a, kind: camra}]\n")
    with EngineProcess.launch(bad, runtime_dir=runtime_dir, log_path=tmp_path / "bad.log") as proc:
        with pytest.raises(UnknownKindError, match="camra"):
            proc.wait_running()
        assert proc.returncode == 2
        assert proc.result() is not None and proc.result_path == tmp_path / "bad.result.json"
