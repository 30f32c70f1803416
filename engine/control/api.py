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

An engine is a `python -m mediaengine.cli run` subprocess (for a dict, a temporary YAML file), started,
found through its runtime directory once it has bound its sockets, stopped and cleaned up after by
`mediaengine.control.process.EngineProcess` (the tests and benchmarks use the same class); `attach()`
talks to one that is already running.
Every call is a control request (docs/protocol.md); failures raise the `mediaengine.sdk.errors` class that
carries the protocol's numeric code (docs/errors.md): e.g. `set` of an unknown option raises
`OptionError` (1108), a command to an unknown node `UnknownTargetError` (1404).  An engine that exits
during `start`/`wait_running` raises the error it exited with (from its result file), with its code.

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
import shutil
import subprocess
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

from ..sdk.errors import EngineError, FieldError, ResourceError, TimeoutError_
from ..supervision.curve import client_keys, connectable
from ..supervision.rundir import base_dir, check_private, engine_alive, read_info
from . import protocol as proto
from .client import ControlClient, result_of
from .events import Replay, Subscriber, decode_pub, topic_matches
from .process import EngineProcess, not_running, override_items, wait_until_running
from .push import AsyncPusher, Pusher

__all__ = ["FAULTS", "AsyncEngine", "AsyncSubscription", "Engine", "Subscription", "fault_args"]

log = logging.getLogger("mediaengine.api")

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


def _topology_file(topology: str | os.PathLike[str] | Mapping[str, Any], workdir: Path) -> Path:
    if isinstance(topology, Mapping):
        path = workdir / "topology.yaml"
        path.write_text(yaml.safe_dump(json.loads(json.dumps(topology)), sort_keys=False))
        return path
    return Path(topology).resolve()


def _resolve_runtime_dir(runtime_dir: str | os.PathLike[str] | None, env: Mapping[str, str] | None) -> Path:
    chosen = runtime_dir or (env or {}).get("MEDIAENGINE_RUNTIME_DIR")
    if chosen is None:
        return base_dir()
    path = Path(chosen)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private(path)  # ours, not a link, writable by nobody else (docs/security.md)
    return path


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


def _launch(topology: str | os.PathLike[str] | Mapping[str, Any], *, duration: float | None,
            allow_faults: bool, env: Mapping[str, str] | None, runtime_dir: str | os.PathLike[str] | None,
            overrides: Mapping[str, Any] | Sequence[str], args: Sequence[str]) -> EngineProcess:
    """Launch for `start`: the topology file (for a dict), log and result file in a temporary work dir
    that `_release` removes."""
    rdir = _resolve_runtime_dir(runtime_dir, env)
    workdir = Path(tempfile.mkdtemp(prefix="mediaengine-api-"))
    try:
        return EngineProcess.launch(_topology_file(topology, workdir), runtime_dir=rdir,
                                    log_path=workdir / "engine.log", result_path=workdir / "result.json",
                                    duration=duration, allow_faults=allow_faults, args=args,
                                    overrides=override_items(overrides), env=env)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _release(process: EngineProcess) -> None:
    """Nothing of a started engine left (processes, segments, runtime-dir entry), its work dir removed; its
    log and result stay readable from memory."""
    found = process.cleanup()
    if found.processes or found.segments:  # an engine that exited on its own should have left nothing
        log.warning("engine pid %d left %d processes and %d shared-memory segments behind: removed",
                    process.pid, len(found.processes), len(found.segments))
    shutil.rmtree(process.log_path.parent, ignore_errors=True)


class Engine:
    """A running engine: started here (`start`) or found (`attach`).  Use as a context manager."""

    def __init__(self, info: Mapping[str, Any], *, process: EngineProcess | None = None,
                 curve_keys: str | os.PathLike[str] | None = None, timeout_s: float = 5.0) -> None:
        """`info` is the engine's engine.json (or endpoints); `process` the one `start` launched."""
        self.info = dict(info)
        self.engine_id: str = str(info.get("engine_id", ""))
        self.control: str = str(info["control"])
        self.events: str = str(info["events"])
        self.pid: int | None = int(info["pid"]) if info.get("pid") else None
        self.process = process
        self.curve_keys = curve_keys if curve_keys is not None else info.get("curve_keys")
        self.timeout_s = timeout_s
        self._client = (process.client() if process is not None
                        else ControlClient(self.control, timeout_s=timeout_s, curve_keys=self.curve_keys))
        self._subs: list[Subscription] = []
        self._released = False
        self._pusher: Pusher | None = None

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
        process = _launch(topology, duration=duration, allow_faults=allow_faults, env=env,
                          runtime_dir=runtime_dir, overrides=overrides, args=args)
        try:
            return cls(process.wait_started(start_timeout), process=process)
        except BaseException:
            _release(process)
            raise

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
        if self.process is not None:
            self.stop()
        else:
            self.close()

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The engine's process (started engines only)."""
        return self.process.proc if self.process is not None else None

    @property
    def log(self) -> str:
        """What the engine process printed (started engines only)."""
        return self.process.log if self.process is not None else ""

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.alive()
        return engine_alive(self.info) if self.pid else True

    def _check_alive(self) -> None:
        if self.process is not None:
            self.process.check_alive()
        elif not self.alive():
            raise EngineError(f"the engine {self.engine_id} is no longer running")

    # ---- requests ----------------------------------------------------------------------------------------
    def request(self, msg_type: str, **fields: Any) -> Any:
        """Any control request (docs/protocol.md); the `result` of its `ok` reply."""
        return self._client.request(msg_type, **fields)

    def wait_running(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until every node runs; returns the `ps` result.  The engine's error if it exits first."""
        return wait_until_running(self.ps, self._check_alive, timeout)

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

    def push_video(self, node: str, array: Any, pts_ns: int | None = None, *, pix_fmt: str = "rgb24",
                   timeout: float | None = None) -> bool:
        """Push one picture into `external_source` node `node` (docs/capture.md, "External frames").

        `array`: the node's width x height in `pix_fmt` (rgb24/bgr24 HxWx3, rgba/bgra HxWx4, yuv420p or
        nv12 (H*3/2)xW; uint8); `pts_ns`: its time on your own clock (None: its arrival).  Checked
        here first: PushShapeError 1212, PushDtypeError 1213, PushPixelFormatError 1214, PushTargetError
        1216.  Returns False if the node's policy dropped it (a `block` node waits up to `timeout` s).
        """
        return self._push().push_video(node, array, pts_ns, pix_fmt, timeout)

    def push_audio(self, node: str, array: Any, sample_rate: int, *, sample_fmt: str | None = None,
                   timeout: float | None = None) -> bool:
        """Push PCM into `external_source` node `node`: (samples, channels) or (samples,) int16 (`s16`)
        or float32 (`flt`), any rate 8000..192000 and 1..8 channels (resampled by the node).  Typed
        errors as `push_video` (plus PushAudioError 1215); False if the node's policy dropped it."""
        return self._push().push_audio(node, array, sample_rate, sample_fmt, timeout)

    def _push(self) -> Pusher:
        if self._pusher is None:
            self._pusher = Pusher(lambda node, command: self.command(node, command))
        return self._pusher

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
        if self.process is not None:
            return self.process.wait(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while engine_alive(self.info):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError_(f"the engine did not exit within {timeout:g}s")
            time.sleep(0.05)
        return None

    def stop(self, timeout: float = 30.0) -> int | None:
        """Stop in order (sources first, drain, finalise); after `timeout`, terminate and kill."""
        try:
            if self.process is not None:
                return self.process.stop(timeout)
            if self.alive():
                with contextlib.suppress(EngineError):
                    self.request("stop")
                return self.wait(timeout)
            return None
        finally:
            self.close()

    def close(self) -> None:
        """Release sockets and threads (does not stop the engine; once a started one has exited, removes
        whatever it left)."""
        for sub in self._subs:
            sub.close()
        self._subs.clear()
        if self._pusher is not None:
            self._pusher.close()
            self._pusher = None
        self._client.close()
        if self.process is not None and not self.process.alive() and not self._released:
            self._released = True
            _release(self.process)


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

    def __init__(self, info: Mapping[str, Any], *, process: EngineProcess | None = None,
                 curve_keys: str | os.PathLike[str] | None = None, timeout_s: float = 5.0) -> None:
        """`info` is the engine's engine.json (or endpoints); `process` the one `start` launched."""
        self.info = dict(info)
        self.engine_id: str = str(info.get("engine_id", ""))
        self.control: str = str(info["control"])
        self.events_endpoint: str = str(info["events"])
        self.pid: int | None = int(info["pid"]) if info.get("pid") else None
        self.process = process
        self.curve_keys = curve_keys if curve_keys is not None else info.get("curve_keys")
        self.timeout_s = timeout_s
        self._client = _AsyncClient(self.control, timeout_s=timeout_s, curve_keys=self.curve_keys)
        self._subs: list[AsyncSubscription] = []
        self._released = False
        self._pusher: AsyncPusher | None = None

    @classmethod
    async def start(cls, topology: str | os.PathLike[str] | Mapping[str, Any], *, duration: float | None = None,
                    allow_faults: bool = False, env: Mapping[str, str] | None = None,
                    runtime_dir: str | os.PathLike[str] | None = None,
                    overrides: Mapping[str, Any] | Sequence[str] = (), args: Sequence[str] = (),
                    start_timeout: float = 30.0) -> AsyncEngine:
        """As `Engine.start`."""
        process = _launch(topology, duration=duration, allow_faults=allow_faults, env=env,
                          runtime_dir=runtime_dir, overrides=overrides, args=args)
        try:
            deadline = time.monotonic() + start_timeout
            while (info := process.poll_started()) is None:
                if time.monotonic() >= deadline:
                    raise TimeoutError_(f"the engine did not come up within {start_timeout:g}s")
                await asyncio.sleep(0.02)
            return cls(info, process=process)
        except BaseException:
            await asyncio.to_thread(_release, process)
            raise

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
        if self.process is not None:
            await self.stop()
        else:
            await self.close()

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The engine's process (started engines only)."""
        return self.process.proc if self.process is not None else None

    @property
    def log(self) -> str:
        return self.process.log if self.process is not None else ""

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.alive()
        return engine_alive(self.info) if self.pid else True

    def _check_alive(self) -> None:
        if self.process is not None:
            self.process.check_alive()
        elif not self.alive():
            raise EngineError(f"the engine {self.engine_id} is no longer running")

    async def request(self, msg_type: str, **fields: Any) -> Any:
        return await self._client.request(msg_type, **fields)

    async def wait_running(self, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while True:
            self._check_alive()
            with contextlib.suppress(TimeoutError_):
                status = await self.ps()
                if status.get("nodes") and not not_running(status):
                    return status
            if time.monotonic() >= deadline:
                raise TimeoutError_(f"not every node runs after {timeout:g}s: "
                                    f"{', '.join(not_running(status)) or 'no answer'}")
            await asyncio.sleep(0.05)

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

    async def push_video(self, node: str, array: Any, pts_ns: int | None = None, *, pix_fmt: str = "rgb24",
                         timeout: float | None = None) -> bool:
        """`Engine.push_video`; a `block` node's back-pressure awaits instead of blocking the loop."""
        return await self._push().push_video(node, array, pts_ns, pix_fmt, timeout)

    async def push_audio(self, node: str, array: Any, sample_rate: int, *, sample_fmt: str | None = None,
                         timeout: float | None = None) -> bool:
        """`Engine.push_audio`, awaiting room on a `block` node."""
        return await self._push().push_audio(node, array, sample_rate, sample_fmt, timeout)

    def _push(self) -> AsyncPusher:
        if self._pusher is None:
            self._pusher = AsyncPusher(lambda node, command: self.command(node, command))
        return self._pusher

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
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.process is not None:
                if (code := self.process.returncode) is not None:
                    return code
            elif not engine_alive(self.info):
                return None
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError_(f"the engine did not exit within {timeout:g}s")
            await asyncio.sleep(0.02)

    async def stop(self, timeout: float = 30.0) -> int | None:
        try:
            if self.alive():
                with contextlib.suppress(EngineError):
                    await self.request("stop")
                try:
                    return await self.wait(timeout)
                except TimeoutError_:
                    if self.process is None:
                        raise
                    log.warning("engine %s did not stop within %gs: killing it", self.engine_id, timeout)
                    self.process.forced = True
                    return await asyncio.to_thread(self.process.terminate)
            return self.returncode
        finally:
            await self.close()

    async def close(self) -> None:
        for sub in self._subs:
            await sub.close()
        self._subs.clear()
        if self._pusher is not None:
            self._pusher.close()
            self._pusher = None
        self._client.close()
        if self.process is not None and not self.process.alive() and not self._released:
            self._released = True
            await asyncio.to_thread(_release, self.process)

