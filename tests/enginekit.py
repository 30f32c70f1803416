"""Helpers and fixtures that run real engines as real processes and clean up after them, even when a test fails.

An engine of a test is a `mediaengine.control.process.EngineProcess` (the class the Python API and the
benchmarks start engines with) whose failures are AssertionErrors carrying the engine's log.  Every
engine of one test runs with the test's own MEDIAENGINE_RUNTIME_DIR, so `ps` sees only the test's
engines, and whatever else was started in it can be found by that marker in /proc/<pid>/environ.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mediaengine.control.process import EngineProcess
from mediaengine.runtime.ring import list_segments, unlink_segments
from mediaengine.sdk.errors import EngineError, TimeoutError_
from mediaengine.supervision.rundir import processes_with_env as processes_with_marker

from tests.helpers import wait_for as wait_for  # re-exported: the tests' one polling helper
from tools.rtmp_server import free_port

ROOT = Path(__file__).resolve().parents[1]


class Engine(EngineProcess):
    """One `mediaengine run` subprocess of a test (start it with the `engine_runner` fixture)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports: list[int] = []  # TCP ports it was given by start_on_free_ports

    def node(self, node_id: str) -> dict[str, Any]:
        """The `ps` entry of one node."""
        for n in self.ps()["nodes"]:
            if n["id"] == node_id:
                return dict(n)
        raise KeyError(node_id)

    def wait_running(self, timeout: float = 30.0) -> dict[str, Any]:
        """Every node running; an AssertionError with the engine's error and log if not."""
        try:
            return super().wait_running(timeout)
        except EngineError as exc:
            raise AssertionError(f"{exc}\n--- engine log ---\n{self.log}") from None

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; an AssertionError with the log if it does not exit within `timeout` s."""
        try:
            return super().wait(timeout)
        except TimeoutError_:
            raise AssertionError(f"engine did not exit within {timeout:g}s\n{self.log}") from None


def sweep(runtime_dir: Path, engine_ids: Iterable[str] = ()) -> tuple[list[int], list[str]]:
    """Remove whatever is left in a test's runtime dir and return it: processes carrying it in their
    environment (given a few seconds to exit first; then killed), and the shared-memory segments of
    `engine_ids` and of every engine with an entry there (unlinked)."""
    ids = set(engine_ids) | {p.name for p in runtime_dir.iterdir()}
    procs, segs = leftovers(runtime_dir, ids)
    for pid in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for engine_id in ids:
        unlink_segments(engine_id)
    return procs, segs


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Iterator[Path]:
    """A private runtime dir for engines a test starts itself; afterwards the test fails if they left
    processes or shared memory behind (removed either way, by `sweep`)."""
    rdir = tmp_path / "runtime"
    rdir.mkdir(mode=0o700)
    yield rdir
    procs, segs = sweep(rdir)
    assert not procs, f"processes left behind: {procs}"
    assert not segs, f"shared memory left behind: {segs}"


@pytest.fixture
def engine_runner(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Start engines with `engine_runner(topology, *args, env=None)`; afterwards the test fails if they left
    processes or shared memory behind, and everything they left is removed either way.  An engine still
    running at the end is stopped in order first (killed if it does not stop)."""
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(mode=0o700)
    engines: list[Engine] = []

    def start(topology: str | Path, *args: str, env: dict[str, str] | None = None) -> Engine:
        eng = Engine.launch(topology, runtime_dir=runtime_dir, log_path=tmp_path / f"engine{len(engines)}.log",
                            args=args, env=env, cwd=ROOT, timeout_s=3.0)
        engines.append(eng)
        return eng

    try:
        yield start
    finally:
        found = []
        for eng in engines:
            if eng.alive():
                with contextlib.suppress(Exception):
                    eng.stop(15)
            found.append(eng.cleanup())
        procs, segs = sweep(runtime_dir, {i for eng in engines for i in eng.engine_ids})
        procs += [p for f in found for p in f.processes]
        segs += [s for f in found for s in f.segments]
        assert not procs, f"processes left behind: {procs}"
        assert not segs, f"shared memory left behind: {segs}"


def start_on_free_ports(start: Callable[..., Engine], n: int, attempts: int = 3) -> tuple[Engine, list[int]]:
    """`start(*ports)` an engine that binds `n` TCP ports picked by `free_port()`; wait until every node runs.

    A port is free only when `free_port()` looks: another process may bind it before the engine does.  The
    engine then exits with "Address already in use"; pick fresh ports and start again (`attempts` at most).
    """
    for attempt in range(attempts):
        ports = [free_port() for _ in range(n)]
        eng = start(*ports)
        try:
            eng.wait_running()
            eng.ports = ports
            return eng, ports
        except AssertionError:
            if attempt + 1 < attempts and eng.proc.poll() is not None and "already in use" in eng.log:
                continue
            raise
    raise AssertionError("unreachable")


def leftovers(runtime_dir: Path, engine_ids: set[str]) -> tuple[list[int], list[str]]:
    """Processes and segments an engine left; helpers that exit with it get a few seconds to go."""
    marker = f"MEDIAENGINE_RUNTIME_DIR={runtime_dir}"
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not processes_with_marker(marker), 5.0, "engine processes to exit")
    procs = processes_with_marker(marker)
    segs = [s for i in engine_ids for s in list_segments(i)]
    return procs, segs


def ffprobe(path: Path | str, *args: str) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"ffprobe failed on {path}: {out.stderr}"
    return dict(json.loads(out.stdout))


def video_pts(path: Path | str) -> list[float]:
    data = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts_time")
    return sorted(float(p["pts_time"]) for p in data["packets"] if p.get("pts_time") not in (None, "N/A"))


def max_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def decoded_stamps(path: Path | str) -> list[tuple[float, int, int]]:
    """(pts in seconds, frame counter, wall-clock ms) of the burned-in stamp of every decoded video frame,
    in presentation order; an unreadable stamp fails the test."""
    import av
    from mediaengine.sdk.stamp import read

    stamps = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            stamp = read(frame.to_ndarray(format="rgb24"))
            assert stamp is not None, f"unreadable stamp in frame pts={frame.pts}"
            assert frame.pts is not None and frame.time_base is not None
            stamps.append((float(frame.pts * frame.time_base), stamp.counter, stamp.wall_ms))
    return sorted(stamps)


def decoded_counters(path: Path | str) -> list[int]:
    """The burned-in frame counters of every decoded video frame, in presentation order."""
    return [counter for _, counter, _ in decoded_stamps(path)]
