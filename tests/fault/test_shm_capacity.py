"""A /dev/shm too small for the rings fails the start with one clear error; SIGHUP stops like SIGTERM.

The engine runs in a private mount namespace (`unshare -m`) whose /dev/shm is a 1 MiB tmpfs: only that
engine sees it.  One 1280x720 rgb24 ring needs about 16 MB.  `ftruncate` alone would succeed there and
the producer would die of SIGBUS at its first frame, restart, and die again; the ring's pages are
reserved at creation instead, so the start fails before any actor runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mediaengine.sdk.errors import SharedMemoryError

from tests.enginekit import ROOT, Engine, leftovers, processes_with_marker
from tests.mounts import unshare_small_shm_argv

pytestmark = [pytest.mark.fault, pytest.mark.integration]


def _topology(tmp_path: Path) -> Path:
    topo = tmp_path / "big.yaml"
    topo.write_text(
        "version: 1\n"
        "nodes:\n"
        "  - {id: src,  kind: test_pattern, options: {width: 1280, height: 720, fps: 5}}\n"
        f"  - {{id: snap, kind: snapshot, inputs: {{in: src}}, options: {{path: {tmp_path / 's.png'}}}}}\n"
    )
    return topo


def test_a_small_dev_shm_fails_the_start_naming_the_ring_its_size_and_the_free_space(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(runtime), "PYTHONUNBUFFERED": "1"}
    argv = [*unshare_small_shm_argv("1m"), sys.executable, "-m", "mediaengine.cli", "run", str(_topology(tmp_path)),
            "--duration", "5"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = out.decode(errors="replace")
    print(log)
    assert proc.returncode == 1, log
    assert f"error {SharedMemoryError.code}" in log
    line = next(x for x in log.splitlines() if f"error {SharedMemoryError.code}" in x)
    assert "node src output 'out'" in line and re.search(r"ring '/?me-[^']*-src-out'", line), line
    assert re.search(r"needs [\d.]+ MB \(\d+ bytes\), [\d.]+ MB free", line), line
    assert "/dev/shm" in line and "--shm-size" in line
    assert "started pid" not in log  # failed before any actor ran: no SIGBUS, no restart loop
    assert "SIGBUS" not in log and "restart" not in log
    assert not processes_with_marker(f"MEDIAENGINE_RUNTIME_DIR={runtime}")


def test_sighup_stops_the_engine_cleanly_like_sigterm(engine_runner: Callable[..., Engine], tmp_path: Path) -> None:
    topo = tmp_path / "small.yaml"
    topo.write_text(
        "version: 1\n"
        "nodes:\n"
        "  - {id: src,  kind: test_pattern, options: {width: 320, height: 180, fps: 10}}\n"
        f"  - {{id: snap, kind: snapshot, inputs: {{in: src}}, options: {{path: {tmp_path / 's.png'}}}}}\n"
    )
    eng = engine_runner(topo)
    eng.wait_running()
    eng.proc.send_signal(signal.SIGHUP)
    assert eng.wait(30) == 0, eng.log
    assert "SIGHUP: stopping" in eng.log
    procs, segs = leftovers(eng.runtime_dir, eng.engine_ids)
    assert not procs and not segs
