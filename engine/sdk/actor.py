"""The actor contract: ports, typed options, hooks and the actions hooks return.

An actor kind is one module in `actors/` holding one public `Actor` subclass; the topology `kind` is
the module's file name.  The class declares, without starting anything:

- `inputs` / `outputs`: pad name -> `InPort` / `OutPort`;
- `Options`: a frozen dataclass with typed, defaulted fields (fields without a default are required);
- `live_options`: option names that `set` may change while running;
- `output_formats(options, input_formats)`: the format on each output pad, so the loader can check
  every link before any process starts.

Hooks hold the logic and return actions; the runtime does the I/O::

    setup()                          once, in the actor process, before the first frame
    on_frame(pad, frame) -> actions  a frame or packet arrived on an input pad
    on_tick(now_ns) -> actions       called every `tick_interval_ns` (sources produce frames here)
    on_control(command, args) -> result   a control command (`set` is handled by the runtime)
    on_eos(pad) -> actions           an input ended (the default ends the outputs once all inputs ended)
    stop() -> actions                orderly end: flush encoders, finalise files

Hooks report errors by raising an `EngineError` subclass; the runtime reports it with its code and
the supervisor decides what happens next.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy.typing as npt

from .errors import UnknownCommandError
from .formats import Format, Frame, MediaKind, Packet

Policy = Literal["block", "drop_oldest", "drop_newest"]
POLICIES: tuple[str, ...] = ("block", "drop_oldest", "drop_newest")


@dataclass(frozen=True)
class InPort:
    """An input pad: the media kind it takes, codecs it accepts and its default overflow policy."""

    kind: MediaKind
    codecs: tuple[str, ...] = ()  # for encoded inputs: accepted codecs; empty = any
    pix_fmts: tuple[str, ...] = ("rgb24",)  # for video inputs
    policy: Policy = "drop_oldest"
    required: bool = True

    def accepts(self, fmt: Format) -> str | None:
        """None if `fmt` can be linked here, else a short reason."""
        if fmt.kind != self.kind:
            return f"expects {self.kind}, got {fmt.describe()}"
        codec = getattr(fmt, "codec", None)
        if self.kind == "encoded" and self.codecs and codec not in self.codecs:
            return f"expects {'/'.join(self.codecs)}, got {fmt.describe()}"
        pix_fmt = getattr(fmt, "pix_fmt", None)
        if self.kind == "video" and self.pix_fmts and pix_fmt not in self.pix_fmts:
            return f"expects pixel format {'/'.join(self.pix_fmts)}, got {fmt.describe()}"
        return None


@dataclass(frozen=True)
class OutPort:
    """An output pad; `default` marks the pad that `inputs: {pad: node}` (without `/pad`) means."""

    kind: MediaKind
    default: bool = False
    slots: int = 0  # ring slots; 0 = the runtime's default for the kind


@dataclass
class Emit:
    """Send a frame or packet on an output pad."""

    pad: str
    media: Frame | Packet


@dataclass
class Event:
    """Publish an event on `events.<node>` (e.g. `connected`, `snapshot_saved`)."""

    name: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass
class EndOfStream:
    """End an output pad (all pads when `pad` is None); downstream sees `on_eos`."""

    pad: str | None = None


@dataclass
class Finish:
    """The actor is done (e.g. a file source reached its end without `loop`): stop normally."""

    reason: str = "finished"


Action = Emit | Event | EndOfStream | Finish
Actions = list[Action] | None


@dataclass(frozen=True)
class NoOptions:
    pass


OptionsT = TypeVar("OptionsT")


class Actor(Generic[OptionsT]):
    """Base of every actor kind.  Subclasses set the class attributes and override hooks."""

    inputs: ClassVar[Mapping[str, InPort]] = {}
    outputs: ClassVar[Mapping[str, OutPort]] = {}
    Options: ClassVar[type[Any]] = NoOptions
    live_options: ClassVar[tuple[str, ...]] = ()
    #: ranges for numeric live options, checked by `set`: name -> (min, max)
    option_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {}
    #: role used for shutdown order: sources are stopped first
    is_source: ClassVar[bool] = False
    #: the topology's `output_dir` (set by the runtime): a file a command names must stay inside it
    #: (`mediaengine.sdk.outputs.OutputDir`)
    output_dir: str = "."

    def __init__(self, options: OptionsT, *, node_id: str = "", input_formats: Mapping[str, Format] | None = None,
                 output_formats: Mapping[str, Format] | None = None) -> None:
        self.options = options
        self.node_id = node_id
        self.input_formats: dict[str, Format] = dict(input_formats or {})
        self.output_formats_: dict[str, Format] = dict(output_formats or {})
        self.tick_interval_ns: int | None = None

    # ---- static description ------------------------------------------------------------------
    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        """Format on each output pad; the default passes the first input's format through."""
        if not cls.outputs:
            return {}
        if input_formats:
            first = next(iter(input_formats.values()))
            return {pad: first for pad in cls.outputs}
        raise NotImplementedError(f"{cls.__name__} must define output_formats()")

    @classmethod
    def default_output(cls) -> str | None:
        for pad, port in cls.outputs.items():
            if port.default:
                return pad
        return next(iter(cls.outputs), None)

    _lend_buffer: Callable[[str], npt.NDArray[Any] | None] | None = None  # set by the runtime

    def output_buffer(self, pad: str) -> npt.NDArray[Any] | None:
        """A writable array of `pad`'s frame shape that lives in a free slot of the pad's ring.

        Render, decode or copy the output frame into it and `Emit` a `Frame` whose `data` is this very
        array: the frame then reaches every consumer without the runtime's copy into the ring (one
        full-frame copy saved per hop).  One buffer per pad until it is emitted; None when there is
        none to lend (outside an actor process, e.g. in unit tests, or a second call before the
        first buffer was emitted): then fill an array of your own, as before.  A buffer that is not
        emitted is simply given back.
        """
        lend = self._lend_buffer
        return lend(pad) if lend is not None else None

    # ---- hooks -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Open devices, codecs and files.  Runs in the actor process."""

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        return None

    def on_tick(self, now_ns: int) -> Actions:
        return None

    def on_control(self, command: str, args: dict[str, Any]) -> Any:
        raise UnknownCommandError(f"{type(self).__name__} has no command {command!r}")

    def on_option_changed(self, name: str, value: Any) -> None:
        """Called after `set` changed a live option (self.options is already the new value)."""

    def on_eos(self, pad: str) -> Actions:
        return None

    def stop(self) -> Actions:
        return None


# ---- option handling (used by the loader and by `set`) -------------------------------------------

def option_fields(options_cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(options_cls)}


def resolved_hints(options_cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(options_cls)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check `value` against type `tp`; ints are accepted for floats.  Returns (ok, value)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin is Literal:
        return (value in typing.get_args(tp)), value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False, value
        args = typing.get_args(tp)
        if not args:
            return True, tuple(value)
        out = []
        for item in value:
            ok, v = coerce(item, args[0])
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out)
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        return isinstance(value, int | float), float(value) if isinstance(value, int | float) else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp), value
