"""Drive engines from Python: start a topology, watch its events, change it live, stop it.

    from mediaengine import Engine

    with Engine.start("topologies/demo.yaml", overrides={"rec.path": "/tmp/demo.mp4"}) as eng:
        eng.wait_running()
        eng.subscribe(lambda topic, ev: print(ev["node"], ev["name"]))  # `started` of every node included
        eng.set("venc", bitrate_kbps=1500)
        eng.command("venc", "keyframe")
        print(eng.ps()["nodes"])
    # leaving the block stops the engine in order (sources first, then drain)

    async with await AsyncEngine.start(topology_dict) as eng:      # the same, with asyncio
        await eng.wait_running()
        async for topic, ev in eng.events():
            ...

An engine is a `python -m mediaengine.cli run` subprocess (for a dict, a temporary YAML file), found through
its runtime directory once it has bound its sockets; `attach()` talks to one that is already running.
Every call is a control request (docs/protocol.md); failures raise the `mediaengine.sdk.errors` class that
carries the protocol's numeric code (docs/errors.md): e.g. `set` of an unknown option raises
`OptionError` (1108), a command to an unknown node `UnknownTargetError` (1404).  An engine that exits
during `start`/`wait_running` raises the error it printed, with its code.

`subscribe` replays the events the engine published before the subscription (the last 200, from
`snapshot`) and then delivers live ones, each exactly once.  The synchronous `Engine` is not
thread-safe (one thread drives it; each subscription has its own thread and sockets).

A started engine runs in its own session (process group): a Ctrl-C meant for your program does not
reach it, and it outlives your program unless stopped - use `with` (or `stop()`), which stops it in
order and kills the whole group if it does not end within the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from ..cli.argv import SET_ENV
from ..sdk.errors import EngineError, FieldError, ResourceError, TimeoutError_, error_from_wire
from ..supervision.curve import client_keys, connectable
from ..supervision.rundir import base_dir, check_private, engine_alive, read_info
from . import protocol as proto
from .client import ControlClient, result_of
from .events import Replay, Subscriber, decode_pub, topic_matches

__all__ = ["FAULTS", "AsyncEngine", "AsyncSubscription", "Engine", "Subscription", "fault_args"]

log = logging.getLogger("mediaengine.api")

ROOT = Path(__file__).resolve().parents[1]  # holds engine/ and actors/
FAULTS = proto.FAULTS
EventCallback = Callable[[str, dict[str, Any]], Any]
_HANDSHAKE = zmq.EVENT_HANDSHAKE_SUCCEEDED


# ---- shared helpers (pure) ------------------------------------------------------------------------------

def fault_args(fault: str, value: int | str | None = None) -> dict[str, Any]:
    """The `args` of a `fault` request: `slow` takes milliseconds, `exit` an exit code, others nothing."""
    if fault not in FAULTS:
        raise FieldError(f"unknown fault {fault!r}; faults: {', '.join(FAULTS)}")
    if fault in ("slow", "exit"):
        what = "MS (milliseconds per hook call)" if fault == "slow" else "CODE (exit status)"
        try:
            number = int(value) if value is not None and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or number < 0 or (fault == "exit" and number > 255):
            raise FieldError(f"fault {fault!r} needs {what}, got {value!r}")
        return {"ms": number} if fault == "slow" else {"code": number}
    if value is not None:
        raise FieldError(f"fault {fault!r} takes no value, got {value!r}")
    return {}


_CODE_SUFFIX = re.compile(r"\s*\(error (\d+) (\w+)\)\s*$")
_SUPERVISOR_FAIL = re.compile(r"engine stopped: (.*) \(error (\d+)\)\s*$")


def error_from_log(text: str, returncode: int | None) -> EngineError:
    """The typed error an engine process printed before it exited (the CLI's `error: ... (error N Name)`)."""
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


def _topology_file(topology: str | os.PathLike[str] | Mapping[str, Any], workdir: Path) -> Path:
    if isinstance(topology, Mapping):
        path = workdir / "topology.yaml"
        path.write_text(yaml.safe_dump(json.loads(json.dumps(topology)), sort_keys=False))
        return path
    return Path(topology).resolve()


def _run_argv(path: Path, *, duration: float | None, allow_faults: bool, args: Sequence[str]) -> list[str]:
    """The engine's command line: never an override (they may hold stream keys; see `_child_env`)."""
    argv = [sys.executable, "-m", "mediaengine.cli", "run", str(path)]
    if duration is not None:
        argv += ["--duration", repr(float(duration))]
    if allow_faults:
        argv.append("--allow-faults")
    return argv + [str(a) for a in args]


def override_items(overrides: Mapping[str, Any] | Sequence[str]) -> list[str]:
    """`--set` items (`node.option=value`, the value YAML-readable) for `overrides`."""
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def _child_env(env: Mapping[str, str] | None, runtime_dir: Path, overrides: Sequence[str] = ()) -> dict[str, str]:
    """The engine's environment.  Overrides travel in `$MEDIAENGINE_SET` (readable by this user only),
    not on the command line that every local user can read (engine/cli/argv.py, docs/security.md)."""
    full = {**os.environ, **(env or {})}
    full["MEDIAENGINE_RUNTIME_DIR"] = str(runtime_dir)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full.get("PYTHONPATH", "")) if p)
    full.pop(SET_ENV, None)
    if overrides:
        full[SET_ENV] = json.dumps(list(overrides))
    return full


def _resolve_runtime_dir(runtime_dir: str | os.PathLike[str] | None, env: Mapping[str, str] | None) -> Path:
    chosen = runtime_dir or (env or {}).get("MEDIAENGINE_RUNTIME_DIR")
    if chosen is None:
        return base_dir()
    path = Path(chosen)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(path)  # ours, not a link, writable by nobody else (docs/security.md)
    return path


def _info_of_pid(runtime_dir: Path, pid: int) -> dict[str, Any] | None:
    for child in runtime_dir.iterdir() if runtime_dir.is_dir() else []:
        info = read_info(child)
        if info is not None and info.get("pid") == pid:
            return info
    return None


def _find_in(runtime_dir: Path, engine_id: str | None) -> dict[str, Any]:
    live = [i for c in sorted(runtime_dir.iterdir()) if (i := read_info(c)) is not None and engine_alive(i)]
    if engine_id:
        for info in live:
            if info.get("engine_id") == engine_id:
                return info
        raise ResourceError(f"no running engine {engine_id!r} in {runtime_dir}")
    if len(live) != 1:
        raise ResourceError(f"{len(live)} engines are running in {runtime_dir}; name one with engine_id")
    return live[0]


def _events_endpoint(control: str, status: Mapping[str, Any]) -> str:
    if control.startswith("tcp://") and status.get("events_public"):
        return connectable(str(status["events_public"]), control[len("tcp://"):].rsplit(":", 1)[0])
    return str(status["events"])


def _not_running(status: Mapping[str, Any]) -> list[str]:
    return [f"{n['id']} ({n['state']})" for n in status.get("nodes", []) if n.get("state") != "running"]


class _Process:
    """What `start` owns: the subprocess, its temporary directory, log and result file."""

    def __init__(self, workdir: Path, log_path: Path) -> None:
        self.workdir = workdir
        self.log_path = log_path
        self.result_path = workdir / "result.json"  # `mediaengine run --result-file`: exit status, final error
        self.saved_log: str | None = None
        self.saved_result: dict[str, Any] | None = None

    def result(self) -> dict[str, Any] | None:
        if self.saved_result is None:
            with contextlib.suppress(OSError, ValueError):
                self.saved_result = dict(json.loads(self.result_path.read_text()))
        return self.saved_result

    def final_error(self, returncode: int | None) -> EngineError:
        """The typed error the engine wrote into its result file; from its log only if it wrote none
        (killed by a signal before it could)."""
        result = self.result()
        if result is not None and isinstance(result.get("error"), dict):
            return error_from_wire(result["error"])
        if result is not None:
            return EngineError(f"the engine exited with status {result.get('exit', returncode)}")
        return error_from_log(self.log_text(), returncode)

    def log_text(self) -> str:
        if self.saved_log is not None:
            return self.saved_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.saved_log = self.log_text()
        self.result()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# ---- synchronous API --------------------------------------------------------------------------------------

class Subscription:
    """A SUB socket on its own thread calling `callback(topic, payload)`; `close()` ends it."""

    def __init__(self, events: str, callback: EventCallback, topics: Sequence[str], *, control: str,
                 curve_keys: str | os.PathLike[str] | None, replay: bool, timeout_s: float) -> None:
        self.topics = tuple(topics)
        self.callback = callback
        self.error: BaseException | None = None
        self._args = (events, control, curve_keys, replay, timeout_s)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mediaengine-subscription", daemon=True)
        self._thread.start()
        self._ready.wait(timeout_s * 2 + 1)
        if self.error is not None:
            self._thread.join(1)
            raise self.error

    def _run(self) -> None:
        events, control, curve_keys, replay, timeout_s = self._args
        sub: Subscriber | None = None
        try:
            sub = Subscriber(events, self.topics, curve_keys=curve_keys)
            sub.wait_connected(timeout_s)
            dedupe = Replay()
            backlog: list[dict[str, Any]] = []
            if replay:
                with ControlClient(control, timeout_s=timeout_s, curve_keys=curve_keys) as client:
                    backlog = dedupe.replayed(client.request("snapshot").get("events_recent", []), self.topics)
            self._ready.set()
            for ev in backlog:
                self.callback(f"events.{ev.get('node')}", ev)
            while not self._stop.is_set():
                msg = sub.recv(100)
                if msg is not None and not dedupe.is_duplicate(*msg):
                    self.callback(*msg)
        except BaseException as exc:  # handed to the caller (start) or kept in .error (later); never lost
            self.error = exc
            if self._ready.is_set():
                log.error("subscription callback failed: %r; the subscription ended", exc)
        finally:
            self._ready.set()
            if sub is not None:
                sub.close()

    @property
    def active(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(5)


def _prepare_run(topology: str | os.PathLike[str] | Mapping[str, Any], *, duration: float | None,
                 allow_faults: bool, env: Mapping[str, str] | None, runtime_dir: str | os.PathLike[str] | None,
                 args: Sequence[str]) -> tuple[Path, _Process, list[str]]:
    """What `start` needs before launching: the runtime dir, a work dir owning the log, the command line."""
    rdir = _resolve_runtime_dir(runtime_dir, env)
    workdir = Path(tempfile.mkdtemp(prefix="mediaengine-api-"))
    owned = _Process(workdir, workdir / "engine.log")
    try:
        argv = _run_argv(_topology_file(topology, workdir), duration=duration, allow_faults=allow_faults,
                         args=["--result-file", str(owned.result_path), *args])
    except BaseException:
        owned.cleanup()
        raise
    return rdir, owned, argv


def _started(rdir: Path, pid: int, returncode: int | None, owned: _Process) -> dict[str, Any] | None:
    """engine.json of the engine process `pid` once it is up; its typed error if it exited first."""
    info = _info_of_pid(rdir, pid)
    if info is not None:
        return info
    if returncode is not None:
        err = owned.final_error(returncode)
        owned.cleanup()
        raise err
    return None


class Engine:
    """A running engine: started here (`start`) or found (`attach`).  Use as a context manager."""

    def __init__(self, info: Mapping[str, Any], *, proc: subprocess.Popen[bytes] | None = None,
                 owned: _Process | None = None, curve_keys: str | os.PathLike[str] | None = None,
                 timeout_s: float = 5.0) -> None:
        self.info = dict(info)
        self.engine_id: str = str(info.get("engine_id", ""))
        self.control: str = str(info["control"])
        self.events: str = str(info["events"])
        self.pid: int | None = int(info["pid"]) if info.get("pid") else None
        self.proc = proc
        self._owned = owned
        self.curve_keys = curve_keys if curve_keys is not None else info.get("curve_keys")
        self.timeout_s = timeout_s
        self._client = ControlClient(self.control, timeout_s=timeout_s, curve_keys=self.curve_keys)
        self._subs: list[Subscription] = []

    # ---- lifecycle ----------------------------------------------------------------------------------
    @classmethod
    def start(cls, topology: str | os.PathLike[str] | Mapping[str, Any], *, duration: float | None = None,
              allow_faults: bool = False, env: Mapping[str, str] | None = None,
              runtime_dir: str | os.PathLike[str] | None = None,
              overrides: Mapping[str, Any] | Sequence[str] = (), args: Sequence[str] = (),
              start_timeout: float = 30.0) -> Engine:
        """Run `topology` (a file, or a dict written to a temporary YAML file) in a new engine process.

        `overrides` are `--set` options (`{"rec.path": "/tmp/x.mp4"}`); `args` extra `run` arguments
        (e.g. `["--metrics-port", "9100"]`).  Returns once the engine has bound its control socket;
        raises the engine's typed error if it exits first (e.g. a TopologyError for a bad topology).
        """
        rdir, owned, argv = _prepare_run(topology, duration=duration, allow_faults=allow_faults, env=env,
                                         runtime_dir=runtime_dir, args=args)
        try:
            with open(owned.log_path, "wb") as log_file:
                proc = subprocess.Popen(argv, env=_child_env(env, rdir, override_items(overrides)),
                                        stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        except BaseException:
            owned.cleanup()
            raise
        deadline = time.monotonic() + start_timeout
        while True:
            info = _started(rdir, proc.pid, proc.poll(), owned)
            if info is not None:
                return cls(info, proc=proc, owned=owned)
            if time.monotonic() > deadline:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                owned.cleanup()
                raise TimeoutError_(f"the engine did not come up within {start_timeout:g}s")
            time.sleep(0.02)

    @classmethod
    def attach(cls, engine_id: str | None = None, *, runtime_dir: str | os.PathLike[str] | None = None,
               control: str | None = None, events: str | None = None,
               curve_keys: str | os.PathLike[str] | None = None, timeout_s: float = 5.0) -> Engine:
        """An engine already running: by id, the only one in `runtime_dir`, or by endpoint (remote)."""
        if control is None:
            info = _find_in(_resolve_runtime_dir(runtime_dir, None), engine_id)
            return cls(info, curve_keys=curve_keys, timeout_s=timeout_s)
        with ControlClient(control, timeout_s=timeout_s, curve_keys=curve_keys) as c:
            status = c.request("ps")
        info = {"engine_id": status.get("engine_id"), "control": control,
                "events": events or _events_endpoint(control, status)}
        return cls(info, curve_keys=curve_keys, timeout_s=timeout_s)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        if self._owned is not None:
            self.stop()
        else:
            self.close()

    @property
    def log(self) -> str:
        """What the engine process printed (started engines only)."""
        return self._owned.log_text() if self._owned is not None else ""

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return engine_alive(self.info) if self.pid else True

    def _exited_error(self) -> EngineError:
        assert self.proc is not None
        if self._owned is not None:
            return self._owned.final_error(self.proc.returncode)
        return error_from_log(self.log, self.proc.returncode)

    # ---- requests ----------------------------------------------------------------------------------------
    def request(self, msg_type: str, **fields: Any) -> Any:
        """Any control request (docs/protocol.md); the `result` of its `ok` reply."""
        return self._client.request(msg_type, **fields)

    def wait_running(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until every node runs; returns the `ps` result."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise self._exited_error()
            with contextlib.suppress(TimeoutError_):
                status = self.ps()
                if status.get("nodes") and not _not_running(status):
                    return status
            time.sleep(0.05)
        raise TimeoutError_(f"not every node runs after {timeout:g}s: {', '.join(_not_running(status)) or '?'}")

    def ps(self) -> dict[str, Any]:
        """`ps` (as `mediaengine ps`): every node's state, pid, restarts, fps and metrics.  A node's own
        figures, the actor command `stats`, are `command(node, "stats")`."""
        return dict(self.request("ps"))

    def snapshot(self) -> dict[str, Any]:
        """`ps` plus the last 200 events (`events_recent`)."""
        return dict(self.request("snapshot"))

    def command(self, node: str, command: str, **args: Any) -> Any:
        """A node command (e.g. `keyframe`, `snapshot`, built in: `stats`, `stop`, `pause`/`resume`)."""
        return self.request("command", node=node, command=command, args=args)

    def set(self, node: str, **options: Any) -> dict[str, Any]:
        """Change live options; OptionError (1108) names an unknown, fixed, mistyped or out-of-range one."""
        return dict(self.request("set", node=node, options=options))

    def fault(self, node: str, fault: str, value: int | None = None) -> dict[str, Any]:
        """Inject a fault (`kill`, `hang`, `crash`, `slow` MS, `exit` CODE, `corrupt`); NotAllowedError
        (1407) unless the engine runs with allow_faults."""
        return dict(self.request("fault", node=node, fault=fault, args=fault_args(fault, value)))

    def subscribe(self, callback: EventCallback, topics: Sequence[str] = ("events.",), *,
                  replay: bool = True) -> Subscription:
        """Call `callback(topic, payload)` on a background thread for each event (and/or `metrics.`
        message); with `replay`, the events published before this call come first."""
        sub = Subscription(self.events, callback, topics, control=self.control, curve_keys=self.curve_keys,
                           replay=replay, timeout_s=self.timeout_s)
        self._subs.append(sub)
        return sub

    # ---- ending ----------------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the engine to exit; its exit status (None for an attached engine)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.proc is not None:
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise TimeoutError_(f"the engine did not exit within {timeout:g}s") from None
        while engine_alive(self.info):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError_(f"the engine did not exit within {timeout:g}s")
            time.sleep(0.05)
        return None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop in order (sources first, drain, finalise); after `timeout`, terminate and kill."""
        try:
            if self.alive():
                with contextlib.suppress(EngineError):
                    self.request("stop")
                try:
                    return self.wait(timeout)
                except TimeoutError_:
                    if self.proc is None:
                        raise
                    log.warning("engine %s did not stop within %gs: killing it", self.engine_id, timeout)
                    _killpg(self.proc.pid, signal.SIGTERM)
                    try:
                        return self.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        _killpg(self.proc.pid, signal.SIGKILL)
                        return self.proc.wait(10)
            return self.returncode
        finally:
            self.close()

    def close(self) -> None:
        """Release sockets and threads (does not stop the engine)."""
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        self._client.close()
        if self._owned is not None and (self.proc is None or self.proc.poll() is not None):
            self._owned.cleanup()


# ---- asyncio API ---------------------------------------------------------------------------------------------

class _AsyncClient:
    """ControlClient over zmq.asyncio; one request at a time per engine."""

    def __init__(self, endpoint: str, *, timeout_s: float, curve_keys: str | os.PathLike[str] | None) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.sock: zmq.asyncio.Socket = zmq.asyncio.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve_keys is not None:
            _apply_keys(self.sock, curve_keys)
        self.sock.connect(endpoint)
        self._next = 0
        self._lock = asyncio.Lock()

    async def request(self, msg_type: str, **fields: Any) -> Any:
        async with self._lock:
            self._next += 1
            rid = self._next
            await self.sock.send(proto.encode(msg_type, id=rid, **fields))
            deadline = time.monotonic() + self.timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not await self.sock.poll(int(left * 1000) + 1):
                    raise TimeoutError_(f"no reply from the engine at {self.endpoint} within "
                                        f"{self.timeout_s:g}s (is it still running?)")
                reply = proto.decode(await self.sock.recv())
                if reply.get("id") != rid:
                    continue
                return result_of(reply)

    def close(self) -> None:
        self.sock.close(0)


def _apply_keys(sock: zmq.asyncio.Socket, keys_dir: str | os.PathLike[str]) -> None:
    keys = client_keys(keys_dir)
    sock.curve_serverkey = keys["server"].encode()
    sock.curve_publickey = keys["public"].encode()
    sock.curve_secretkey = keys["secret"].encode()


class _AsyncFeed:
    """A zmq.asyncio SUB socket: connect (waiting for the handshake), then replayed events, then live ones."""

    def __init__(self, endpoint: str, topics: Sequence[str], curve_keys: str | os.PathLike[str] | None) -> None:
        self.endpoint = endpoint
        self.topics = tuple(topics)
        self.dedupe = Replay()
        self.backlog: list[dict[str, Any]] = []
        self.sock: zmq.asyncio.Socket = zmq.asyncio.Context.instance().socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        if curve_keys is not None:
            _apply_keys(self.sock, curve_keys)
        for t in self.topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t.encode())

    async def connect(self, timeout_s: float) -> None:
        mon: zmq.asyncio.Socket = self.sock.get_monitor_socket(_HANDSHAKE)
        try:
            self.sock.connect(self.endpoint)
            try:
                frames = await asyncio.wait_for(mon.recv_multipart(), timeout_s)
            except TimeoutError:
                raise TimeoutError_(f"no connection to the events endpoint {self.endpoint} within {timeout_s:g}s "
                                    "(engine gone, or CURVE keys missing or not authorized)") from None
            if parse_monitor_message(frames)["event"] != _HANDSHAKE:
                raise ResourceError(f"cannot subscribe to {self.endpoint}")
        finally:
            self.sock.disable_monitor()
            mon.close(0)

    async def next(self) -> tuple[str, dict[str, Any]]:
        if self.backlog:
            ev = self.backlog.pop(0)
            return f"events.{ev.get('node')}", ev
        while True:
            msg = decode_pub(await self.sock.recv_multipart())
            if msg is not None and topic_matches(msg[0], self.topics) and not self.dedupe.is_duplicate(*msg):
                return msg

    def close(self) -> None:
        self.sock.close(0)


class AsyncSubscription:
    """A task calling `callback(topic, payload)` (a function or a coroutine function) for each message."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self._task = task

    @property
    def active(self) -> bool:
        return not self._task.done()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class AsyncEngine:
    """`Engine` for asyncio: the same methods as coroutines, plus `events()`, an async iterator."""

    def __init__(self, info: Mapping[str, Any], *, proc: asyncio.subprocess.Process | None = None,
                 owned: _Process | None = None, curve_keys: str | os.PathLike[str] | None = None,
                 timeout_s: float = 5.0) -> None:
        self.info = dict(info)
        self.engine_id: str = str(info.get("engine_id", ""))
        self.control: str = str(info["control"])
        self.events_endpoint: str = str(info["events"])
        self.pid: int | None = int(info["pid"]) if info.get("pid") else None
        self.proc = proc
        self._owned = owned
        self.curve_keys = curve_keys if curve_keys is not None else info.get("curve_keys")
        self.timeout_s = timeout_s
        self._client = _AsyncClient(self.control, timeout_s=timeout_s, curve_keys=self.curve_keys)
        self._subs: list[AsyncSubscription] = []

    @classmethod
    async def start(cls, topology: str | os.PathLike[str] | Mapping[str, Any], *, duration: float | None = None,
                    allow_faults: bool = False, env: Mapping[str, str] | None = None,
                    runtime_dir: str | os.PathLike[str] | None = None,
                    overrides: Mapping[str, Any] | Sequence[str] = (), args: Sequence[str] = (),
                    start_timeout: float = 30.0) -> AsyncEngine:
        """As `Engine.start`."""
        rdir, owned, argv = _prepare_run(topology, duration=duration, allow_faults=allow_faults, env=env,
                                         runtime_dir=runtime_dir, args=args)
        try:
            with open(owned.log_path, "wb") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    *argv, env=_child_env(env, rdir, override_items(overrides)), stdout=log_file,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except BaseException:
            owned.cleanup()
            raise
        deadline = time.monotonic() + start_timeout
        while True:
            info = _started(rdir, proc.pid, proc.returncode, owned)
            if info is not None:
                return cls(info, proc=proc, owned=owned)
            if time.monotonic() > deadline:
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                owned.cleanup()
                raise TimeoutError_(f"the engine did not come up within {start_timeout:g}s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.02)

    @classmethod
    async def attach(cls, engine_id: str | None = None, *, runtime_dir: str | os.PathLike[str] | None = None,
                     control: str | None = None, events: str | None = None,
                     curve_keys: str | os.PathLike[str] | None = None, timeout_s: float = 5.0) -> AsyncEngine:
        """As `Engine.attach`."""
        if control is None:
            info = _find_in(_resolve_runtime_dir(runtime_dir, None), engine_id)
            return cls(info, curve_keys=curve_keys, timeout_s=timeout_s)
        client = _AsyncClient(control, timeout_s=timeout_s, curve_keys=curve_keys)
        try:
            status = await client.request("ps")
        finally:
            client.close()
        info = {"engine_id": status.get("engine_id"), "control": control,
                "events": events or _events_endpoint(control, status)}
        return cls(info, curve_keys=curve_keys, timeout_s=timeout_s)

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, t: type[BaseException] | None, v: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._owned is not None:
            await self.stop()
        else:
            await self.close()

    @property
    def log(self) -> str:
        return self._owned.log_text() if self._owned is not None else ""

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc is not None else None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.returncode is None
        return engine_alive(self.info) if self.pid else True

    async def request(self, msg_type: str, **fields: Any) -> Any:
        return await self._client.request(msg_type, **fields)

    async def wait_running(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if not self.alive():
                raise (self._owned.final_error(self.returncode) if self._owned is not None
                       else error_from_log(self.log, self.returncode))
            with contextlib.suppress(TimeoutError_):
                status = await self.ps()
                if status.get("nodes") and not _not_running(status):
                    return status
            await asyncio.sleep(0.05)
        raise TimeoutError_(f"not every node runs after {timeout:g}s: {', '.join(_not_running(status)) or '?'}")

    async def ps(self) -> dict[str, Any]:
        return dict(await self.request("ps"))

    async def snapshot(self) -> dict[str, Any]:
        return dict(await self.request("snapshot"))

    async def command(self, node: str, command: str, **args: Any) -> Any:
        return await self.request("command", node=node, command=command, args=args)

    async def set(self, node: str, **options: Any) -> dict[str, Any]:
        return dict(await self.request("set", node=node, options=options))

    async def fault(self, node: str, fault: str, value: int | None = None) -> dict[str, Any]:
        return dict(await self.request("fault", node=node, fault=fault, args=fault_args(fault, value)))

    async def _feed(self, topics: Sequence[str], replay: bool) -> _AsyncFeed:
        feed = _AsyncFeed(self.events_endpoint, topics, self.curve_keys)
        try:
            await feed.connect(self.timeout_s)
            if replay:
                feed.backlog = feed.dedupe.replayed((await self.snapshot()).get("events_recent", []), topics)
        except BaseException:
            feed.close()
            raise
        return feed

    async def events(self, topics: Sequence[str] = ("events.",), *,
                     replay: bool = True) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """Yield `(topic, payload)` for each event (and/or `metrics.` message), replayed ones first."""
        feed = await self._feed(topics, replay)
        try:
            while True:
                yield await feed.next()
        finally:
            feed.close()

    async def subscribe(self, callback: Callable[[str, dict[str, Any]], Any],
                        topics: Sequence[str] = ("events.",), *, replay: bool = True) -> AsyncSubscription:
        """Run `callback` (a function or a coroutine function) for each message on a task; returns once
        subscribed (the replayed events are delivered first)."""
        feed = await self._feed(topics, replay)

        async def pump() -> None:
            try:
                while True:
                    topic, payload = await feed.next()
                    result = callback(topic, payload)
                    if inspect.isawaitable(result):
                        await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing callback ends its subscription, loudly
                log.error("subscription callback failed: %r; the subscription ended", exc)
                raise
            finally:
                feed.close()

        sub = AsyncSubscription(asyncio.ensure_future(pump()))
        self._subs.append(sub)
        return sub

    async def wait(self, timeout: float | None = None) -> int | None:
        if self.proc is not None:
            try:
                return await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                raise TimeoutError_(f"the engine did not exit within {timeout:g}s") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while engine_alive(self.info):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError_(f"the engine did not exit within {timeout:g}s")
            await asyncio.sleep(0.05)
        return None

    async def stop(self, timeout: float = 30.0) -> int | None:
        try:
            if self.alive():
                with contextlib.suppress(EngineError):
                    await self.request("stop")
                try:
                    return await self.wait(timeout)
                except TimeoutError_:
                    if self.proc is None:
                        raise
                    log.warning("engine %s did not stop within %gs: killing it", self.engine_id, timeout)
                    _killpg(self.proc.pid, signal.SIGTERM)
                    try:
                        return await asyncio.wait_for(self.proc.wait(), 5)
                    except TimeoutError:
                        _killpg(self.proc.pid, signal.SIGKILL)
                        return await self.proc.wait()
            return self.returncode
        finally:
            await self.close()

    async def close(self) -> None:
        for sub in self._subs:
            await sub.close()
        self._subs.clear()
        self._client.close()
        if self._owned is not None and (self.proc is None or self.proc.returncode is not None):
            self._owned.cleanup()

