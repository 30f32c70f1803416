"""Helpers and fixtures that run real engines as real processes and clean up after them, even when a test fails.

Each engine runs with its own MEDIAENGINE_RUNTIME_DIR, so `ps` sees only the test's engines and
leftover processes can be found by that marker in /proc/<pid>/environ.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mediaengine.control.client import ControlClient
from mediaengine.runtime.ring import list_segments, unlink_segments
from mediaengine.supervision.rundir import processes_with_env as processes_with_marker

from tests.helpers import wait_for as wait_for  # re-exported: the tests' one polling helper
from tools.rtmp_server import free_port

ROOT = Path(__file__).resolve().parents[1]


class Engine:
    """One `mediaengine run` subprocess."""

    def __init__(self, runtime_dir: Path, topology: str | Path, args: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.runtime_dir = runtime_dir
        self.log_path = log_path
        full_env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(runtime_dir), "PYTHONUNBUFFERED": "1"}
        full_env.update(env or {})
        self.log_file = open(log_path, "wb")  # noqa: SIM115 - closed in finish()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mediaengine.cli", "run", str(topology), *args],
            cwd=ROOT, env=full_env, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.engine_ids: set[str] = set()
        self.ports: list[int] = []  # TCP ports it was given by start_on_free_ports

    @property
    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def info(self) -> dict[str, Any] | None:
        for child in self.runtime_dir.iterdir() if self.runtime_dir.exists() else []:
            try:
                data = json.loads((child / "engine.json").read_text())
            except (OSError, ValueError):
                continue
            if data.get("pid") == self.proc.pid:
                self.engine_ids.add(str(data["engine_id"]))
                return dict(data)
        return None

    def request(self, msg_type: str, **fields: Any) -> Any:
        info = self.info()
        if info is None:
            raise RuntimeError("engine not up")
        with ControlClient(str(info["control"]), timeout_s=3.0) as c:
            return c.request(msg_type, **fields)

    def ps(self) -> dict[str, Any]:
        return dict(self.request("ps"))

    def node(self, node_id: str) -> dict[str, Any]:
        for n in self.ps()["nodes"]:
            if n["id"] == node_id:
                return dict(n)
        raise KeyError(node_id)

    def wait_running(self, timeout: float = 30.0) -> dict[str, Any]:
        def up() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"engine exited early ({self.proc.returncode}):\n{self.log}")
            st = self.ps()
            return st if all(n["state"] == "running" for n in st["nodes"]) else None

        try:
            return dict(wait_for(up, timeout, "every node running"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- engine log ---\n{self.log}") from None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"engine did not exit within {timeout:g}s\n{self.log}") from None

    def finish(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log_file.close()


@pytest.fixture
def engine_runner(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Start engines with `engine_runner(topology, *args)`; everything they leave is removed afterwards."""
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(mode=0o700)
    engines: list[Engine] = []

    def start(topology: str | Path, *args: str, env: dict[str, str] | None = None) -> Engine:
        eng = Engine(runtime_dir, topology, list(args), tmp_path / f"engine{len(engines)}.log", env)
        engines.append(eng)
        return eng

    try:
        yield start
    finally:
        for eng in engines:
            eng.finish()
        marker = f"MEDIAENGINE_RUNTIME_DIR={runtime_dir}"
        # processes killed a moment ago may take a little while to be gone
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not processes_with_marker(marker), 5.0, "engine processes to exit")
        leftovers = processes_with_marker(marker)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ids = {i for eng in engines for i in eng.engine_ids} | {p.name for p in runtime_dir.iterdir()}
        segs = [s for i in ids for s in list_segments(i)]
        for i in ids:
            unlink_segments(i)
        assert not leftovers, f"processes left behind: {leftovers}"
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
