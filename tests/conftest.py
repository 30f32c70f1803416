"""Fixtures shared by every test: a local RTMP server, ffprobe, and leak checks for the whole session.

Markers are registered in pyproject.toml.  A test marked `integration` or `fault` (real processes on real
time) that fails is run once more (pytest-rerunfailures, 5 s later): a CI host that stalls for a moment must
not fail the build, a defect fails twice.  Each rerun is listed in the summary (`RERUN` and how the
rerun ended), so a test that needed its rerun is seen (docs/testing.md).  The session guard fails the
run (an error at teardown of the last test) if the tests left shared-memory segments named `me-*` in
/dev/shm or child processes behind; it removes them first so one leaky run does not poison the next.
"""

from __future__ import annotations

import importlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers import ffprobe_json as _ffprobe_json
from tools.rtmp_server import RtmpServer

SHM_DIR = Path("/dev/shm")
SHM_PATTERN = "me-*"
# The packages whose helper processes (fork server, resource tracker) live as long as this interpreter.
_MULTIPROCESSING_PACKAGES = ("multiprocessing", "multiprocess")


def _shm_segments() -> set[Path]:
    return set(SHM_DIR.glob(SHM_PATTERN)) if SHM_DIR.is_dir() else set()


def _used_outside_session(segments: set[Path]) -> set[Path]:
    """Segments that a process outside this test session has mapped or open.

    Those belong to an engine or benchmark running beside the tests on a developer's machine, not to a
    leak of this session, and must not be unlinked under it.
    """
    ours = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    names = {str(s) for s in segments}
    used: set[Path] = set()
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit() or int(proc_dir.name) in ours:
            continue
        try:
            maps = {ln.split(maxsplit=5)[-1] for ln in (proc_dir / "maps").read_text().splitlines()}
            fds = {os.readlink(fd) for fd in (proc_dir / "fd").iterdir()}
        except OSError:  # the process ended or is not ours to read
            continue
        used |= {Path(n) for n in names & (maps | fds)}
    return used


def _interpreter_helper_pids() -> set[int]:
    """The pids of this interpreter's own fork server and resource tracker (not leaks).

    Only these processes themselves are exempt, found by pid from the multiprocessing machinery that
    started them: every process a fork server forked (an actor) has "forkserver" in its command line too,
    and is a leak if it is still running at the end.
    """
    pids: set[int] = set()
    for package in _MULTIPROCESSING_PACKAGES:
        try:
            forkserver = importlib.import_module(f"{package}.forkserver")
            tracker = importlib.import_module(f"{package}.resource_tracker")
        except ImportError:
            continue
        pids.add(getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None) or 0)
        pids.add(getattr(getattr(tracker, "_resource_tracker", None), "_pid", None) or 0)
    return pids - {0}


def _leftover_children() -> list[psutil.Process]:
    leftovers = []
    helpers = _interpreter_helper_pids()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue  # already dead; its parent reaps it
            if child.pid in helpers and child.ppid() == os.getpid():
                continue
        except psutil.NoSuchProcess:
            continue
        leftovers.append(child)
    return leftovers


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline()) or proc.name()}"
    except psutil.Error:
        return f"pid {proc.pid}"


RERUNS = 1  # one more run for a failed real-time test (MEDIAENGINE_TEST_RERUNS overrides; 0: none)
RERUN_DELAY_S = 5.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Real-time tests get one rerun (see the module docstring); unit tests get none."""
    reruns = int(os.environ.get("MEDIAENGINE_TEST_RERUNS", RERUNS))
    if reruns <= 0 or config.getoption("reruns", None):  # an explicit --reruns wins
        return
    for item in items:
        real_time = item.get_closest_marker("integration") or item.get_closest_marker("fault")
        if real_time and not item.get_closest_marker("flaky"):
            item.add_marker(pytest.mark.flaky(reruns=reruns, reruns_delay=RERUN_DELAY_S))


@pytest.fixture(autouse=True, scope="session")
def _no_leaks_at_session_end() -> Iterator[None]:
    """Fail loudly if the session leaves `me-*` segments or child processes; clean them up either way."""
    shm_before = _shm_segments()
    yield
    problems: list[str] = []

    new_segments = _shm_segments() - shm_before
    leaked_shm = sorted(new_segments - _used_outside_session(new_segments))
    for seg in leaked_shm:
        seg.unlink(missing_ok=True)
    if leaked_shm:
        problems.append(
            "shared-memory segments left in /dev/shm (now unlinked): " + ", ".join(s.name for s in leaked_shm)
        )

    children = _leftover_children()
    if children:
        problems.append("child processes left running (now killed):\n  " + "\n  ".join(map(_describe, children)))
        for child in children:
            try:
                child.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                continue
        _gone, alive = psutil.wait_procs(children, timeout=5)
        for child in alive:
            problems.append(f"could not kill {_describe(child)}")
        for child in children:  # reap our direct children so they do not stay zombies
            try:
                os.waitpid(child.pid, os.WNOHANG)
            except ChildProcessError:
                continue

    if problems:
        pytest.fail("leaks at the end of the test session:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def rtmp_server(tmp_path: Path) -> Iterator[RtmpServer]:
    """A running nginx-rtmp on 127.0.0.1 (free port) under tmp_path; stopped even if the test fails."""
    server = RtmpServer(tmp_path / "rtmp-server")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def ffprobe_json() -> Callable[..., dict[str, Any]]:
    """`ffprobe_json(path_or_url, *ffprobe_args) -> dict` (also importable from tests.helpers)."""
    return _ffprobe_json
