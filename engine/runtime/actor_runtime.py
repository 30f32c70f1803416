"""The actor runtime: the main loop of one actor process.

The supervisor starts `actor_main(spec)` in a new process with a typed `ActorSpec` (runtime/spec.py).
The runtime attaches the node's rings, connects its sockets, builds the actor from its kind and
options, and runs one loop:

    poll(control, data) -> control commands  -> on_control / set / fault
                        -> data descriptors  -> on_frame / on_eos / on_format_changed
                                                (ring views, zero copy; wire.py decodes them)
    tick due            -> on_tick
    heartbeat due       -> heartbeat (+ metrics once a second)

Heartbeats come from this loop and nowhere else, so a stuck hook means a silent actor and the
supervisor replaces it.  Hooks return actions; the runtime performs them (ring writes, descriptor
sends, events, format changes: `ChangeFormat` is checked, written into the ring header and sent on
every edge in order with the frames).  An `EngineError` from a hook is reported with its code and the process exits; the
supervisor decides what happens next.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import msgpack
import numpy.typing as npt
import zmq

from ..control import protocol as proto
from ..sdk.actor import Actions, Actor, ChangeFormat, Configure, Context, Emit, EndOfStream, Event, Finish
from ..sdk.errors import (
    ActorFailedError,
    CommandFailedError,
    EngineError,
    FieldError,
    FormatChangeError,
    MalformedDescriptorError,
    NotAllowedError,
    OptionError,
    RequestFailedError,
    SlotTooSmallError,
)
from ..sdk.formats import NS, Format, Frame, Packet, format_from_wire, format_to_wire
from ..sdk.options import apply_set
from ..supervision.curve import apply_client_keys
from ..supervision.rundir import pid_alive
from ..topology.registry import get_kind
from .dataplane import Consumer as _Consumer
from .dataplane import Input as _Input
from .dataplane import Output as _Output
from .dataplane import deliver_frame, emit_frame, lend_buffer, send_desc
from .decisions import check_input_format, derived_output_changes, keep_newest_raw, keep_pix_fmts, take_reply
from .metrics import ActorMetrics
from .ring import FrameRing, RingReader, RingWriter
from .spec import ActorSpec
from .wire import (
    EosDesc,
    FormatDesc,
    FrameDesc,
    PacketDesc,
    decode_desc,
    eos_desc,
    format_desc,
    packet_desc,
)

PR_SET_PDEATHSIG = 1
MAX_DRAIN = 512  # descriptors taken from the data socket per loop turn
CONTROL_SLICE_S = 0.01  # control messages handled per loop turn, at most


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


def _bind(hook: Callable[[str, Any], Actions], name: str, value: Any) -> Callable[[], Actions]:
    return lambda: hook(name, value)


class _FaultCrash(RuntimeError):
    """Raised inside a hook by the `crash` fault."""


def ring_format(ring: FrameRing, declared: Format) -> Format:
    """The stream's current format as the ring header says (a producer may have changed it since the
    topology was loaded); `declared` when the header holds none or something unreadable."""
    info = ring.format_info
    if not info:
        return declared
    try:
        return format_from_wire(msgpack.unpackb(info, raw=False))
    except (EngineError, ValueError, msgpack.UnpackException):
        return declared


def runtime_dir_of(data_endpoint: str) -> str:
    """The engine's runtime directory: where the supervisor put this node's `ipc://` data endpoint."""
    return os.path.dirname(data_endpoint[len("ipc://"):]) if data_endpoint.startswith("ipc://") else ""


class ActorRuntime:
    def __init__(self, spec: ActorSpec) -> None:
        self.spec = spec
        self.node_id: str = spec.node
        self.epoch_ns: int = spec.epoch_ns
        self.hb_interval_ns = int(spec.heartbeat_interval_s * NS)
        self.allow_faults = spec.allow_faults
        self.ctx = zmq.Context()
        self.ctrl = self.ctx.socket(zmq.DEALER)
        self.ctrl.setsockopt(zmq.IDENTITY, f"a:{self.node_id}".encode())
        self.ctrl.setsockopt(zmq.LINGER, 2000)
        if spec.curve:  # the supervisor's actors' socket: CURVE with this node's keypair for this run
            apply_client_keys(self.ctrl, spec.curve)
        self.ctrl.connect(spec.control)
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
        self.in_formats: dict[str, Format] = {}  # current formats (the Context given to setup() shows these)
        self.out_formats: dict[str, Format] = {}
        self.changed_outputs: set[str] = set()  # outputs a ChangeFormat changed during the current hook
        self.supervisor_pid = spec.supervisor_pid

    # ---- wiring ----------------------------------------------------------------------------
    def _open(self) -> None:
        spec = self.spec
        push_socks: dict[str, zmq.Socket[bytes]] = {}
        for pad, out in spec.outputs.items():
            consumers = []
            for c in out.consumers:
                sock = push_socks.get(c.endpoint)
                if sock is None:
                    sock = self.ctx.socket(zmq.PUSH)
                    sock.setsockopt(zmq.SNDHWM, 2000)
                    sock.setsockopt(zmq.LINGER, 1000)
                    # a restarted consumer rebinds within milliseconds: find it again at once
                    # (ZeroMQ's default 100 ms reconnect interval would be the bulk of a restart's gap)
                    sock.setsockopt(zmq.RECONNECT_IVL, 2)
                    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 50)
                    sock.connect(c.endpoint)
                    push_socks[c.endpoint] = sock
                consumers.append(_Consumer(c.node, c.pad, c.index, c.policy, sock))
            ring = writer = None
            if out.ring:
                ring = FrameRing.attach(out.ring)
                writer = RingWriter(ring, [c.policy for c in consumers], block_timeout_s=spec.block_timeout_s,
                                    idle=self._idle)
            self.outputs[pad] = _Output(pad, out.format, writer, ring, consumers)
        for pad, inp in spec.inputs.items():
            ring = reader = None
            fmt = inp.format
            if inp.ring:
                ring = FrameRing.attach(inp.ring)
                reader = RingReader(ring, inp.index)
                reader.reattach()
                fmt = ring_format(ring, fmt)  # the producer may have changed it since the topology said
            shape = tuple(getattr(fmt, "shape", ()))
            dtype = getattr(fmt, "dtype", "uint8")
            self.inputs[pad] = _Input(pad, fmt, inp.policy, reader, ring, shape, dtype)
        if self.inputs:
            self.data = self.ctx.socket(zmq.PULL)
            self.data.setsockopt(zmq.RCVHWM, 10000)
            self.data.setsockopt(zmq.LINGER, 0)
            self.data.bind(spec.data_endpoint)

    def _resume_formats(self, cls: type[Actor[Any]], options: Any) -> None:
        """After a restart the streams may not have the formats the topology declared.

        An input ring's header tells us its current format (read in `_open`); our outputs then follow
        from `output_formats()` of those inputs (a source starts again at its declared format).  Where
        an output ring's header says otherwise (our predecessor changed it), announce our format to
        the consumers before the first frame, exactly like a `ChangeFormat`.
        """
        declared = {pad: i.format for pad, i in self.spec.inputs.items()}
        actual = {pad: i.fmt for pad, i in self.inputs.items()}
        if actual != declared and not cls.is_source:
            current = {pad: out.fmt for pad, out in self.outputs.items()}
            for pad, fmt in keep_pix_fmts(cls.output_formats(options, actual), current).items():
                if pad in self.outputs:
                    self.outputs[pad].fmt = fmt
        for out in self.outputs.values():
            if out.ring is not None and ring_format(out.ring, out.fmt) != out.fmt:
                self._announce_format(out, out.fmt)

    def _send_ctrl(self, msg_type: str, **fields: Any) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.ctrl.send(proto.encode(msg_type, node=self.node_id, **fields), zmq.NOBLOCK)

    def _send_raw_ctrl(self, raw: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.ctrl.send(raw, zmq.NOBLOCK)

    # ---- main ---------------------------------------------------------------------------------
    def context(self) -> Context:
        """What the actor's `setup(ctx)` is told: identity, restart count, clock, formats, buffers.

        Its format mappings are the runtime's own: they follow every format change of the stream.
        """
        return Context(node_id=self.node_id, restart_count=self.spec.restart_count, clock=self.now_ns,
                       input_formats=self.in_formats, output_formats=self.out_formats, lend=self._output_buffer,
                       output_dir=self.spec.output_dir, runtime_dir=runtime_dir_of(self.spec.data_endpoint))

    def run(self) -> int:
        self._open()
        cls = get_kind(self.spec.kind)
        options = self.spec.options  # the loader validated them once; they arrive frozen
        self._resume_formats(cls, options)
        self.in_formats.update({p: i.fmt for p, i in self.inputs.items()})
        self.out_formats.update({p: o.fmt for p, o in self.outputs.items()})
        self.actor = cls(options)
        actor, ctx = self.actor, self.context()
        # `hello` only after `setup()`: until then the supervisor applies its startup timeout, so a slow
        # setup (opening a network URL) fails with its own error instead of being taken for a hang.
        self._run_hook("setup", lambda: actor.setup(ctx))
        self._send_ctrl("hello", pid=os.getpid())
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
        next_metrics = self.now_ns() + NS
        next_tick: int | None = None
        while True:
            now = self.now_ns()
            iv = self.actor.tick_interval_ns
            if iv and not self.stopping:
                if next_tick is None:
                    next_tick = (now // iv + 1) * iv
                if now >= next_tick:
                    # a source makes its frames in on_tick: that is its processing time
                    self._run_hook("tick", self._tick_call(now), timed=type(self.actor).is_source)
                    next_tick += iv
                    if next_tick <= now:
                        next_tick = (now // iv + 1) * iv
            if now >= next_hb:
                self._send_ctrl("heartbeat")
                next_hb = now + self.hb_interval_ns
            if now >= next_metrics:
                self._send_metrics()
                next_metrics = now + NS
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

    def _tick_call(self, now: int) -> Callable[[], Actions]:
        actor = self.actor
        assert actor is not None
        return lambda: actor.on_tick(now)

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
        """Up to 64 control messages or CONTROL_SLICE_S per loop turn: a flood of (forwarded, possibly
        hostile) requests cannot hold up frames and heartbeats; the rest waits for the next turn."""
        until = time.monotonic() + CONTROL_SLICE_S
        for _ in range(64):
            if time.monotonic() > until:
                return
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
            self._send_raw_ctrl(self._answer(rid, mtype, msg))

    def _answer(self, rid: int, mtype: str, msg: dict[str, Any]) -> bytes:
        """The reply to one request.  A hostile request (forwarded by the supervisor from any client)
        gets an error reply, never kills the actor: a hook that raises something other than an
        EngineError is a refused command (CommandFailedError), a result msgpack cannot carry is a
        RequestFailedError."""
        try:
            result = self._dispatch(mtype, msg)
        except EngineError as exc:
            return proto.error(rid, exc)
        except Exception as exc:
            return proto.error(rid, CommandFailedError(
                f"{type(exc).__name__}: {exc}; the node refused this {mtype} and keeps running",
                where=self.node_id))
        try:
            raw = proto.ok(rid, result)
        except (TypeError, ValueError, OverflowError) as exc:
            return proto.error(rid, RequestFailedError(
                f"the result of this {mtype} cannot be sent ({type(exc).__name__}: {exc})", where=self.node_id))
        if len(raw) > proto.MAX_MESSAGE_BYTES:  # the supervisor would drop it, and this connection with it
            return proto.error(rid, RequestFailedError(
                f"the result of this {mtype} is {len(raw)} bytes, over the {proto.MAX_MESSAGE_BYTES}-byte limit",
                where=self.node_id))
        return raw

    def _dispatch(self, mtype: str, msg: dict[str, Any]) -> Any:
        assert self.actor is not None
        if mtype == "set":
            return self._set_options(msg["options"])
        if mtype == "command":
            command, args = msg["command"], msg["args"]
            bad = [k for k in args if not isinstance(k, str)]
            if bad:
                raise FieldError(f"command.args: argument names must be strings, got {bad[0]!r}",
                                 where=self.node_id)
            if command == "stats":
                return self.metrics.snapshot(self._ring_stats())
            actor = self.actor
            own = command in type(actor).own_commands  # the kind's own command of that name wins
            if command == "stop" and not own:
                self.stopping = True
                return {"stopping": True}
            if command in ("pause", "resume") and not own and self._pausable():
                return self._pause(command == "pause")
            return self._run_hook("control", lambda: actor.on_control(command, args))
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
        actor = self.actor
        cls = type(actor)

        def validate(options: Any) -> None:
            cls.validate(options, self.in_formats)
            self._check_new_formats(cls, options)

        options, changed = apply_set(cls.Options, actor.options, changes, node_id=self.node_id, validate=validate)
        actor.replace_options(options)
        for name, value in changed.items():
            self._run_hook("option", _bind(actor.on_option_changed, name, value))
        return dict(changed)

    def _check_new_formats(self, cls: type[Actor[Any]], options: Any) -> None:
        """A live option may change an output format (a source's size): refuse a `set` whose formats the
        actor's own rules reject, or whose frames would not fit the ring's slots, before it applies."""
        assert self.actor is not None
        try:
            formats = cls.output_formats(options, self.in_formats)
        except EngineError as exc:
            raise OptionError(exc.message, where=self.node_id) from exc
        formats = keep_pix_fmts(formats, {pad: out.fmt for pad, out in self.outputs.items()})
        for pad, fmt in formats.items():
            out = self.outputs.get(pad)
            need = getattr(fmt, "frame_bytes", 0)
            if out is not None and out.ring is not None and need > out.ring.slot_bytes:
                raise OptionError(f"{fmt.describe()} needs {need} bytes per frame; the ring of {pad!r} has "
                                  f"{out.ring.slot_bytes}-byte slots: declare the largest size in the topology "
                                  "(e.g. max_width/max_height)", where=self.node_id)

    def _fault(self, fault: str, args: dict[str, Any]) -> Any:
        if not self.allow_faults:
            raise NotAllowedError("fault injection is disabled; start the engine with --allow-faults")
        # `kill` and `hang` never get here: the supervisor signals the process itself
        if fault == "crash":
            self.fault_crash = True
        elif fault == "slow":
            self.fault_slow_s = float(args.get("ms", 0)) / 1000.0
        elif fault == "exit":
            self.ctrl.close(linger=200)
            os._exit(int(args.get("code", 1)))
        elif fault == "corrupt":
            self.fault_corrupt = True
        else:
            raise FieldError(f"unknown fault {fault!r}; faults: {', '.join(proto.FAULTS)}")
        return {"fault": fault}

    # ---- data ---------------------------------------------------------------------------------
    def _handle_data(self) -> None:
        assert self.data is not None
        batch: list[FrameDesc | PacketDesc | EosDesc | FormatDesc] = []
        for _ in range(MAX_DRAIN):
            try:
                raw = self.data.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                batch.append(decode_desc(raw))
            except MalformedDescriptorError:
                self.metrics.count("bad_descriptors")
        if not batch:
            return
        # drop_oldest: of several raw frames waiting on one pad, keep only the newest
        keep = keep_newest_raw(batch, {pad: inp.policy for pad, inp in self.inputs.items()})
        for i, d in enumerate(batch):
            inp = self.inputs.get(d.pad)
            if inp is None:
                self.metrics.count("bad_descriptors")
                continue
            if not keep[i] and isinstance(d, FrameDesc):  # only raw frames are ever dropped here
                if inp.reader is not None:
                    inp.reader.release(d.slot, d.seq)
                self.metrics.drop(inp.pad)
                continue
            self._deliver(inp, d)

    def _deliver(self, inp: _Input, d: FrameDesc | PacketDesc | EosDesc | FormatDesc) -> None:
        assert self.actor is not None
        actor = self.actor
        if isinstance(d, EosDesc):
            inp.ended = True
            self._run_hook("eos", lambda: actor.on_eos(inp.pad))
            if all(i.ended for i in self.inputs.values()):
                self.stopping = True
            return
        if isinstance(d, FormatDesc):
            self._format_changed(inp, d.fmt)
            return
        if isinstance(d, PacketDesc):
            packet = d.packet
            self.metrics.frame_in(inp.pad)
            self._run_hook("frame", lambda: actor.on_frame(inp.pad, packet), timed=True)
            return

        def hook(frame: Frame) -> None:
            self.metrics.frame_in(inp.pad)
            self._run_hook("frame", lambda: actor.on_frame(inp.pad, frame), timed=True)

        deliver_frame(inp, d, hook, self.metrics.count)

    def _format_changed(self, inp: _Input, fmt: Format) -> None:
        """A format change arrived on an input: the actor hears of it before the first frame in it."""
        assert self.actor is not None
        actor = self.actor
        if fmt == inp.fmt:
            return  # e.g. a restarted producer announcing the format we already read from the ring
        if fmt.kind != inp.fmt.kind:
            raise FormatChangeError(f"{self.node_id}.{inp.pad}: the stream changed from {inp.fmt.describe()} "
                                    f"to {fmt.describe()}; a pad cannot change its media kind")
        check_input_format(type(actor), inp.pad, fmt, where=self.node_id)
        self.metrics.count("format_changes")
        self.changed_outputs.clear()
        self._run_hook("format", lambda: actor.on_format_changed(inp.pad, fmt))
        self._follow_inputs(type(actor), {**self.in_formats, inp.pad: fmt})
        inp.fmt = fmt
        inp.shape = tuple(getattr(fmt, "shape", ()))
        inp.dtype = getattr(fmt, "dtype", "uint8")
        self.in_formats[inp.pad] = fmt

    def _follow_inputs(self, cls: type[Actor[Any]], inputs: dict[str, Format]) -> None:
        """Outputs the `on_format_changed` hook did not change follow `output_formats()` of the new inputs."""
        assert self.actor is not None
        for pad, fmt in derived_output_changes(cls, self.actor.options, inputs, self.out_formats,
                                               self.changed_outputs, where=self.node_id).items():
            self._change_format(pad, fmt)

    # ---- hooks and actions ---------------------------------------------------------------------
    def _run_hook(self, name: str, call: Callable[[], Actions], *, timed: bool = False) -> Any:
        """Run one hook, perform the actions it returned and give back its `Reply` value (if any)."""
        if self.fault_crash and name in ("frame", "tick"):
            self.fault_crash = False
            raise _FaultCrash(f"injected crash in {self.node_id}'s {name} hook")
        t0 = time.perf_counter_ns()
        if self.fault_slow_s and name in ("frame", "tick"):
            time.sleep(self.fault_slow_s)  # counted as the hook's processing time: a slow hook is what it mimics
        actions = call()
        if timed:
            self.metrics.processing_time(time.perf_counter_ns() - t0)
        rest, reply, misplaced = take_reply(actions or (), replying=name == "control")
        if misplaced:
            raise ActorFailedError(f"{self.node_id}: Reply is only allowed from on_control, not the {name} hook")
        self._perform(rest)
        for out in self.outputs.values():  # lent slots live for one hook call
            out.reserved = out.abandoned = None
        return reply

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
            elif isinstance(action, ChangeFormat):
                self._change_format(action.pad, action.fmt)
            elif isinstance(action, Configure):
                self._send_ctrl("configure", target=action.node, options=action.options)
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

    def _change_format(self, pad: str, fmt: Format) -> None:
        """Perform `ChangeFormat`: check it, record it in the ring header, announce it on every edge."""
        assert self.actor is not None
        out = self.outputs.get(pad)
        if out is None:
            raise ActorFailedError(f"{self.node_id}: ChangeFormat names no output pad {pad!r}")
        if fmt == out.fmt:
            return
        if fmt.kind != out.fmt.kind:
            raise FormatChangeError(f"{self.node_id}.{pad}: cannot change {out.fmt.describe()} into "
                                    f"{fmt.describe()}; a pad keeps its media kind")
        if out.ring is not None:
            need = getattr(fmt, "frame_bytes", 0)
            if need > out.ring.slot_bytes:
                raise SlotTooSmallError(
                    f"{fmt.describe()} needs {need} bytes per frame, the ring's slots hold "
                    f"{out.ring.slot_bytes} (sized for {out.fmt.describe()}); declare the largest size "
                    "when the topology is loaded (e.g. test_pattern max_width/max_height)",
                    where=f"{self.node_id}.{pad}")
        self.metrics.count("format_changes")
        out.fmt = fmt
        out.reserved = None  # a lent buffer has the old shape; its slot simply stays free
        self.out_formats[pad] = fmt
        self.changed_outputs.add(pad)
        self._announce_format(out, fmt)

    def _announce_format(self, out: _Output, fmt: Format) -> None:
        """Ring header first (a consumer that attaches from now on reads it), then the edge."""
        if out.ring is not None:
            out.ring.set_format_info(msgpack.packb(format_to_wire(fmt)))
        sent: dict[str, bytes] = {}
        for c in out.consumers:
            raw = sent.get(c.pad) or format_desc(c.pad, fmt)
            sent[c.pad] = raw
            self._send_data(c, raw, wait_s=0.5)  # never dropped like a frame: it changes what follows

    def _output_buffer(self, pad: str) -> npt.NDArray[Any] | None:
        """Lend the actor a free slot of `pad`'s ring to fill in place (see Actor.output_buffer)."""
        out = self.outputs.get(pad)
        return None if out is None else lend_buffer(out)

    def _send_data(self, c: _Consumer, raw: bytes, wait_s: float | None = None) -> None:
        send_desc(c, raw, self._idle, self.metrics.drop, wait_s)

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
        extra = self.actor.metrics()
        if extra:
            snap["actor"] = extra
        self._send_ctrl("metrics", metrics=snap)

    def close(self) -> None:
        for out in self.outputs.values():
            if out.ring is not None:
                out.ring.close()
        for inp in self.inputs.values():
            if inp.ring is not None:
                inp.ring.close()
        self.ctx.destroy(linger=1000)


def actor_main(spec: ActorSpec) -> None:
    """Process entry point (picklable by reference for the fork server)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and a hang-up are the supervisor's to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
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
