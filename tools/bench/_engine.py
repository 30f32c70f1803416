"""Run a real engine for a benchmark: a subprocess that is always cleaned up, its control and events.

`BenchEngine` writes the topology (a dict) to a file, starts `python -m tools.bench._host run FILE`
(the real CLI plus the benchmark kinds) in its own session with its own MEDIAENGINE_RUNTIME_DIR, and
on exit kills whatever is left of it (its process group, any process carrying its runtime dir in its
environment), unlinks its shared-memory segments and removes its runtime dir, even when the
benchmark failed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack
import yaml
import zmq
from mediaengine.control.client import ControlClient
from mediaengine.runtime.ring import list_segments, unlink_segments
from mediaengine.supervision.rundir import processes_with_env

from ._procs import die_with_parent, kill_tree

ROOT = Path(__file__).resolve().parents[2]
_counter = itertools.count()


class EngineFailed(RuntimeError):
    pass


class BenchEngine:
    def __init__(self, topology: dict[str, Any], workdir: str | Path, *args: str,
                 env: dict[str, str] | None = None) -> None:
        n = next(_counter)
        self.workdir = Path(workdir)
        self.path = self.workdir / f"topology-{n}.yaml"
        self.path.write_text(yaml.safe_dump(topology, sort_keys=False))
        self.runtime_dir = self.workdir / f"runtime-{n}"
        self.runtime_dir.mkdir(mode=0o700)
        self.log_path = self.workdir / f"engine-{n}.log"
        self.args = list(args)
        self.env = {**os.environ, **(env or {}), "MEDIAENGINE_RUNTIME_DIR": str(self.runtime_dir),
                    "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self._info: dict[str, Any] | None = None
        self._client: ControlClient | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> BenchEngine:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.bench._host", "run", str(self.path), *self.args],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent)
        return self

    def __enter__(self) -> BenchEngine:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise EngineFailed(f"engine exited with {self.proc.returncode}; log tail:\n{self.log[-3000:]}")

    def info(self) -> dict[str, Any] | None:
        if self._info is None:
            for child in self.runtime_dir.iterdir():
                with contextlib.suppress(OSError, ValueError):
                    data = json.loads((child / "engine.json").read_text())
                    if data.get("pid") == self.pid:
                        self._info = dict(data)
        return self._info

    def request(self, msg_type: str, **fields: Any) -> Any:
        info = self.info()
        if info is None:
            raise EngineFailed("engine not up yet")
        if self._client is None:
            self._client = ControlClient(str(info["control"]), timeout_s=5.0)
        return self._client.request(msg_type, **fields)

    def ps(self) -> dict[str, Any]:
        return dict(self.request("ps"))

    def command(self, node: str, command: str, **args: Any) -> Any:
        return self.request("command", node=node, command=command, args=args)

    def wait_running(self, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if self.info() is not None:
                    st = self.ps()
                    if all(n["state"] == "running" for n in st["nodes"]):
                        return st
            except Exception as exc:  # not up yet: the control socket may not answer for a moment
                last = exc
            time.sleep(0.05)
        raise EngineFailed(f"not every node running after {timeout_s:g} s ({last}); log tail:\n{self.log[-3000:]}")

    def wait_metrics(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Wait until every running node has published metrics at least once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            st = self.ps()
            if all(n["metrics"] for n in st["nodes"]):
                return st
            time.sleep(0.1)
        raise EngineFailed("nodes did not publish metrics")

    def node_pids(self) -> dict[str, int]:
        return {n["id"]: int(n["pid"]) for n in self.ps()["nodes"] if n["pid"]}

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM (orderly shutdown: sources first, drain, flush); the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            kill_tree(self.pid)
            self.proc.wait(5)
            raise EngineFailed(f"engine did not stop within {timeout_s:g} s") from None

    def cleanup(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None:
            if self.proc.poll() is None:
                kill_tree(self.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        marker = f"MEDIAENGINE_RUNTIME_DIR={self.runtime_dir}"
        deadline = time.monotonic() + 5
        while processes_with_env(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in processes_with_env(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.runtime_dir.exists():
            for child in self.runtime_dir.iterdir():
                with contextlib.suppress(ValueError):
                    if list_segments(child.name):
                        unlink_segments(child.name)
            shutil.rmtree(self.runtime_dir, ignore_errors=True)


class EventWatcher:
    """Subscribe to an engine's `events.*` PUB topics; `drain()` returns what arrived so far."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"events.")
        self.sock.connect(endpoint)
        self.events: list[dict[str, Any]] = []

    def drain(self, timeout_s: float = 0.0) -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not self.sock.poll(int(left * 1000)):
                break
            _topic, raw = self.sock.recv_multipart()
            ev = msgpack.unpackb(raw, raw=False)
            ev["recv_mono_ns"] = time.monotonic_ns()
            new.append(ev)
            if time.monotonic() >= deadline:
                break
        self.events.extend(new)
        return new

    def wait_for(self, pred: Any, timeout_s: float) -> dict[str, Any]:
        for ev in self.events:
            if pred(ev):
                return ev
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for ev in self.drain(0.05):
                if pred(ev):
                    return ev
        raise EngineFailed(f"event not seen within {timeout_s:g} s")

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self) -> EventWatcher:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
