"""The actor contract: ports, typed options, hooks and the actions hooks return.

An actor kind is one module in `actors/` holding one public `Actor` subclass; the topology `kind` is
the module's file name.  The class declares, without starting anything:

- `inputs` / `outputs`: pad name -> `InPort` / `OutPort`;
- `Options`: a frozen dataclass whose fields are declared with `option()` (type, default, range or
  choices, live or not, doc; see `mediaengine.sdk.options`); fields without a default are required;
- `validate(options, input_formats)`: the rules that involve several options or the input formats;
- `output_formats(options, input_formats)`: the format on each output pad, so the loader can check
  every link before any process starts.

The loader validates the options once; the actor is built with the frozen, validated instance
(`cls(options)`).  Hooks hold the logic and have effects only through the actions they return; the
runtime does the I/O::

    setup(ctx) -> actions             once, in the actor process, before the first frame
    on_frame(pad, frame) -> actions   a frame or packet arrived on an input pad
    on_tick(now_ns) -> actions        called every `tick_interval_ns` (sources produce frames here)
    on_control(command, args) -> actions   a control command; `Reply(value)` answers it
    on_option_changed(name, value) -> actions   `set` changed a live option (self.options is new)
    on_eos(pad) -> actions            an input ended (the default ends the outputs once all inputs ended)
    on_format_changed(pad, fmt) -> actions   the frames that follow on an input pad have a new format
    stop() -> actions                 orderly end: flush encoders, finalise files
    metrics() -> dict                 the actor's own counters, published with the runtime's metrics

`setup` receives a `Context`: the node id, the restart count, the engine clock, the input and output
formats, and `output_buffer(pad)` (a ring slot to render into).  Hooks report errors by raising an
`EngineError` subclass; the runtime reports it with its code and the supervisor decides what happens
next.
"""

from __future__ import annotations

import dataclasses
import re
import time
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy.typing as npt

from .errors import UnknownCommandError
from .formats import Format, Frame, MediaKind, Packet
from .options import (  # re-exported: the option helpers were first defined here
    coerce,
    live_option_names,
    option,
    option_fields,
    resolved_hints,
    type_name,
)

Policy = Literal["block", "drop_oldest", "drop_newest"]
#: the one list of overflow policies (the loader, the schema and the ring read it)
POLICIES: tuple[str, ...] = typing.get_args(Policy)


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


def is_template(pad: str) -> bool:
    """A request-pad template such as ``in_%s`` or ``in_%d``: any number of pads matching it."""
    return "%s" in pad or "%d" in pad or "%u" in pad


def template_regex(pad: str) -> re.Pattern[str]:
    parts = re.split(r"(%[sdu])", pad)
    pattern = "".join("[0-9]+" if p in ("%d", "%u") else "[A-Za-z0-9_]+" if p == "%s" else re.escape(p)
                      for p in parts)
    return re.compile(pattern)


def match_input_pad(pad: str, ports: Mapping[str, InPort]) -> str | None:
    """The declared pad (or template) that input pad `pad` instantiates, or None."""
    if pad in ports:
        return pad
    for key in ports:
        if is_template(key) and template_regex(key).fullmatch(pad):
            return key
    return None


@dataclass(frozen=True)
class OutPort:
    """An output pad; `default` marks the pad that `inputs: {pad: node}` (without `/pad`) means.

    `pix_fmts` (video pads) are the pixel formats the pad can emit, preferred first: the loader gives
    the edge the first one every consumer accepts (or the one a `pix_fmt` option forces), and the
    actor reads the choice in `ctx.output_formats[pad].pix_fmt`.  Empty: the pad emits exactly the
    format `output_formats()` computes.
    """

    kind: MediaKind
    default: bool = False
    slots: int = 0  # ring slots; 0 = the runtime's default for the kind
    pix_fmts: tuple[str, ...] = ()


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
class ChangeFormat:
    """From now on the frames on output `pad` have format `fmt` (GStreamer's CAPS event, Membrane's
    `stream_format` action).  Return it before the first frame of the new format: the runtime sends
    it down the edge in order with the frames, and every consumer gets `on_format_changed` before
    that first frame.  The media kind cannot change, and a raw frame must fit the ring's slots
    (a `VideoFormat`'s `max_width` x `max_height`, declared when the topology is loaded)."""

    pad: str
    fmt: Format


@dataclass
class Finish:
    """The actor is done (e.g. a file source reached its end without `loop`): stop normally."""

    reason: str = "finished"


@dataclass
class Reply:
    """The answer to the control command being handled (only from `on_control`)."""

    value: Any = None


@dataclass
class Configure:
    """Set live options of another node of the same engine (what `ctl set` does), e.g. a rate
    controller setting the encoder's `bitrate_kbps`.  The supervisor routes it; the target's refusal
    (unknown node, option not live, out of range) comes back as event `configure_failed` on this
    node, never as an exception here: the two nodes restart independently."""

    node: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


Action = Emit | Event | EndOfStream | Finish | Reply | ChangeFormat | Configure
Actions = list[Action] | None


def _no_buffer(pad: str) -> npt.NDArray[Any] | None:
    return None


def _engine_clock() -> int:
    return time.monotonic_ns()


@dataclass(frozen=True)
class Context:
    """What the runtime tells an actor in `setup(ctx)`: who it is and what it is connected to."""

    node_id: str = ""
    restart_count: int = 0  # 0 on the first start of this node in an engine run
    clock: Callable[[], int] = _engine_clock  # engine time in ns (the timeline every pts is on)
    input_formats: Mapping[str, Format] = field(default_factory=dict)  # linked input pads only
    output_formats: Mapping[str, Format] = field(default_factory=dict)
    lend: Callable[[str], npt.NDArray[Any] | None] = _no_buffer  # the runtime's ring-slot lender
    #: the topology's `output_dir`: a file a command names must stay inside it (`sdk.outputs.OutputDir`)
    output_dir: str = "."
    #: the engine's private (0700) runtime directory, where an actor may bind its own `ipc://` sockets
    #: (e.g. `external_source`'s ingress); "" when there is none (the test harness)
    runtime_dir: str = ""

    def output_buffer(self, pad: str) -> npt.NDArray[Any] | None:
        """A writable array of `pad`'s frame shape that lives in a free slot of the pad's ring.

        Render, decode or copy the output frame into it and `Emit` a `Frame` whose `data` is this very
        array: the frame then reaches every consumer without the runtime's copy into the ring (one
        full-frame copy saved per hop).  One buffer per pad per hook call until it is emitted; None
        when there is none to lend (a second call before the first buffer was emitted, a pad that
        carries packets): then fill an array of your own.  A buffer that is not emitted is simply
        given back.  `mediaengine.testing.ActorHarness` lends buffers too.
        """
        return self.lend(pad)


@dataclass(frozen=True)
class NoOptions:
    pass


OptionsT = TypeVar("OptionsT")


class Actor(Generic[OptionsT]):
    """Base of every actor kind.  Subclasses set the class attributes and override hooks."""

    inputs: ClassVar[Mapping[str, InPort]] = {}
    outputs: ClassVar[Mapping[str, OutPort]] = {}
    Options: ClassVar[type[Any]] = NoOptions
    #: role used for shutdown order: sources are stopped first
    is_source: ClassVar[bool] = False
    #: built-in node commands (`stop`; `pause`/`resume` of video sources) that this kind answers in its
    #: own `on_control` instead: `music`'s `stop` stops the music, not the node
    own_commands: ClassVar[frozenset[str]] = frozenset()
    #: modules the engine's fork server imports ahead of time when a topology uses this kind: heavy
    #: libraries that `setup` would otherwise import in every new process, so a restart does not pay
    #: for them (an import that fails there is left to `setup`, which reports it)
    preload: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: OptionsT) -> None:
        self.options = options  # frozen and validated by the loader; `set` replaces it with a new one
        self.tick_interval_ns: int | None = None  # read by the runtime after every hook

    def replace_options(self, options: OptionsT) -> None:
        """Take the new frozen options of a live `set` (the runtime calls it, then `on_option_changed`)."""
        self.options = options

    # ---- static description ------------------------------------------------------------------
    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        """Check the rules that involve several options or the input formats; raise `OptionError`.

        Types, ranges and choices of single options are checked from their declarations before this
        runs.  The loader calls it once per node; `set` calls it with the new options.
        """

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

    # ---- hooks -------------------------------------------------------------------------------
    def setup(self, ctx: Context) -> Actions:
        """Open devices, codecs and files.  Runs in the actor process; keep `ctx` if hooks need it."""
        return None

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        return None

    def on_tick(self, now_ns: int) -> Actions:
        return None

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        """Handle a control command; return `[Reply(value)]` (plus any other actions) to answer it."""
        raise UnknownCommandError(f"{type(self).__name__} has no command {command!r}")

    def on_option_changed(self, name: str, value: Any) -> Actions:
        """Called after `set` changed a live option (self.options is already the new value)."""
        return None

    def on_eos(self, pad: str) -> Actions:
        return None

    def on_format_changed(self, pad: str, fmt: Format) -> Actions:
        """The frames that follow on input `pad` have format `fmt` (called before the first of them).

        The runtime has already checked that the pad's port accepts `fmt` (else `FormatChangeError`).
        The context's `input_formats[pad]` still holds the old format during the call and the new one
        after it.  Outputs the hook does not change with a `ChangeFormat` follow `output_formats()` of
        the new inputs, so a pass-through filter needs no code.  Override it to reconfigure (e.g.
        reopen an encoder); raise `FormatChangeError` to refuse a format.
        """
        return None

    def stop(self) -> Actions:
        return None

    def metrics(self) -> dict[str, Any]:
        """The actor's own counters; the runtime publishes them once a second as `metrics.actor`."""
        return {}


__all__ = [
    "POLICIES", "Action", "Actions", "Actor", "Context", "Emit", "EndOfStream", "Event", "Finish", "InPort",
    "NoOptions", "OutPort", "Policy", "Reply", "coerce", "live_option_names", "option", "option_fields",
    "resolved_hints", "type_name",
]
