"""`ActorHarness`: one actor run in-process, the way the runtime runs it (Membrane.Testing).

The harness validates the options like the loader (declarations, then the kind's `validate`, then
`output_formats`), builds the actor with the frozen options, calls `setup(ctx)` with a `Context`
(node id, restart count, an injectable clock, the formats, and output buffers it lends like the
ring does), then drives hooks and collects what they return::

    h = ActorHarness(Overlay, {"text": "LIVE"}, input_formats={"in": VideoFormat(640, 360, 30)})
    out = h.frame("in", Frame(pixels, pts_ns=0))          # the actions of that call
    assert h.emitted("out")[0].data.shape == (360, 640, 3)
    h.set(text="BRB")                                       # `set`, through the runtime's own code
    assert h.control("stats_please") == {...}               # the Reply value of on_control

`set` goes through `mediaengine.sdk.options.apply_set`, the function the runtime uses, so a test
sees the same 1108 errors a user sees.  `Reply` outside `on_control`, an unknown action, a frame
on an undeclared pad or of the wrong shape fail as they would in an actor process
(`ActorFailedError`).  No processes, no shared memory, no sockets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .runtime.decisions import check_input_format, derived_output_changes, take_reply
from .sdk.actor import Action, Actions, Actor, ChangeFormat, Context, Emit, EndOfStream, Event, Finish
from .sdk.errors import ActorFailedError, FormatChangeError
from .sdk.formats import Format, Frame, Packet, VideoFormat
from .sdk.options import apply_set, check_instance

__all__ = ["ActorHarness", "ManualClock"]


@dataclass
class ManualClock:
    """An engine clock a test moves by hand (`clock.now_ns += ...`)."""

    now_ns: int = 0

    def __call__(self) -> int:
        return self.now_ns


@dataclass
class _Lent:
    array: npt.NDArray[Any]
    used: bool = False


@dataclass
class _Pad:
    fmt: Format
    lent: _Lent | None = None
    ended: bool = False
    frames: list[Frame | Packet] = field(default_factory=list)
    zero_copy: int = 0  # frames emitted in a buffer the harness lent


def _bind(hook: Callable[[str, Any], Actions], name: str, value: Any) -> Callable[[], Actions]:
    return lambda: hook(name, value)


class ActorHarness:
    """Runs one actor of class `cls` in this process and records every action its hooks return."""

    def __init__(self, cls: type[Actor[Any]], options: Mapping[str, Any] | Any = None, *,
                 input_formats: Mapping[str, Format] | None = None, node_id: str = "node",
                 restart_count: int = 0, clock: Callable[[], int] | None = None,
                 lend_buffers: bool = True, output_dir: str = ".",
                 pix_fmts: Mapping[str, str] | None = None) -> None:
        self.cls = cls
        self.input_formats = dict(input_formats or {})
        self.options = self._options(options)
        self.output_formats = dict(cls.output_formats(self.options, self.input_formats))
        for pad, pix_fmt in (pix_fmts or {}).items():  # what the loader's negotiation chose for an edge
            fmt = self.output_formats[pad]
            if not isinstance(fmt, VideoFormat):
                raise ValueError(f"pix_fmts: output {pad!r} is not video ({fmt.describe()})")
            self.output_formats[pad] = dataclasses.replace(fmt, pix_fmt=pix_fmt)
        self.clock = clock if clock is not None else ManualClock()
        self.lend_buffers = lend_buffers
        self.pads = {pad: _Pad(fmt) for pad, fmt in self.output_formats.items()}
        self.actions: list[Action] = []  # everything every hook returned, in order (replies excluded)
        self.replies: list[Any] = []
        self.finished: str | None = None
        self._changed: set[str] = set()  # outputs a ChangeFormat changed during the current hook
        self.ctx = Context(node_id=node_id, restart_count=restart_count, clock=self.clock,
                           input_formats=self.input_formats, output_formats=self.output_formats,
                           lend=self._lend, output_dir=output_dir)
        self.actor = cls(self.options)
        self._hook("setup", lambda: self.actor.setup(self.ctx))

    def _options(self, options: Mapping[str, Any] | Any) -> Any:
        if options is None:
            options = {}
        if isinstance(options, Mapping):
            from .topology.loader import validate_options  # the loader's own option checks

            name = self.cls.__name__
            built = validate_options(self.cls, name, options,
                                     where_of=lambda opt: f"{name}.options" + (f".{opt}" if opt else ""))
        else:
            check_instance(options)
            built = options
        self.cls.validate(built, self.input_formats)
        return built

    # ---- buffers ---------------------------------------------------------------------------
    def _lend(self, pad: str) -> npt.NDArray[Any] | None:
        out = self.pads.get(pad)
        if not self.lend_buffers or out is None or out.lent is not None or out.ended:
            return None
        shape = getattr(out.fmt, "shape", None)
        if shape is None:  # a pad that carries packets
            return None
        out.lent = _Lent(np.empty(tuple(shape), dtype=getattr(out.fmt, "dtype", "uint8")))
        return out.lent.array

    # ---- hooks -----------------------------------------------------------------------------
    def _hook(self, name: str, call: Callable[[], Actions]) -> list[Action]:
        rest, reply, misplaced = take_reply(call() or (), replying=name == "control")
        if misplaced:
            raise ActorFailedError(f"Reply is only allowed from on_control, not the {name} hook")
        for action in rest:
            self._perform(action)
        for out in self.pads.values():  # lent buffers live for one hook call
            out.lent = None
        self.actions.extend(rest)
        if name == "control":
            self.replies.append(reply)
        self._last_reply = reply
        return rest

    def _perform(self, action: Action) -> None:
        if isinstance(action, Emit):
            out = self.pads.get(action.pad)
            if out is None:
                raise ActorFailedError(f"no output pad {action.pad!r}")
            media = action.media
            if isinstance(media, Frame):
                shape = getattr(out.fmt, "shape", None)
                dtype = np.dtype(getattr(out.fmt, "dtype", "uint8"))
                if shape is None or media.data.shape != tuple(shape) or media.data.dtype != dtype:
                    raise ActorFailedError(f"{action.pad}: frame {media.data.shape} {media.data.dtype} does not "
                                           f"match {out.fmt.describe()}")
                if out.lent is not None and media.data is out.lent.array:
                    out.zero_copy += 1
            if not out.ended:
                out.frames.append(media)
        elif isinstance(action, EndOfStream):
            for pad, out in self.pads.items():
                if action.pad is None or pad == action.pad:
                    out.ended = True
        elif isinstance(action, Finish):
            self.finished = action.reason
        elif isinstance(action, ChangeFormat):
            out = self.pads.get(action.pad)
            if out is None:
                raise ActorFailedError(f"ChangeFormat names no output pad {action.pad!r}")
            if action.fmt.kind != out.fmt.kind:
                raise FormatChangeError(f"{action.pad}: cannot change {out.fmt.describe()} into "
                                        f"{action.fmt.describe()}; a pad keeps its media kind")
            out.fmt = action.fmt
            out.lent = None
            self.output_formats[action.pad] = action.fmt
            self._changed.add(action.pad)
        elif not isinstance(action, Event):
            raise ActorFailedError(f"hook returned {action!r}, not an action")

    def frame(self, pad: str, media: Frame | Packet) -> list[Action]:
        """Deliver a frame or packet on input pad `pad` (`on_frame`); returns that call's actions."""
        if pad not in self.input_formats:
            raise ActorFailedError(f"input pad {pad!r} is not linked (linked: {', '.join(self.input_formats)})")
        return self._hook("frame", lambda: self.actor.on_frame(pad, media))

    def tick(self, now_ns: int | None = None) -> list[Action]:
        """`on_tick` at `now_ns` (default: the clock; a `ManualClock` is moved there first)."""
        if now_ns is None:
            now_ns = self.clock()
        elif isinstance(self.clock, ManualClock):
            self.clock.now_ns = now_ns
        t = now_ns
        return self._hook("tick", lambda: self.actor.on_tick(t))

    def control(self, command: str, **args: Any) -> Any:
        """Send a control command; returns the `Reply` value (None when the actor replied nothing)."""
        self._hook("control", lambda: self.actor.on_control(command, dict(args)))
        return self._last_reply

    def set(self, **changes: Any) -> dict[str, Any]:
        """`set` live options exactly as the runtime does; returns the changed values (its reply)."""
        cls, fmts = self.cls, self.input_formats
        new, changed = apply_set(cls.Options, self.actor.options, changes, node_id=self.ctx.node_id,
                                 validate=lambda o: cls.validate(o, fmts))
        self.actor.replace_options(new)
        self.options = new
        for name, value in changed.items():
            self._hook("option", _bind(self.actor.on_option_changed, name, value))
        return dict(changed)

    def format_changed(self, pad: str, fmt: Format) -> list[Action]:
        """A format change on input `pad`, as the runtime delivers it: the port check, the hook, then
        the outputs the hook left alone follow `output_formats()` (returned as `ChangeFormat`s too)."""
        if pad not in self.input_formats:
            raise ActorFailedError(f"input pad {pad!r} is not linked (linked: {', '.join(self.input_formats)})")
        check_input_format(self.cls, pad, fmt, where=self.ctx.node_id)
        self._changed = set()
        actions = self._hook("format", lambda: self.actor.on_format_changed(pad, fmt))
        inputs = {**self.input_formats, pad: fmt}
        follow = [ChangeFormat(p, f) for p, f in derived_output_changes(
            self.cls, self.actor.options, inputs, self.output_formats, self._changed,
            where=self.ctx.node_id).items()]
        for action in follow:
            self._perform(action)
        self.actions.extend(follow)
        self.input_formats[pad] = fmt
        return actions + follow

    def eos(self, pad: str) -> list[Action]:
        return self._hook("eos", lambda: self.actor.on_eos(pad))

    def stop(self) -> list[Action]:
        return self._hook("stop", self.actor.stop)

    def metrics(self) -> dict[str, Any]:
        return self.actor.metrics()

    # ---- what came out ---------------------------------------------------------------------
    def emitted(self, pad: str) -> list[Frame | Packet]:
        """Every frame or packet emitted on output pad `pad` so far."""
        return self.pads[pad].frames

    def zero_copy(self, pad: str) -> int:
        """How many of them were rendered into a buffer lent by `ctx.output_buffer` (no copy)."""
        return self.pads[pad].zero_copy

    def events(self, name: str | None = None) -> list[Event]:
        """The `Event` actions so far (only those called `name`, if given)."""
        return [a for a in self.actions if isinstance(a, Event) and (name is None or a.name == name)]
