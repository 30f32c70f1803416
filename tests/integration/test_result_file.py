"""`mediaengine run --result-file` writes the run's outcome as JSON, and the Python API reads its errors
from there rather than parsing the log (docs/api.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mediaengine.control.api import Engine
from mediaengine.control.process import final_error_of
from mediaengine.sdk.errors import IntensityExceededError, SharedMemoryError, UnknownKindError

from tests.enginekit import ROOT
from tests.mounts import unshare_small_shm_argv

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, topo: str, *prefix: str) -> tuple[int, dict[str, object], str]:
    path = tmp_path / "t.yaml"
    path.write_text(topo)
    result = tmp_path / "result.json"
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(runtime)}
    done = subprocess.run([*prefix, sys.executable, "-m", "mediaengine.cli", "run", str(path), "--duration", "3",
                           "--result-file", str(result)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, json.loads(result.read_text()), done.stderr


def test_a_topology_error_is_written_with_its_code(tmp_path: Path) -> None:
    status, result, _ = _run(tmp_path, "version: 1\nnodes: [{id: a, kind: camra}]\n")
    assert status == 2 and result["exit"] == 2
    error = result["error"]
    assert isinstance(error, dict) and error["code"] == UnknownKindError.code and "camra" in error["message"]


def test_a_run_failure_is_written_with_its_code(tmp_path: Path) -> None:
    topo = ("version: 1\nnodes:\n  - {id: src, kind: test_pattern, options: {width: 1280, height: 720}}\n"
            f"  - {{id: snap, kind: snapshot, inputs: {{in: src}}, options: {{path: {tmp_path / 's.png'}}}}}\n")
    status, result, _ = _run(tmp_path, topo, *unshare_small_shm_argv("1m"))
    error = result["error"]
    assert status == 1 and result["exit"] == 1
    assert isinstance(error, dict) and error["code"] == SharedMemoryError.code and "node src output" in error["message"]


def test_a_clean_run_writes_no_error(tmp_path: Path) -> None:
    topo = ("version: 1\nnodes:\n  - {id: src, kind: test_pattern, options: {width: 160, height: 90, fps: 5}}\n"
            f"  - {{id: snap, kind: snapshot, inputs: {{in: src}}, options: {{path: {tmp_path / 's.png'}}}}}\n")
    status, result, stderr = _run(tmp_path, topo)
    assert status == 0 and result == {"exit": 0, "error": None}, stderr


def test_the_api_takes_the_error_from_the_result_file_not_the_log() -> None:
    log = "error: something unrelated (error 1108 OptionError)\n"
    result = json.loads(json.dumps({"exit": 1, "error": IntensityExceededError("too many").to_wire()}))
    err = final_error_of(result, log, 1)
    assert type(err) is IntensityExceededError and "too many" in str(err)
    # killed before it could write one: the log is all there is
    assert final_error_of(None, log, 1).code == 1108


def test_engine_start_raises_the_typed_error_of_a_failed_start(tmp_path: Path) -> None:
    with pytest.raises(UnknownKindError, match="camra"):
        Engine.start({"version": 1, "nodes": [{"id": "a", "kind": "camra"}]}, runtime_dir=tmp_path / "rt")
