"""Switcher (input selector): a `main` video input and any number of named alternates, one goes out.

The alternates are input pads named as the user likes (`pause`, `poor_network`, `brb`, ...);
`mediaengine ctl sel select pause` switches to one at once (its picture is the next frame out),
`ctl sel select main` back.  The frames of a live selected input pass through as they come (one copy,
no added latency); when it is slower than the output frame rate (a still at 5 fps), frozen, late or
without a picture yet, the switcher sends the shown picture on its own clock, so a switch never
leaves a gap.
An alternate of another size is scaled to the output size (the main input's).  After a restart the
switcher comes back with `initial` selected (it keeps no state across restarts).

Pause pictures: with `pause_mode: image` (the default) `select pause` shows the `pause` input (e.g.
an `image_source` with a still); with `pause_mode: freeze`, or when no `pause` input is linked, it
shows the last main picture, frozen.  `select freeze` always freezes.  Audio does not go through the
switcher: it goes on untouched from its own source to the encoder.

    nodes:
      - {id: cam,   kind: camera, options: {width: 1280, height: 720, fps: 30}}
      - {id: still, kind: image_source, options: {path: assets/paused.png, width: 1280, height: 720, fps: 5}}
      - {id: sel,   kind: switcher, inputs: {main: cam, pause: still}}
      - {id: venc,  kind: video_encoder, inputs: {in: sel}}

A name that is neither `main`, `freeze` nor a linked input is refused with `UnknownLayerError`
(1335); the selection stays.  Each switch publishes the event `selected` {from, to}.

Network-poor picture: with `poor_input: poor` (an input, e.g. a "weak network" still) the live option
`network_poor: true` shows that input instead of the selection, and `false` goes back to the selection
(event `network_picture` {network_poor, showing}).  The RTMP sender's rate controller sets it on
`network_poor` and clears it on `network_recovered` when its `abr_poor_switcher` names this node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from mediaengine.actors._pictures import LatestPicture
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Emit, Event, InPort, OutPort, Reply, option
from mediaengine.sdk.errors import FormatError, FormatMismatchError, OptionError, UnknownLayerError
from mediaengine.sdk.formats import NS, Format, Frame, Packet, VideoFormat
from numpy.typing import NDArray

__all__ = ["Switcher", "SwitcherOptions", "fit_to"]

FREEZE = "freeze"


@dataclass(frozen=True)
class SwitcherOptions:
    fps: float = option(0.0, range=(0.0, 120.0), doc="output frames per second; 0 = the main input's")
    pause_mode: Literal["image", "freeze"] = option(
        "image", choices=("image", "freeze"), live=True,
        doc="`select pause`: image = the `pause` input's picture, freeze = the last main picture (live)")
    initial: str = option("main", doc="the input selected at start")
    poor_input: str = option("", doc="the input shown while `network_poor` is true (a 'weak network' slate)")
    network_poor: bool = option(False, live=True,
                                doc="show `poor_input` instead of the selection; set by the RTMP sender's rate "
                                    "controller (its `abr_poor_switcher`) on network_poor / network_recovered")


# ---- pure function --------------------------------------------------------------------------------

def fit_to(src: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """`src` as a `width` x `height` picture: itself if it already is, else resized (aspect ignored:
    an alternate is made for the output size; INTER_AREA when shrinking)."""
    h, w = src.shape[:2]
    if (w, h) == (width, height):
        return src
    interp = cv2.INTER_AREA if w * h > width * height else cv2.INTER_LINEAR
    return np.asarray(cv2.resize(src, (width, height), interpolation=interp), dtype=np.uint8)


# ---- the actor ------------------------------------------------------------------------------------

class Switcher(Actor[SwitcherOptions]):
    """Passes the selected input's frames through, and fills the gaps of a slow or frozen one."""

    inputs = {
        "main": InPort("video", policy="drop_oldest"),
        "%s": InPort("video", policy="drop_oldest", required=False),  # the named alternates
    }
    outputs = {"out": OutPort("video", default=True)}
    Options = SwitcherOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        o: SwitcherOptions = options
        if input_formats and o.initial not in (*input_formats, FREEZE):
            raise OptionError(f"initial={o.initial!r} names no input; inputs: "
                              f"{', '.join(sorted(input_formats))}", where="initial")
        if input_formats and o.poor_input and o.poor_input not in input_formats:
            raise OptionError(f"poor_input={o.poor_input!r} names no input; inputs: "
                              f"{', '.join(sorted(input_formats))}", where="poor_input")

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: SwitcherOptions = options
        main = input_formats.get("main")
        if not isinstance(main, VideoFormat):
            raise FormatMismatchError("switcher needs a video input on `main`")
        return {"out": VideoFormat(main.width, main.height, o.fps or main.fps)}

    def setup(self, ctx: Context) -> Actions:
        self._ctx = ctx
        fmt = ctx.output_formats.get("out") or self.output_formats(self.options, ctx.input_formats)["out"]
        assert isinstance(fmt, VideoFormat)
        self._fmt = fmt
        self.tick_interval_ns = round(NS / fmt.fps)
        self._inputs = {pad: LatestPicture() for pad in ctx.input_formats}
        self._selected = self.options.initial
        self._frozen: NDArray[np.uint8] | None = None
        self._scaled: tuple[str, int, NDArray[np.uint8]] | None = None  # (pad, version, picture)
        self._own: NDArray[np.uint8] | None = None
        self._last: NDArray[np.uint8] | None = None  # what went out last (shown while a picture is missing)
        self._frames = 0
        self._switches = 0
        self._last_pts: int | None = None
        self._last_emit_ns: int | None = None
        return None

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame) or media.data.ndim != 3:
            raise FormatError(f"switcher expects rgb24 video frames on {pad!r}, got {type(media).__name__}")
        latest = self._inputs.get(pad)
        if latest is None:
            raise FormatError(f"switcher got a frame on {pad!r}, which is not one of its inputs")
        now = self._ctx.clock()
        latest.keep(media.data, now)
        if pad != self._showing() or self._clocked():
            return None
        return self._emit(now, media.pts_ns)  # the selected input passes through as it comes: no added latency

    def on_eos(self, pad: str) -> Actions:
        if pad in self._inputs:
            self._inputs[pad].ended = True
        return None

    def on_format_changed(self, pad: str, fmt: Format) -> Actions:
        return []  # the output keeps the size it started with; other sizes are scaled to it

    def _showing(self) -> str:
        """The input whose picture goes out (FREEZE for the frozen main picture)."""
        poor = self.options.poor_input
        if self.options.network_poor and poor and poor in self._inputs:
            return poor
        if self._selected == "pause" and (self.options.pause_mode == FREEZE or "pause" not in self._inputs):
            return FREEZE
        return self._selected

    def _clocked(self) -> bool:
        """True when the output follows the switcher's clock (every tick sends the shown picture): a frozen
        picture, or an input slower than the output (a still at 5 fps).  Otherwise the input's own frames go
        out as they come and the clock only bridges a stall."""
        showing = self._showing()
        if showing == FREEZE:
            return True
        fmt = self._ctx.input_formats.get(showing)
        return isinstance(fmt, VideoFormat) and fmt.fps < 0.9 * self._fmt.fps

    def _picture(self) -> NDArray[np.uint8] | None:
        showing = self._showing()
        if showing == FREEZE:
            if self._frozen is None:
                main = self._inputs["main"].picture
                self._frozen = None if main is None else fit_to(main, self._fmt.width, self._fmt.height).copy()
            return self._frozen
        latest = self._inputs[showing]
        if latest.picture is None:
            return None
        if self._scaled is not None and self._scaled[:2] == (showing, latest.version):
            return self._scaled[2]
        picture = fit_to(latest.picture, self._fmt.width, self._fmt.height)
        if picture is not latest.picture:
            self._scaled = (showing, latest.version, picture)
        return picture

    def on_tick(self, now_ns: int) -> Actions:
        """Keep the output going at its frame rate: every tick when the shown picture is frozen or comes
        slower than that (a still at 5 fps), else only when the live input is late by half a frame."""
        interval = self.tick_interval_ns
        assert interval is not None, "setup() not called"
        if not self._clocked() and self._last_emit_ns is not None and now_ns - self._last_emit_ns < interval * 3 // 2:
            return None  # a live input that is on time
        pts = now_ns if self._last_pts is None else self._last_pts + interval
        return self._emit(now_ns, min(pts, now_ns))

    def _emit(self, now_ns: int, pts_ns: int) -> list[Action]:
        picture = self._picture()
        if picture is None:
            picture = self._last  # the selected input has no picture yet: keep showing the last one
        if picture is None:
            return []  # nothing has arrived yet
        shape = (self._fmt.height, self._fmt.width, 3)
        target = self._ctx.output_buffer("out")
        if target is None or target.shape != shape:
            if self._own is None:
                self._own = np.empty(shape, dtype=np.uint8)
            target = self._own
        np.copyto(target, picture)
        self._last = target if target is self._own else picture
        if self._last_pts is not None and pts_ns <= self._last_pts:
            pts_ns = self._last_pts + 1_000_000  # strictly increasing across inputs with their own timelines
        self._last_pts, self._last_emit_ns = pts_ns, now_ns
        self._frames += 1
        return [Emit("out", Frame(target, pts_ns=pts_ns, seq=self._frames))]

    def on_option_changed(self, name: str, value: Any) -> Actions:
        if name != "network_poor":
            return None
        now = self._ctx.clock()  # the network picture goes out at once, like a `select`
        pts = now if self._last_pts is None else min(now, self._last_pts + (self.tick_interval_ns or 0))
        return [Event("network_picture", {"network_poor": bool(value), "showing": self._showing()}),
                *self._emit(now, pts)]

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "select":
            positional = list(args.get("args", []) or [])
            name = args.get("input") or args.get("id") or (positional[0] if positional else None)
            if not isinstance(name, str) or name not in (*self._inputs, FREEZE, "pause"):
                raise UnknownLayerError(f"cannot select {name!r}; inputs: {', '.join(self._inputs)}, or freeze",
                                        where=self._ctx.node_id)
            before = self._selected
            self._selected = name
            self._frozen = None  # a new freeze takes the main picture of now
            self._switches += before != name
            # the new picture goes out at once (a still that comes 5 times a second would be late otherwise)
            now = self._ctx.clock()
            pts = now if self._last_pts is None else min(now, self._last_pts + (self.tick_interval_ns or 0))
            return [Reply({"selected": name, "showing": self._showing()}),
                    Event("selected", {"from": before, "to": name, "showing": self._showing()}),
                    *(self._emit(now, pts) if before != name else [])]
        if command == "selected":
            return [Reply({"selected": self._selected, "showing": self._showing(), "inputs": list(self._inputs)})]
        return super().on_control(command, args)

    def metrics(self) -> dict[str, Any]:
        return {"frames": self._frames, "selected": self._selected, "switches": self._switches,
                "showing": self._showing(), "network_poor": self.options.network_poor}
