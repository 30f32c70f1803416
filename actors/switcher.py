"""Switcher (input selector): a `main` video input and any number of named alternates, one goes out.

The alternates are input pads named as the user likes (`pause`, `poor_network`, `brb`, ...);
`mediaengine ctl sel select pause` switches to one at the next output frame, `ctl sel select main`
back.  The switcher runs on its own clock at the output frame rate and sends the newest picture of
the selected input on every tick, so a switch never leaves a gap, whatever the inputs' rates.  An
alternate of another size is scaled to the output size (the main input's).

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
from mediaengine.sdk.pacing import video_indices_due
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
    """Sends the selected input's newest picture on every tick of its own clock."""

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
        self._next: int | None = None
        self._inputs = {pad: LatestPicture() for pad in ctx.input_formats}
        self._selected = self.options.initial
        self._frozen: NDArray[np.uint8] | None = None
        self._scaled: tuple[str, int, NDArray[np.uint8]] | None = None  # (pad, version, picture)
        self._own: NDArray[np.uint8] | None = None
        self._last: NDArray[np.uint8] | None = None  # what went out last (shown while a picture is missing)
        self._frames = 0
        self._switches = 0
        return None

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame) or media.data.ndim != 3:
            raise FormatError(f"switcher expects rgb24 video frames on {pad!r}, got {type(media).__name__}")
        latest = self._inputs.get(pad)
        if latest is None:
            raise FormatError(f"switcher got a frame on {pad!r}, which is not one of its inputs")
        latest.keep(media.data, self._ctx.clock())
        return None

    def on_eos(self, pad: str) -> Actions:
        if pad in self._inputs:
            self._inputs[pad].ended = True
        return None

    def on_format_changed(self, pad: str, fmt: Format) -> Actions:
        return []  # the output keeps the size it started with; other sizes are scaled to it

    def _showing(self) -> str:
        """The input whose picture goes out (FREEZE for the frozen main picture)."""
        if self._selected == "pause" and (self.options.pause_mode == FREEZE or "pause" not in self._inputs):
            return FREEZE
        return self._selected

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

    def on_tick(self, now_ns: int) -> list[Action]:
        interval = self.tick_interval_ns
        assert interval is not None, "setup() not called"
        k = video_indices_due(self._next, now_ns, interval)[-1]
        self._next = k + 1
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
        self._frames += 1
        return [Emit("out", Frame(target, pts_ns=k * interval, seq=k))]

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
            return [Reply({"selected": name, "showing": self._showing()}),
                    Event("selected", {"from": before, "to": name, "showing": self._showing()})]
        if command == "selected":
            return [Reply({"selected": self._selected, "showing": self._showing(), "inputs": list(self._inputs)})]
        return super().on_control(command, args)

    def metrics(self) -> dict[str, Any]:
        return {"frames": self._frames, "selected": self._selected, "switches": self._switches}
