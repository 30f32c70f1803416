"""Run a real engine for a benchmark: a subprocess that is always cleaned up, its control and events.

`BenchEngine.start(topology, workdir)` writes the topology (a dict) to a file and starts
`python -m tools.bench._host run FILE` (the real CLI plus the benchmark kinds) through
`mediaengine.control.process.EngineProcess`, the class the Python API and the tests start engines
with: its own session, its own MEDIAENGINE_RUNTIME_DIR, and on exit (`with`, or `cleanup()`) nothing
left of it - its process group, any process of its launch, its shared-memory segments and its runtime
dir are gone, even when the benchmark failed.  What is the benchmark's own: the topology file, the
launcher module, dying with the benchmark (PR_SET_PDEATHSIG), and failures as `EngineFailed` with the
tail of the engine's log.
"""

from __future__ import annotations

import itertools
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack
import yaml
import zmq
from mediaengine.control.process import EngineProcess, Leftovers
from mediaengine.sdk.errors import EngineError

from ._procs import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
HOST_MODULE = "tools.bench._host"
_counter = itertools.count()


class EngineFailed(RuntimeError):
    pass


class BenchEngine(EngineProcess):
    """An engine of a benchmark; `BenchEngine.start(topology, workdir, *run_args)`, best used with `with`."""

    @classmethod
    def start(cls, topology: dict[str, Any], workdir: str | Path, *args: str,
              env: dict[str, str] | None = None) -> BenchEngine:
        n = next(_counter)
        work = Path(workdir)
        path = work / f"topology-{n}.yaml"
        path.write_text(yaml.safe_dump(topology, sort_keys=False))
        runtime_dir = work / f"runtime-{n}"
        runtime_dir.mkdir(mode=0o700)
        return cls.launch(path, runtime_dir=runtime_dir, log_path=work / f"engine-{n}.log", args=args, env=env,
                          cwd=ROOT, module=HOST_MODULE, preexec_fn=die_with_parent)

    def _failed(self, what: str) -> EngineFailed:
        return EngineFailed(f"{what}; log tail:\n{self.log[-3000:]}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise self._failed(f"engine exited with {self.proc.returncode} ({self.final_error()})")

    def wait_running(self, timeout: float = 30.0) -> dict[str, Any]:
        try:
            return super().wait_running(timeout)
        except EngineError as exc:
            raise self._failed(f"not every node running after {timeout:g} s ({exc})") from None

    def command(self, node: str, command: str, **args: Any) -> Any:
        return self.request("command", node=node, command=command, args=args)

    def wait_metrics(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Wait until every running node has published metrics at least once."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            st = self.ps()
            if all(n["metrics"] for n in st["nodes"]):
                return st
            time.sleep(0.1)
        raise EngineFailed("nodes did not publish metrics")

    def node_pids(self) -> dict[str, int]:
        return {n["id"]: int(n["pid"]) for n in self.ps()["nodes"] if n["pid"]}

    def stop(self, timeout: float = 20.0) -> int:
        """Orderly shutdown (sources first, drain, flush); the exit code.  EngineFailed if it had to be
        killed."""
        code = super().stop(timeout)
        if self.forced:
            raise self._failed(f"engine did not stop within {timeout:g} s")
        return code

    def cleanup(self, grace_s: float = 5.0) -> Leftovers:
        """Everything of the engine gone, its runtime dir too (it is this engine's own)."""
        found = super().cleanup(grace_s)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
        return found


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


def encoder_frames(eng: BenchEngine, node: str = "venc") -> int:
    """Frames the encoder node has taken in so far (its `frames_in` metric)."""
    for n in eng.ps()["nodes"]:
        if n["id"] == node:
            return int(sum((n["metrics"].get("frames_in") or {}).values()))
    raise RuntimeError(f"no {node} node")


@dataclass
class CpuWindow:
    """One measurement window of a running engine: the encoder's input rate and the CPU of its process tree."""

    fps: float
    cpu_s: float
    wall_s: float
    per_node_cpu_s: dict[str, float]  # node id -> CPU seconds of its actor process


def measure_cpu_window(eng: BenchEngine, window_s: float) -> CpuWindow:
    """Sample the engine's whole process tree for `window_s` (supervisor and fork server included) and
    count the encoder's input frames over the same window; the engine must still be alive at the end."""
    from ._procs import TreeSampler

    eng.wait_metrics()
    pids = eng.node_pids()
    frames0, t0 = encoder_frames(eng), time.monotonic()
    sampler = TreeSampler([eng.pid], interval_s=0.5)
    sampler.start()
    time.sleep(window_s)
    sampler.stop()
    frames1, t1 = encoder_frames(eng), time.monotonic()
    eng.check_alive()
    by_pid = sampler.cpu_by_pid()
    return CpuWindow((frames1 - frames0) / (t1 - t0), sampler.cpu_s, sampler.wall_s,
                     {nid: by_pid.get(pid, 0.0) for nid, pid in pids.items()})
