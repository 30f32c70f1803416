"""The runtime directory is private, and a pid named by an engine.json is killed only if it is ours.

Issue 9 item 10: without XDG_RUNTIME_DIR the engine used `/tmp/mediaengine-<uid>` whoever had created
it, and `reap_stale` SIGKILLed every live pid a dead engine's engine.json named.  Real processes
(`sleep`) stand in for the victim and for a leftover actor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mediaengine.sdk.errors import RuntimeDirError
from mediaengine.supervision.rundir import ENGINE_MARKER, base_dir, process_start_time, reap_stale

from tests.enginekit import wait_for


@pytest.fixture
def shared_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the system temp folder, with neither runtime variable set."""
    monkeypatch.delenv("MEDIAENGINE_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


@pytest.fixture
def sleeper() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                env={**os.environ, **(env or {})})
        procs.append(proc)
        # started, and past exec: until then /proc/<pid>/environ is still the parent's (no marker), and a
        # reap_stale run in that window (seen in CI) takes the leftover actor for a stranger
        wait_for(lambda: process_start_time(proc.pid) is not None and b"time.sleep(60)" in _cmdline(proc.pid), 5,
                 "the process to start")
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def test_the_fallback_directory_is_created_private(shared_tmp: Path) -> None:
    base = base_dir()
    assert base == shared_tmp / f"mediaengine-{os.getuid()}"
    st = base.stat()
    assert st.st_uid == os.getuid() and st.st_mode & 0o777 == 0o700


def test_a_directory_others_can_write_is_refused(shared_tmp: Path) -> None:
    planted = shared_tmp / f"mediaengine-{os.getuid()}"
    planted.mkdir()
    os.chmod(planted, 0o777)
    with pytest.raises(RuntimeDirError, match="mode 0777: other users can write") as info:
        base_dir()
    assert info.value.code == 1310 and "MEDIAENGINE_RUNTIME_DIR" in str(info.value)


def test_a_readable_directory_of_ours_is_tightened(shared_tmp: Path) -> None:
    mine = shared_tmp / f"mediaengine-{os.getuid()}"
    mine.mkdir()
    os.chmod(mine, 0o755)
    assert base_dir() == mine and mine.stat().st_mode & 0o777 == 0o700


def test_a_symlink_is_refused(shared_tmp: Path) -> None:
    elsewhere = shared_tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (shared_tmp / f"mediaengine-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(RuntimeDirError, match="symbolic link"):
        base_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="making a directory of another user needs root")
def test_a_directory_of_another_user_is_refused(shared_tmp: Path) -> None:
    planted = shared_tmp / f"mediaengine-{os.getuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, 65534, 65534)
    with pytest.raises(RuntimeDirError, match="belongs to uid 65534"):
        base_dir()


def _plant(base: Path, engine_id: str, pid: int) -> None:
    """A dead engine's engine.json naming `pid` (with its true start time) as an actor."""
    run = base / engine_id
    run.mkdir(mode=0o700)
    (run / "engine.json").write_text(json.dumps({
        "engine_id": engine_id, "pid": 999_999_999, "pid_start": 1,
        "actors": {"x": {"pid": pid, "pid_start": process_start_time(pid)}}}))


def test_reap_stale_never_kills_a_pid_that_is_not_our_actor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            sleeper: Callable[..., subprocess.Popen[bytes]]) -> None:
    base = tmp_path / "run"
    base.mkdir(mode=0o700)
    monkeypatch.setenv("MEDIAENGINE_RUNTIME_DIR", str(base))
    victim = sleeper()
    actor = sleeper({ENGINE_MARKER: "deadbeef"})
    other_engines_actor = sleeper({ENGINE_MARKER: "cafe0001"})
    _plant(base, "0badf00d", victim.pid)  # an engine.json naming a process that is not an actor
    _plant(base, "deadbeef", actor.pid)  # a real leftover actor of the dead engine deadbeef
    _plant(base, "feedface", other_engines_actor.pid)  # an actor, but of another engine
    assert sorted(reap_stale()) == ["0badf00d", "deadbeef", "feedface"]
    assert actor.wait(5) == -9, "the dead engine's own actor must be reaped"
    assert victim.poll() is None, "reap_stale killed a process only named by an engine.json"
    assert other_engines_actor.poll() is None, "reap_stale killed another engine's actor"
    assert list(base.iterdir()) == []
