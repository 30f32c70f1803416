"""The actor runtime: the main loop of one actor process.

The supervisor starts `actor_main(spec)` in a new process.  The runtime attaches the node's rings,
connects its sockets, builds the actor from its kind and options, and runs one loop:

    poll(control, data) -> control commands  -> on_control / set / fault
                        -> data descriptors  -> on_frame / on_eos  (ring views, zero copy)
    tick due            -> on_tick
    heartbeat due       -> heartbeat (+ metrics once a second)

Heartbeats come from this loop and nowhere else, so a stuck hook means a silent actor and the
supervisor replaces it.  Hooks return actions; the runtime performs them (ring writes, descriptor
sends, events).  An `EngineError` from a hook is reported with its code and the process exits; the
supervisor decides what happens next.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any

import msgpack
import numpy.typing as npt
import zmq

from ..control import protocol as proto
from ..sdk.actor import Actor, Emit, EndOfStream, Event, Finish, coerce, resolved_hints
from ..sdk.errors import (
    ActorFailedError,
    EngineError,
    FieldError,
    NotAllowedError,
    OptionError,
    UnknownCommandError,
)
from ..sdk.formats import Frame, Packet, format_from_wire
from ..supervision.curve import apply_client_keys
from ..supervision.rundir import pid_alive
from ..topology.loader import rebuild_options
from ..topology.registry import get_kind
from .dataplane import Consumer as _Consumer
from .dataplane import Input as _Input
from .dataplane import Output as _Output
from .dataplane import deliver_frame, emit_frame, lend_buffer, send_desc
from .metrics import ActorMetrics
from .ring import FrameRing, RingReader, RingWriter
from .wire import decode_desc, eos_desc, packet_desc, packet_from_wire

PR_SET_PDEATHSIG = 1
MAX_DRAIN = 512  # descriptors taken from the data socket per loop turn


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL us when our parent (the fork server) goes away.

    The fork server hands every child a copy of its "alive" pipe and only exits once all copies are
    closed; we close ours, so a SIGKILLed supervisor takes the fork server, and with it us, along.
    """
    with contextlib.suppress(ImportError, AttributeError, OSError, TypeError):
        from multiprocess import forkserver

        fd = forkserver._forkserver._forkserver_alive_fd
        if fd is not None:
            os.close(fd)
            forkserver._forkserver._forkserver_alive_fd = None
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _FaultCrash(RuntimeError):
    """Raised inside a hook by the `crash` fault."""


class ActorRuntime:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.node_id: str = spec["node"]
        self.epoch_ns: int = int(spec["epoch_ns"])
        self.hb_interval_ns = int(float(spec.get("heartbeat_interval_s", 0.2)) * 1e9)
        self.allow_faults = bool(spec.get("allow_faults", False))
        self.ctx = zmq.Context()
        self.ctrl = self.ctx.socket(zmq.DEALER)
        self.ctrl.setsockopt(zmq.IDENTITY, f"a:{self.node_id}".encode())
        self.ctrl.setsockopt(zmq.LINGER, 2000)
        if spec.get("curve"):  # the engine's control socket is a CURVE server: use this run's actor keypair
            apply_client_keys(self.ctrl, spec["curve"])
        self.ctrl.connect(spec["control"])
        self.data: zmq.Socket[bytes] | None = None
        self.inputs: dict[str, _Input] = {}
        self.outputs: dict[str, _Output] = {}
        self.metrics = ActorMetrics(self.node_id)
        self.stopping = False
        self.finished: str | None = None
        self.fault_slow_s = 0.0
        self.fault_crash = False
        self.fault_corrupt = False
        self.paused = False  # built-in `pause`/`resume` of a video source: video frames are not emitted
        self.actor: Actor[Any] | None = None
        self.supervisor_pid = int(spec.get("supervisor_pid", 0))

    # ---- wiring ----------------------------------------------------------------------------
    def _open(self) -> None:
        spec = self.spec
        push_socks: dict[str, zmq.Socket[bytes]] = {}
        for pad, out in spec["outputs"].items():
            fmt = format_from_wire(out["format"])
            consumers = []
            for c in out["consumers"]:
                sock = push_socks.get(c["endpoint"])
                if sock is None:
                    sock = self.ctx.socket(zmq.PUSH)
                    sock.setsockopt(zmq.SNDHWM, 2000)
                    sock.setsockopt(zmq.LINGER, 1000)
                    # a restarted consumer rebinds within milliseconds: find it again at once
                    # (ZeroMQ's default 100 ms reconnect interval would be the bulk of a restart's gap)
                    sock.setsockopt(zmq.RECONNECT_IVL, 2)
                    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 50)
                    sock.connect(c["endpoint"])
                    push_socks[c["endpoint"]] = sock
                consumers.append(_Consumer(c["node"], c["pad"], int(c["index"]), c["policy"], sock))
            ring = writer = None
            if out.get("ring"):
                ring = FrameRing.attach(out["ring"])
                writer = RingWriter(ring, [c.policy for c in consumers],
                                    block_timeout_s=float(spec.get("block_timeout_s", 0.5)),
                                    idle=self._idle)
            self.outputs[pad] = _Output(pad, fmt, writer, ring, consumers)
        for pad, inp in spec["inputs"].items():
            fmt = format_from_wire(inp["format"])
            ring = reader = None
            if inp.get("ring"):
                ring = FrameRing.attach(inp["ring"])
                reader = RingReader(ring, int(inp["index"]))
                reader.reattach()
            shape = tuple(getattr(fmt, "shape", ()))
            dtype = getattr(fmt, "dtype", "uint8")
            self.inputs[pad] = _Input(pad, fmt, inp["policy"], reader, ring, shape, dtype)
        if self.inputs:
            self.data = self.ctx.socket(zmq.PULL)
            self.data.setsockopt(zmq.RCVHWM, 10000)
            self.data.setsockopt(zmq.LINGER, 0)
            self.data.bind(spec["data_endpoint"])

    def _send_ctrl(self, msg_type: str, **fields: Any) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.ctrl.send(proto.encode(msg_type, node=self.node_id, **fields), zmq.NOBLOCK)

    def _send_raw_ctrl(self, raw: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.ctrl.send(raw, zmq.NOBLOCK)

    # ---- main ---------------------------------------------------------------------------------
    def run(self) -> int:
        self._open()
        kind = self.spec["kind"]
        cls = get_kind(kind)
        options = rebuild_options(kind, self.spec["options"])
        self.actor = cls(
            options,
            node_id=self.node_id,
            input_formats={p: i.fmt for p, i in self.inputs.items()},
            output_formats={p: o.fmt for p, o in self.outputs.items()},
        )
        self.actor.restart_count = int(self.spec.get("restart_count", 0))  # type: ignore[attr-defined]
        self.actor.epoch_ns = self.epoch_ns  # type: ignore[attr-defined]
        self.actor._lend_buffer = self._output_buffer
        self._send_ctrl("hello", pid=os.getpid())
        self.actor.setup()
        self._loop()
        return 0

    def now_ns(self) -> int:
        return time.monotonic_ns() - self.epoch_ns

    def _loop(self) -> None:
        assert self.actor is not None
        poller = zmq.Poller()
        poller.register(self.ctrl, zmq.POLLIN)
        if self.data is not None:
            poller.register(self.data, zmq.POLLIN)
        next_hb = 0
        next_metrics = self.now_ns() + 1_000_000_000
        next_tick: int | None = None
        while True:
            now = self.now_ns()
            iv = self.actor.tick_interval_ns
            if iv and not self.stopping:
                if next_tick is None:
                    next_tick = (now // iv + 1) * iv
                if now >= next_tick:
                    self._run_hook("tick", lambda t=now: self.actor.on_tick(t))
                    next_tick += iv
                    if next_tick <= now:
                        next_tick = (now // iv + 1) * iv
            if now >= next_hb:
                self._send_ctrl("heartbeat")
                next_hb = now + self.hb_interval_ns
            if now >= next_metrics:
                self._send_metrics()
                next_metrics = now + 1_000_000_000
                if self.supervisor_pid and not pid_alive(self.supervisor_pid):
                    return  # the supervisor is gone: nobody to report to, nothing to feed

            if self.finished is not None or (self.stopping and self._drained()):
                break
            wake = next_hb
            if next_tick is not None and not self.stopping:
                wake = min(wake, next_tick)
            timeout_ms = max(0.0, (wake - self.now_ns()) / 1e6)
            if self.stopping:
                timeout_ms = min(timeout_ms, 20.0)
            events = dict(poller.poll(int(timeout_ms) + 1))
            if self.ctrl in events:
                self._handle_control()
            if self.data is not None and self.data in events:
                self._handle_data()
        self._finish()

    def _drained(self) -> bool:
        if self.data is None:
            return True
        return not (self.data.poll(0) & zmq.POLLIN)

    def _finish(self) -> None:
        assert self.actor is not None
        self._run_hook("stop", self.actor.stop)
        self._end_outputs(None)
        self._send_metrics()
        self._send_ctrl("done", reason=self.finished or "stopped")

    # ---- control ------------------------------------------------------------------------------
    def _handle_control(self) -> None:
        for _ in range(64):
            try:
                raw = self.ctrl.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = proto.decode(raw)
            except EngineError as exc:
                self._send_raw_ctrl(proto.error(proto.request_id(raw), exc))
                continue
            mtype = msg["type"]
            if mtype == "shutdown":
                self.stopping = True
                continue
            rid = int(msg.get("id", 0))
            try:
                result = self._dispatch(mtype, msg)
            except EngineError as exc:
                self._send_raw_ctrl(proto.error(rid, exc))
            else:
                self._send_raw_ctrl(proto.ok(rid, result))

    def _dispatch(self, mtype: str, msg: dict[str, Any]) -> Any:
        assert self.actor is not None
        if mtype == "set":
            return self._set_options(msg["options"])
        if mtype == "command":
            command, args = msg["command"], msg["args"]
            if command == "stats":
                return self.metrics.snapshot(self._ring_stats())
            if command == "stop":
                self.stopping = True
                return {"stopping": True}
            if command in ("pause", "resume") and self._pausable():
                return self._pause(command == "pause")
            result: Any = None

            def call() -> None:
                nonlocal result
                result = self.actor.on_control(command, args)  # type: ignore[union-attr]

            self._run_hook("control", call, reraise=(UnknownCommandError, EngineError))
            return result
        if mtype == "fault":
            return self._fault(msg["fault"], msg["args"])
        if mtype == "ping":
            return {"pid": os.getpid()}
        raise FieldError(f"actor {self.node_id} does not take {mtype!r} messages")

    def _pausable(self) -> bool:
        """`pause`/`resume` are built in for sources with a video output (other kinds may define their own)."""
        assert self.actor is not None
        return self.actor.is_source and any(o.fmt.kind == "video" for o in self.outputs.values())

    def _pause(self, pause: bool) -> dict[str, Any]:
        """While paused the source keeps ticking (its timeline goes on) but its video frames are not
        emitted: downstream encoders repeat the last picture (keepalive), audio goes on."""
        if pause != self.paused:
            self.paused = pause
            self._send_ctrl("event", name="paused" if pause else "resumed", data={})
        return {"paused": self.paused}

    def _set_options(self, changes: dict[str, Any]) -> dict[str, Any]:
        assert self.actor is not None
        cls = type(self.actor)
        hints = resolved_hints(type(self.actor.options))
        new_values = {}
        for name, value in changes.items():
            if not isinstance(name, str) or name not in hints:
                known = ", ".join(cls.live_options) or "none"
                raise OptionError(f"unknown option {name!r}; options changeable while running: {known}",
                                  where=f"{self.node_id}.{name}")
            if name not in cls.live_options:
                known = ", ".join(cls.live_options) or "none"
                raise OptionError(f"option {name!r} cannot change while running; live options: {known}",
                                  where=f"{self.node_id}.{name}")
            ok, coerced = coerce(value, hints[name])
            if not ok:
                raise OptionError(f"expected {hints[name]!r}, got {value!r}", where=f"{self.node_id}.{name}")
            lo_hi = cls.option_ranges.get(name)
            if lo_hi is not None and isinstance(coerced, int | float) and not lo_hi[0] <= coerced <= lo_hi[1]:
                raise OptionError(f"{coerced} is out of range {lo_hi[0]:g}..{lo_hi[1]:g}",
                                  where=f"{self.node_id}.{name}")
            new_values[name] = coerced
        self.actor.options = dataclasses.replace(self.actor.options, **new_values)
        for name, value in new_values.items():
            self.actor.on_option_changed(name, value)
        return {k: v for k, v in new_values.items()}

    def _fault(self, fault: str, args: dict[str, Any]) -> Any:
        if not self.allow_faults:
            raise NotAllowedError("fault injection is disabled; start the engine with --allow-faults")
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "hang":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif fault == "crash":
            self.fault_crash = True
        elif fault == "slow":
            self.fault_slow_s = float(args.get("ms", 0)) / 1000.0
        elif fault == "exit":
            self.ctrl.close(linger=200)
            os._exit(int(args.get("code", 1)))
        elif fault == "corrupt":
            self.fault_corrupt = True
        else:
            raise FieldError(f"unknown fault {fault!r}; faults: kill, hang, crash, slow, exit, corrupt")
        return {"fault": fault}

    # ---- data ---------------------------------------------------------------------------------
    def _handle_data(self) -> None:
        assert self.data is not None
        batch: list[dict[str, Any]] = []
        for _ in range(MAX_DRAIN):
            try:
                raw = self.data.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                batch.append(decode_desc(raw))
            except (ValueError, msgpack.UnpackException, TypeError):
                self.metrics.count("bad_descriptors")
        if not batch:
            return
        # drop_oldest: of several raw frames waiting on one pad, keep only the newest
        newest: dict[str, int] = {}
        for i, d in enumerate(batch):
            inp = self.inputs.get(d["p"])
            if inp is not None and inp.policy == "drop_oldest" and "s" in d:
                newest[d["p"]] = i
        for i, d in enumerate(batch):
            inp = self.inputs.get(d["p"])
            if inp is None:
                self.metrics.count("bad_descriptors")
                continue
            if "s" in d and inp.policy == "drop_oldest" and newest.get(d["p"]) != i:
                if inp.reader is not None:
                    inp.reader.release(int(d["s"]), int(d["q"]))
                self.metrics.drop(inp.pad)
                continue
            self._deliver(inp, d)

    def _deliver(self, inp: _Input, d: dict[str, Any]) -> None:
        assert self.actor is not None
        actor = self.actor
        if d.get("e"):
            inp.ended = True
            self._run_hook("eos", lambda: actor.on_eos(inp.pad))
            if all(i.ended for i in self.inputs.values()):
                self.stopping = True
            return
        if "k" in d:
            try:
                packet = packet_from_wire(d["k"])
            except (KeyError, TypeError, ValueError):
                self.metrics.count("bad_descriptors")
                return
            self.metrics.frame_in(inp.pad)
            self._run_hook("frame", lambda: actor.on_frame(inp.pad, packet), timed=True)
            return

        def hook(frame: Frame) -> None:
            self.metrics.frame_in(inp.pad)
            self._run_hook("frame", lambda: actor.on_frame(inp.pad, frame), timed=True)

        deliver_frame(inp, d, hook, self.metrics.count)

    # ---- hooks and actions ---------------------------------------------------------------------
    def _run_hook(self, name: str, call: Any, *, timed: bool = False,
                  reraise: tuple[type[BaseException], ...] = ()) -> None:
        if self.fault_crash and name in ("frame", "tick"):
            self.fault_crash = False
            raise _FaultCrash(f"injected crash in {self.node_id}'s {name} hook")
        if self.fault_slow_s and name in ("frame", "tick"):
            time.sleep(self.fault_slow_s)
        t0 = time.perf_counter_ns()
        try:
            actions = call()
        except reraise:
            raise
        if timed:
            self.metrics.processing_time(time.perf_counter_ns() - t0)
        if actions:
            self._perform(actions)
        for out in self.outputs.values():  # lent slots live for one hook call
            out.reserved = out.abandoned = None

    def _perform(self, actions: Iterable[Any]) -> None:
        for action in actions:
            if isinstance(action, Emit):
                self._emit(action.pad, action.media)
            elif isinstance(action, Event):
                self._send_ctrl("event", name=action.name, data=action.data)
            elif isinstance(action, EndOfStream):
                self._end_outputs(action.pad)
            elif isinstance(action, Finish):
                self.finished = action.reason
            else:
                raise ActorFailedError(f"{self.node_id}: hook returned {action!r}, not an action")

    def _emit(self, pad: str, media: Frame | Packet) -> None:
        out = self.outputs.get(pad)
        if out is None:
            raise ActorFailedError(f"{self.node_id}: no output pad {pad!r}")
        if out.ended:
            return
        if self.paused and out.fmt.kind == "video":
            self.metrics.count("paused_frames")
            return
        self.metrics.frame_out(pad)
        if isinstance(media, Packet):
            raw_by_pad: dict[str, bytes] = {}
            for c in out.consumers:
                raw = raw_by_pad.get(c.pad) or packet_desc(c.pad, media)
                raw_by_pad[c.pad] = raw
                self._send_data(c, raw)
            return
        emit_frame(out, media, f"{self.node_id}.{pad}", self._send_frame_desc, self.metrics.drop)

    def _send_frame_desc(self, c: _Consumer, raw: bytes) -> None:
        if self.fault_corrupt:  # the `corrupt` fault: the next frame descriptor is garbage
            self.fault_corrupt = False
            raw = msgpack.packb({"p": c.pad, "s": "x", "q": None})
        self._send_data(c, raw)

    def _output_buffer(self, pad: str) -> npt.NDArray[Any] | None:
        """Lend the actor a free slot of `pad`'s ring to fill in place (see Actor.output_buffer)."""
        out = self.outputs.get(pad)
        return None if out is None else lend_buffer(out)

    def _send_data(self, c: _Consumer, raw: bytes) -> None:
        send_desc(c, raw, self._idle, self.metrics.drop)

    def _end_outputs(self, pad: str | None) -> None:
        for out in self.outputs.values():
            if (pad is None or out.pad == pad) and not out.ended:
                out.ended = True
                for c in out.consumers:
                    self._send_data(c, eos_desc(c.pad))

    def _idle(self) -> None:
        """Called while blocked on a full ring: keep heartbeating so we are not taken for hung."""
        self._send_ctrl("heartbeat")

    def _ring_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        for pad, inp in self.inputs.items():
            if inp.ring is not None and inp.reader is not None:
                idx = inp.reader.consumer
                stats[pad] = {"held": inp.ring.held(idx), "depth": inp.ring.depth}
        return stats

    def _send_metrics(self) -> None:
        assert self.actor is not None
        snap = self.metrics.snapshot(self._ring_stats())
        if self.paused:
            snap["paused"] = True
        extra = getattr(self.actor, "metrics", None)
        if callable(extra):
            with contextlib.suppress(Exception):
                snap["actor"] = extra()
        self._send_ctrl("metrics", metrics=snap)

    def close(self) -> None:
        for out in self.outputs.values():
            if out.ring is not None:
                out.ring.close()
        for inp in self.inputs.values():
            if inp.ring is not None:
                inp.ring.close()
        self.ctx.destroy(linger=1000)


def actor_main(spec: dict[str, Any]) -> None:
    """Process entry point (picklable by reference for the fork server)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    _die_with_parent()
    stop_flag: list[bool] = []

    runtime = ActorRuntime(spec)

    def on_term(signum: int, frame: Any) -> None:
        runtime.stopping = True
        stop_flag.append(True)

    signal.signal(signal.SIGTERM, on_term)
    code = 0
    try:
        runtime.run()
    except EngineError as exc:
        runtime._send_ctrl("failed", code=exc.code, message=str(exc))
        code = 1
    except BaseException as exc:  # report anything else with its traceback summary, then exit non-zero
        tb = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" at {tb[0].filename.rsplit('/', 1)[-1]}:{tb[0].lineno}" if tb else ""
        runtime._send_ctrl("failed", code=ActorFailedError.code,
                           message=f"{type(exc).__name__}: {exc}{where}")
        code = 1
    finally:
        with contextlib.suppress(Exception):
            runtime.close()
    sys.stdout.flush()
    os._exit(code)
