"""One engine process started from Python: launch it, find it, talk to it, stop it, leave nothing behind.

    proc = EngineProcess.launch("topologies/demo.yaml", runtime_dir=rdir, log_path=tmp / "engine.log",
                                duration=10)
    try:
        proc.wait_running()                    # every node running; the engine's typed error if it exits
        print(proc.request("ps")["nodes"])
        proc.stop()                            # in order; SIGTERM, then SIGKILL, after the timeout
    finally:
        proc.cleanup()                         # its processes, segments and runtime-dir entry are gone

This is the one place that starts `python -m mediaengine.cli run TOPOLOGY`: the Python API
(`Engine.start`, `AsyncEngine.start`), the tests (`tests/enginekit.py`) and the benchmarks
(`tools/bench/_engine.py`, which passes its own launcher module) build on it.

- The engine runs in a session of its own (its own process group: a Ctrl-C meant for the caller does not
  reach it) with `$MEDIAENGINE_RUNTIME_DIR` set to `runtime_dir`, where it writes `<engine id>/engine.json`;
  the process is matched to its engine.json by pid and start time.
- Overrides (`--set` items, which may hold stream keys) travel in `$MEDIAENGINE_SET`, readable by this user
  only, never on the command line every local user can read (engine/cli/argv.py, docs/security.md).
- Every process of one launch carries `MEDIAENGINE_LAUNCH_ID=<random token>` in its environment (actors
  inherit it through the fork server), so `cleanup` finds whatever left the process group, and only that:
  the runtime directory may be shared with other engines (the API's default one is).
- The engine writes its exit status and final error to a result file (`run --result-file`);
  `final_error()` reads it, and falls back to the log only when the engine was killed before it could.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ..cli.argv import SET_ENV
from ..runtime.ring import list_segments, unlink_segments
from ..sdk.errors import EngineError, ResourceError, TimeoutError_, error_from_wire
from ..supervision.rundir import process_start_time, processes_with_env, read_info
from .client import ControlClient

__all__ = ["CLI_MODULE", "LAUNCH_MARKER", "EngineProcess", "Leftovers", "child_env", "error_from_log",
           "final_error_of", "not_running", "override_items", "run_argv", "wait_until_running"]

log = logging.getLogger("mediaengine.process")

#: the module `python -m` runs: the engine's CLI (the benchmarks pass `tools.bench._host`)
CLI_MODULE = "mediaengine.cli"
#: environment variable carrying one launch's token into every process it starts
LAUNCH_MARKER = "MEDIAENGINE_LAUNCH_ID"
_POLL_S = 0.02


# ---- what a launch is made of (pure) ----------------------------------------------------------------------

def run_argv(topology: str | os.PathLike[str], *, duration: float | None = None, allow_faults: bool = False,
             result_path: str | os.PathLike[str] | None = None, args: Sequence[str] = (),
             module: str = CLI_MODULE) -> list[str]:
    """The engine's command line: never an override (they may hold stream keys; see `child_env`)."""
    argv = [sys.executable, "-m", module, "run", str(topology)]
    if duration is not None:
        argv += ["--duration", repr(float(duration))]
    if allow_faults:
        argv.append("--allow-faults")
    if result_path is not None:
        argv += ["--result-file", str(result_path)]
    return argv + [str(a) for a in args]


def override_items(overrides: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """`--set` items (`node.option=value`, the value YAML-readable) for `overrides`."""
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def child_env(env: Mapping[str, str] | None, runtime_dir: str | os.PathLike[str], overrides: Sequence[str] = (),
              *, launch_id: str | None = None) -> dict[str, str]:
    """The engine's environment: this process's, then `env`, then the runtime dir and the launch marker.

    Overrides travel in `$MEDIAENGINE_SET` (readable by this user only), not on the command line that every
    local user can read (engine/cli/argv.py, docs/security.md); none given, none is inherited either.
    """
    full = {**os.environ, **(env or {})}
    full["MEDIAENGINE_RUNTIME_DIR"] = str(runtime_dir)
    full.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the log file as they are written
    full.pop(SET_ENV, None)
    if overrides:
        full[SET_ENV] = json.dumps(list(overrides))
    full.pop(LAUNCH_MARKER, None)
    if launch_id is not None:
        full[LAUNCH_MARKER] = launch_id
    return full


_CODE_SUFFIX = re.compile(r"\s*\(error (\d+) (\w+)\)\s*$")
_SUPERVISOR_FAIL = re.compile(r"engine stopped: (.*) \(error (\d+)\)\s*$")


def error_from_log(text: str, returncode: int | None) -> EngineError:
    """The typed error an engine process printed before it exited (the CLI's `error: ... (error N Name)`).

    Only for an engine that wrote no result file (killed before it could): `final_error` prefers that file.
    """
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.startswith("error: "):
            m = _CODE_SUFFIX.search(line)
            msg = line[len("error: "): m.start()] if m else line[len("error: "):]
            if m is None and i + 1 < len(lines):
                m = _CODE_SUFFIX.match(lines[i + 1])
            return error_from_wire({"code": int(m.group(1)) if m else None, "message": msg})
        m = _SUPERVISOR_FAIL.search(line)
        if m:
            return error_from_wire({"code": int(m.group(2)), "message": m.group(1)})
    tail = " | ".join(lines[-5:]) or "no output"
    return EngineError(f"the engine exited with status {returncode}: {tail}")


def final_error_of(result: Mapping[str, Any] | None, log_text: str, returncode: int | None) -> EngineError:
    """The typed error an engine exited with: the one in its result file; from its log only if it wrote
    no result file (killed by a signal before it could)."""
    if result is not None and isinstance(result.get("error"), dict):
        return error_from_wire(result["error"])
    if result is not None:
        return EngineError(f"the engine exited with status {result.get('exit', returncode)}")
    return error_from_log(log_text, returncode)


def not_running(status: Mapping[str, Any]) -> list[str]:
    """`node (state)` for each node of a `ps` result that is not running."""
    return [f"{n['id']} ({n['state']})" for n in status.get("nodes", []) if n.get("state") != "running"]


def wait_until_running(ps: Callable[[], Mapping[str, Any]], check: Callable[[], None], timeout: float,
                       poll_s: float = 0.05) -> dict[str, Any]:
    """Ask `ps()` until every node runs and return its result; `check()` raises if the engine has gone.

    A `ps` that times out counts as "not yet"; after `timeout` seconds, TimeoutError_ names the nodes that
    still do not run.
    """
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while True:
        check()
        with contextlib.suppress(TimeoutError_):
            status = dict(ps())
            if status.get("nodes") and not not_running(status):
                return status
        if time.monotonic() >= deadline:
            raise TimeoutError_(f"not every node runs after {timeout:g}s: "
                                f"{', '.join(not_running(status)) or 'no answer'}")
        time.sleep(poll_s)


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class Leftovers:
    """What `cleanup` found of an engine and removed: a clean exit leaves all of it empty."""

    was_running: bool = False  # the engine itself still ran, and was killed with its process group
    processes: list[int] = field(default_factory=list)  # outside the group or outliving it: SIGKILLed
    segments: list[str] = field(default_factory=list)  # its shared-memory segments: unlinked
    entries: list[Path] = field(default_factory=list)  # its runtime-dir entries: removed

    @property
    def clean(self) -> bool:
        return not (self.was_running or self.processes or self.segments or self.entries)


# ---- the process -------------------------------------------------------------------------------------------

class EngineProcess:
    """One `python -m mediaengine.cli run` process started here (`launch`), and everything it leaves.

    Not thread-safe: one thread drives it (its control client is one ZeroMQ socket).
    """

    def __init__(self, proc: subprocess.Popen[bytes], *, runtime_dir: Path, log_path: Path, result_path: Path,
                 launch_id: str, timeout_s: float = 5.0) -> None:
        """Use `launch`: this wraps a process it started."""
        self.proc = proc
        self.pid = proc.pid
        self.pid_start = process_start_time(proc.pid)  # a zombie still has it; matched against engine.json
        self.runtime_dir = runtime_dir
        self.log_path = log_path
        self.result_path = result_path
        self.launch_id = launch_id
        self.timeout_s = timeout_s
        self.engine_ids: set[str] = set()  # every engine id this process had (one, once it is up)
        self.last_info: dict[str, Any] | None = None  # its engine.json as last read (kept once removed)
        self.forced = False  # `stop` had to terminate or kill it
        self._client: ControlClient | None = None
        self._saved_log: str | None = None
        self._saved_result: dict[str, Any] | None = None

    @classmethod
    def launch(cls, topology: str | os.PathLike[str], *, runtime_dir: str | os.PathLike[str],
               log_path: str | os.PathLike[str], result_path: str | os.PathLike[str] | None = None,
               duration: float | None = None, allow_faults: bool = False, args: Sequence[str] = (),
               overrides: Sequence[str] = (), env: Mapping[str, str] | None = None,
               cwd: str | os.PathLike[str] | None = None, module: str = CLI_MODULE,
               preexec_fn: Callable[[], Any] | None = None, timeout_s: float = 5.0) -> Self:
        """Start `python -m MODULE run TOPOLOGY ...` and return at once (`wait_started`/`wait_running` wait).

        stdout and stderr go to `log_path`; the result file defaults to `<log_path minus suffix>.result.json`;
        `overrides` are `--set` items (`override_items`), passed in the environment; `env` is added to this
        process's environment; `timeout_s` bounds each control request.
        """
        log_file_path = Path(log_path)
        result = Path(result_path) if result_path is not None else log_file_path.with_suffix(".result.json")
        launch_id = secrets.token_hex(8)
        argv = run_argv(topology, duration=duration, allow_faults=allow_faults, result_path=result, args=args,
                        module=module)
        with open(log_file_path, "wb") as log_file:  # the child has its own descriptor
            proc = subprocess.Popen(argv, env=child_env(env, runtime_dir, overrides, launch_id=launch_id),
                                    cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=preexec_fn)
        return cls(proc, runtime_dir=Path(runtime_dir), log_path=log_file_path, result_path=result,
                   launch_id=launch_id, timeout_s=timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.cleanup()

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        """The exit status once it has exited (negative: killed by that signal), else None."""
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def log(self) -> str:
        """What the engine printed (stdout and stderr); kept in memory by `cleanup`."""
        if self._saved_log is not None:
            return self._saved_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def result(self) -> dict[str, Any] | None:
        """The result file the engine wrote on exit (`{"exit": status, "error": {...} | null}`), if any."""
        if self._saved_result is None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                self._saved_result = dict(json.loads(self.result_path.read_text()))
        return self._saved_result

    def final_error(self) -> EngineError:
        """The typed error the engine exited with (`final_error_of` its result file, or its log)."""
        return final_error_of(self.result(), self.log, self.proc.poll())

    def check_alive(self) -> None:
        """Raise the engine's final error if it has exited."""
        if self.proc.poll() is not None:
            raise self.final_error()

    def _ours(self, info: Mapping[str, Any]) -> bool:
        return info.get("pid") == self.pid and info.get("pid_start") in (None, self.pid_start)

    def info(self) -> dict[str, Any] | None:
        """Its engine.json (control and events endpoints, engine id, actors), None until it is written or
        once the engine has removed it."""
        for child in sorted(self.runtime_dir.iterdir()) if self.runtime_dir.is_dir() else ():
            info = read_info(child)
            if info is not None and self._ours(info):
                self.engine_ids.add(str(info.get("engine_id", child.name)))
                self.last_info = info
                return info
        return None

    def poll_started(self) -> dict[str, Any] | None:
        """engine.json once the engine is up (it writes it after binding its sockets); None while it is
        starting; its final error if it exited first."""
        info = self.info()
        if info is None and self.proc.poll() is not None:
            raise self.final_error()
        return info

    def wait_started(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for engine.json (see `poll_started`); TimeoutError_ after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (info := self.poll_started()) is None:
            if time.monotonic() >= deadline:
                raise TimeoutError_(f"the engine (pid {self.pid}) did not come up within {timeout:g}s")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(_POLL_S)  # returns at once if it exits meanwhile
        return info

    # ---- control ---------------------------------------------------------------------------------------
    def client(self) -> ControlClient:
        """A control client for it (one, kept; the CURVE keys from engine.json); ResourceError before it
        is up."""
        if self._client is None or self._client.sock.closed:
            info = self.info() or self.last_info
            if info is None:
                raise ResourceError(f"the engine (pid {self.pid}) is not up: no engine.json in {self.runtime_dir}")
            self._client = ControlClient(str(info["control"]), timeout_s=self.timeout_s,
                                         curve_keys=info.get("curve_keys"))
        return self._client

    def request(self, msg_type: str, **fields: Any) -> Any:
        """A control request (docs/protocol.md); the `result` of its `ok` reply, or its typed error."""
        return self.client().request(msg_type, **fields)

    def ps(self) -> dict[str, Any]:
        return dict(self.request("ps"))

    def wait_running(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until every node runs; the `ps` result.  Its final error if it exits first, TimeoutError_
        after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        self.wait_started(timeout)
        return wait_until_running(self.ps, self.check_alive, max(0.0, deadline - time.monotonic()))

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ---- ending ----------------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> int:
        """Wait for it to exit; its exit status.  TimeoutError_ after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError_(f"the engine (pid {self.pid}) did not exit within {timeout:g}s") from None

    def stop(self, timeout: float = 30.0) -> int:
        """Stop in order (sources first, drain, finalise): a `stop` request, or SIGTERM before it is up;
        after `timeout` seconds, `terminate` (and `forced` is set).  The exit status."""
        if self.proc.poll() is None:
            try:
                if self.info() is None:
                    raise ResourceError("not up yet")
                self.request("stop")
            except EngineError:  # not up (or not answering): the signal does the same
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except TimeoutError_:
            log.warning("engine pid %d did not stop within %gs: terminating it", self.pid, timeout)
            self.forced = True
            return self.terminate()

    def terminate(self, grace_s: float = 5.0) -> int:
        """SIGTERM its whole process group, SIGKILL after `grace_s` seconds; the exit status."""
        if self.proc.poll() is None:  # not reaped: its pid, and so its group id, is still ours
            _killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                return self.proc.wait(grace_s)
        return self.kill()

    def kill(self) -> int:
        """SIGKILL its whole process group; the exit status."""
        if self.proc.poll() is None:
            _killpg(self.pid, signal.SIGKILL)
        return self.proc.wait()

    def leftover_processes(self) -> list[int]:
        """Live processes of this launch (its marker in their environment), the engine included."""
        return processes_with_env(f"{LAUNCH_MARKER}={self.launch_id}\0")

    def cleanup(self, grace_s: float = 5.0) -> Leftovers:
        """Make sure nothing of it is left, and say what was: kill the engine's process group if it still
        runs, give processes of this launch outside it `grace_s` seconds to exit (actors follow their
        supervisor) and SIGKILL the rest, unlink its shared-memory segments, remove its runtime-dir entry.
        The log and result stay readable (`log`, `result()`).  Idempotent."""
        self.close_client()
        found = Leftovers()
        self.info()  # the engine id of a killed engine, from the engine.json it could not remove
        if self.proc.poll() is None:
            found.was_running = True
            self.kill()
        deadline = time.monotonic() + grace_s
        while (procs := self.leftover_processes()) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        for pid in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        found.processes = procs
        deadline = time.monotonic() + grace_s
        while self.leftover_processes() and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        for engine_id in sorted(self.engine_ids):
            found.segments += list_segments(engine_id)
            unlink_segments(engine_id)
            entry = self.runtime_dir / engine_id
            if entry.is_dir() and not entry.is_symlink():
                found.entries.append(entry)
                shutil.rmtree(entry, ignore_errors=True)
        self._saved_log = self.log
        self.result()
        return found
