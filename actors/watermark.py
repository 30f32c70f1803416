"""Watermark filter: up to 3 static and 5 animated images blended onto the video, changed live by command.

A mark is a picture (PNG, JPEG, WebP; alpha honoured) or an animation (an animated GIF, APNG or WebP,
or a folder of numbered frames) placed at `x`, `y` (its top-left corner) with a `width`, all fractions
of the frame; its height follows the picture's aspect ratio.  `opacity` (0..1) multiplies its alpha.
An animation loops with the file's own timing, or over `loop_s` seconds (frames evenly spaced), or at
`fps` for a folder; its clock is media time (frame pts), starting at the first frame it is drawn on.

    nodes:
      - {id: wm, kind: watermark, inputs: {in: cam}, options: {assets_dir: assets, marks: [
          {id: logo, path: assets/logo.png, x: 0.8, y: 0.05, width: 0.15},
          {id: party, path: assets/confetti.gif, x: 0.05, y: 0.7, width: 0.2, opacity: 0.8}]}}

Commands (live; a refused command is an error reply with its code and the stream goes on unchanged):

    mediaengine ctl wm add id=logo path=logo.png x=0.8 y=0.05 width=0.15 [opacity=1] [loop_s=2] [fps=10]
    mediaengine ctl wm move id=logo x=0.7 y=0.1 [width=0.2] [opacity=0.5]
    mediaengine ctl wm remove id=logo
    mediaengine ctl wm list

Each rule is checked from the file's header before the reply; the pixels are decoded on a worker thread
and `add` waits for them at most ADD_WAIT_S (0.25 s), so a client's huge animation never stalls the
node's loop: it is answered `state: loading` and shown later (`mark_added`) or dropped (`mark_failed`
with its code).  A 4th static or 6th animated mark is `MarkLimitError` (1332); a mark that would leave the frame, of
zero size, a taken or unknown id is `MarkError` (1333); a missing file `FileError` (1301), a corrupt one
`ImageDecodeError` (1330), one over 4096x4096 `ImageTooLargeError` (1331).  A `path` in a command is
read only from inside `assets_dir` (default: the topology's `output_dir`), never through a symbolic
link (`InputPathError`, 1334; docs/security.md); paths in the topology are the operator's.

Cost: each picture is scaled once per frame size (and opacity), premultiplied, and kept; per frame only
each mark's rectangle is touched (`cv2.multiply` + `cv2.add`, within 1 level of an exact blend), on top
of the one copy of the frame into the output slot.  Marks added by command are lost when the node
restarts (it comes back with the topology's marks).
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import cv2
import mediaengine.actors._images as _images
import numpy as np
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Emit, Event, InPort, OutPort, Reply, option
from mediaengine.sdk.errors import (
    EngineError,
    FieldError,
    FormatError,
    FormatMismatchError,
    ImageDecodeError,
    MarkError,
    MarkLimitError,
)
from mediaengine.sdk.formats import Format, Frame, Packet, VideoFormat
from numpy.typing import NDArray

__all__ = ["MAX_ANIMATED", "MAX_STATIC", "Placement", "Prepared", "Watermark", "WatermarkOptions", "blend_into",
           "frame_at", "mark_rect", "prepare"]

MAX_STATIC = 3
MAX_ANIMATED = 5
#: how long `add` waits for its picture to decode before it answers `state: loading` (the node's loop must
#: stay well within the heartbeat timeout, 1.5 s by default, whatever a client asks it to decode)
ADD_WAIT_S = 0.25
_MARK_KEYS = {"id", "path", "x", "y", "width", "opacity", "loop_s", "fps"}


@dataclass(frozen=True)
class WatermarkOptions:
    marks: list[dict] = option(  # type: ignore[type-arg]  # options.coerce knows bare `dict` only
        factory=list, doc="marks at start: [{id, path, x, y, width, opacity?, loop_s?, fps?}] (paths as given)")
    assets_dir: str = option("", doc="folder `add` commands may read images from; '' = the topology's output_dir")


# ---- pure functions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Placement:
    """Where a mark sits: top-left corner and width as fractions of the frame; opacity 0..1."""

    x: float
    y: float
    width: float
    opacity: float = 1.0


@dataclass(frozen=True)
class Prepared:
    """A mark frame ready to blend: `premul` = rgb * alpha, `inv` = 255 - alpha (both HxWx3 uint8)."""

    premul: NDArray[np.uint8]
    inv: NDArray[np.uint8]


def mark_rect(frame_w: int, frame_h: int, img_w: int, img_h: int, p: Placement,
              strict: bool = True) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) in pixels of a mark on a frame; the height follows the picture's aspect ratio.

    With `strict`, a mark that would not lie wholly inside the frame, or is smaller than 1 pixel, is
    MarkError; otherwise (a frame that shrank after the mark was placed) the caller clips.
    """
    if not (0.0 <= p.opacity <= 1.0):
        raise MarkError(f"opacity {p.opacity:g} is outside 0..1")
    w = round(p.width * frame_w)
    h = round(w * img_h / img_w) if img_w else 0
    x0, y0 = round(p.x * frame_w), round(p.y * frame_h)
    if strict:
        if w < 1 or h < 1:
            raise MarkError(f"width {p.width:g} makes the mark {w}x{h} pixels on a {frame_w}x{frame_h} frame; "
                            "give a larger width")
        if p.x < 0 or p.y < 0 or x0 + w > frame_w or y0 + h > frame_h:
            raise MarkError(f"a {w}x{h} mark at x={p.x:g}, y={p.y:g} ({x0},{y0}) leaves the {frame_w}x{frame_h} "
                            f"frame; keep x + width <= 1 and y + height <= 1 (height here {h / frame_h:.3f})")
    return x0, y0, max(1, w), max(1, h)


def prepare(rgba: NDArray[np.uint8], w: int, h: int, opacity: float) -> Prepared:
    """Scale an RGBA picture to w x h and premultiply it by alpha * opacity (done once per size).

    All in uint8 with OpenCV (a 512x512 frame in ~0.1 ms): premultiplied before scaling, so soft edges
    get no dark fringe from the colour of transparent pixels."""
    alpha = np.ascontiguousarray(rgba[..., 3])
    premul = cv2.multiply(cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB), cv2.merge([alpha, alpha, alpha]), scale=1.0 / 255.0)
    ih, iw = rgba.shape[:2]
    if (iw, ih) != (w, h):
        interp = cv2.INTER_AREA if w * h < iw * ih else cv2.INTER_LINEAR
        premul = cv2.resize(premul, (w, h), interpolation=interp)
        alpha = cv2.resize(alpha, (w, h), interpolation=interp)
    if opacity < 1.0:
        premul = cv2.convertScaleAbs(premul, alpha=opacity)
        alpha = cv2.convertScaleAbs(alpha, alpha=opacity)
    inv = cv2.subtract(np.full(alpha.shape, 255, np.uint8), alpha)
    return Prepared(np.ascontiguousarray(premul), cv2.merge([inv, inv, inv]))


def blend_into(out: NDArray[np.uint8], m: Prepared, x0: int, y0: int) -> None:
    """out[rect] = out[rect] * (255 - a) / 255 + rgb * a, in place, touching only the mark's rectangle
    (clipped to the frame).  Within 1 level of the exact blend."""
    fh, fw = out.shape[:2]
    h, w = m.premul.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(fw, x0 + w), min(fh, y0 + h)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    roi = out[cy0:cy1, cx0:cx1]
    sy, sx = slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0)
    premul, inv = m.premul[sy, sx], m.inv[sy, sx]
    cv2.multiply(roi, inv, dst=roi, scale=1.0 / 255.0)
    cv2.add(roi, premul, dst=roi)


def frame_at(durations_ms: tuple[int, ...], loop_s: float, t_ns: int) -> int:
    """Index of the animation frame shown `t_ns` after the animation started, looping: with the file's
    durations, or with `loop_s` > 0 split evenly between the frames."""
    n = len(durations_ms)
    if n <= 1:
        return 0
    t_ms = max(0, t_ns) // 1_000_000
    if loop_s > 0:
        loop_ms = max(1, round(loop_s * 1000))
        return min(n - 1, (t_ms % loop_ms) * n // loop_ms)
    ends = _ends(durations_ms)
    return min(n - 1, bisect.bisect_right(ends, t_ms % ends[-1]))


@functools.lru_cache(maxsize=64)
def _ends(durations_ms: tuple[int, ...]) -> tuple[int, ...]:
    """When each frame ends, from the start of the loop (computed once per animation)."""
    return tuple(itertools.accumulate(durations_ms))


# ---- marks ------------------------------------------------------------------------------------------

@dataclass
class _Mark:
    id: str
    path: str
    size: tuple[int, int]  # the picture's (width, height), from its header
    frames: int  # how many pictures it has (1: static)
    place: Placement
    loop_s: float = 0.0
    fps: float = 0.0
    image: _images.MarkImage | None = None  # None while it is decoded in the background
    loading: Future[_images.MarkImage] | None = None
    t0_ns: int | None = None  # pts of the first frame it was drawn on: the animation's clock starts there
    cache_key: tuple[int, int, float] | None = None
    cache: list[Prepared] = field(default_factory=list)
    rect: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def animated(self) -> bool:
        return self.frames > 1

    def prepared(self, image: _images.MarkImage, fw: int, fh: int) -> tuple[list[Prepared], tuple[int, int, int, int]]:
        key = (fw, fh, self.place.opacity)
        if key != self.cache_key:  # a new frame size or opacity: scale once, then reuse on every frame
            self.rect = mark_rect(fw, fh, self.size[0], self.size[1], self.place, strict=False)
            _, _, w, h = self.rect
            self.cache = [prepare(f, w, h, self.place.opacity) for f in image.frames]
            self.cache_key = key
        return self.cache, self.rect

    def describe(self) -> dict[str, Any]:
        loop_s = self.loop_s or (round(sum(self.image.durations_ms) / 1000, 3) if self.image and self.animated else 0.0)
        return {"id": self.id, "path": self.path, "kind": "animated" if self.animated else "static",
                "state": "shown" if self.image is not None else "loading",
                "x": self.place.x, "y": self.place.y, "width": self.place.width, "opacity": self.place.opacity,
                "frames": self.frames, "loop_s": loop_s, "size": list(self.size)}


def _number(args: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = args.get(key, default)
    if value is None:
        raise FieldError(f"`{key}` is required (a number, a fraction of the frame)")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FieldError(f"`{key}` must be a number, got {value!r}")
    return float(value)


def _placement(args: Mapping[str, Any], old: Placement | None = None) -> Placement:
    return Placement(_number(args, "x", old.x if old else None), _number(args, "y", old.y if old else None),
                     _number(args, "width", old.width if old else None),
                     _number(args, "opacity", old.opacity if old else 1.0))


def _check_room(marks: Mapping[str, _Mark], animated: bool, mark_id: str) -> None:
    """MarkLimitError if there is no room for one more static (or animated) mark; loading ones count."""
    n_animated = sum(1 for m in marks.values() if m.animated)
    if animated and n_animated >= MAX_ANIMATED:
        raise MarkLimitError(f"{mark_id!r}: already {n_animated} animated marks, at most {MAX_ANIMATED}; "
                             "remove one first")
    if not animated and len(marks) - n_animated >= MAX_STATIC:
        raise MarkLimitError(f"{mark_id!r}: already {len(marks) - n_animated} static marks, at most {MAX_STATIC}; "
                             "remove one first")


def _mark_id(args: Mapping[str, Any]) -> str:
    mark_id = args.get("id")
    if not isinstance(mark_id, str) or not mark_id:
        raise FieldError(f"`id` must be a non-empty string, got {mark_id!r}")
    return mark_id


def _topology_marks(options: WatermarkOptions, fmt: VideoFormat | None) -> dict[str, _Mark]:
    """Read, decode and place the topology's marks (load time and setup): every rule a command meets."""
    marks: dict[str, _Mark] = {}
    for i, spec in enumerate(options.marks):
        where = f"marks[{i}]"
        if not isinstance(spec, dict):
            raise MarkError(f"must be a mapping {{id, path, x, y, width, ...}}, got {spec!r}", where=where)
        unknown = set(spec) - _MARK_KEYS
        if unknown:
            raise MarkError(f"unknown keys {sorted(unknown)}; a mark has {sorted(_MARK_KEYS)}", where=where)
        try:
            mark_id = _mark_id(spec)
            path = spec.get("path")
            if not isinstance(path, str) or not path:
                raise FieldError(f"`path` must be a non-empty string, got {path!r}")
            place = _placement(spec)
            loop_s, fps = _number(spec, "loop_s", 0.0), _number(spec, "fps", 0.0)
        except FieldError as e:
            raise MarkError(e.message, where=where) from e
        if mark_id in marks:
            raise MarkError(f"id {mark_id!r} is used twice", where=where)
        files, folder = _images.read_trusted(path)
        image = _images.load(files, folder, path, fps)
        _check_room(marks, image.animated, mark_id)
        if fmt is not None:
            iw, ih = image.size
            try:
                mark_rect(fmt.width, fmt.height, iw, ih, place)
            except MarkError as e:
                raise MarkError(e.message, where=where) from e
        marks[mark_id] = _Mark(mark_id, path, image.size, len(image.frames), place, max(0.0, loop_s),
                               max(0.0, fps), image)
    return marks


# ---- the actor ------------------------------------------------------------------------------------

class Watermark(Actor[WatermarkOptions]):
    """Blends static and animated image marks onto every frame (a copy; the input is never modified)."""

    inputs = {"in": InPort("video", policy="drop_oldest")}
    outputs = {"out": OutPort("video", default=True)}
    Options = WatermarkOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        fmt = input_formats.get("in")
        _topology_marks(options, fmt if isinstance(fmt, VideoFormat) else None)

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        fmt = input_formats.get("in")
        if not isinstance(fmt, VideoFormat) or fmt.pix_fmt != "rgb24":
            raise FormatMismatchError("watermark needs rgb24 video on `in`")
        return {"out": fmt}

    def setup(self, ctx: Context) -> None:
        self._ctx = ctx
        fmt = ctx.input_formats.get("in")
        self._marks = _topology_marks(self.options, fmt if isinstance(fmt, VideoFormat) else None)
        self._reader = _images.ConfinedReader.of(self.options.assets_dir or ctx.output_dir)
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{ctx.node_id}-decode")
        self._out: NDArray[np.uint8] | None = None
        self._frames = 0
        self._size = (fmt.width, fmt.height) if isinstance(fmt, VideoFormat) else (0, 0)

    def stop(self) -> Actions:
        self._decoder.shutdown(wait=False, cancel_futures=True)
        return None

    # ---- commands ----
    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "list":
            return [Reply({"marks": [m.describe() for m in self._marks.values()]})]
        if command == "add":
            return self._add(args)
        if command == "move":
            mark = self._get(args)
            place = _placement(args, mark.place)
            self._check_place(mark.size, place)
            mark.place = place
            mark.cache_key = None  # rescaled on the next frame (if the width or opacity changed)
            return [Reply(mark.describe()), Event("mark_moved", {"id": mark.id})]
        if command == "remove":
            mark = self._get(args)
            del self._marks[mark.id]
            if mark.loading is not None:
                mark.loading.cancel()
            return [Reply({"removed": mark.id}), Event("mark_removed", {"id": mark.id})]
        return super().on_control(command, args)

    def _get(self, args: Mapping[str, Any]) -> _Mark:
        mark_id = _mark_id(args)
        if mark_id not in self._marks:
            raise MarkError(f"no mark {mark_id!r}; the marks are {sorted(self._marks)} (`list` shows them)")
        return self._marks[mark_id]

    def _check_place(self, size: tuple[int, int], place: Placement) -> None:
        fw, fh = self._size
        if fw and fh:
            mark_rect(fw, fh, size[0], size[1], place)
        elif not (0 <= place.opacity <= 1 and place.width > 0):
            raise MarkError(f"width {place.width:g} / opacity {place.opacity:g} out of range")

    def _add(self, args: Mapping[str, Any]) -> Actions:
        """Every rule is checked from the file's header before the reply; the decoding runs on a worker
        thread, and a picture that takes longer than ADD_WAIT_S is answered `state: loading` and shown
        (event `mark_added`) or dropped (event `mark_failed` with its code) when it is done."""
        mark_id = _mark_id(args)
        if mark_id in self._marks:
            raise MarkError(f"id {mark_id!r} is in use; `move` it, or `remove` it first")
        place = _placement(args)
        loop_s, fps = _number(args, "loop_s", 0.0), _number(args, "fps", 0.0)
        if loop_s < 0 or fps < 0:
            raise FieldError("`loop_s` and `fps` must be >= 0")
        path = args.get("path")
        self._reader.check(path)  # the path rules first: a refused path is never opened
        assert isinstance(path, str)
        files, folder = self._reader.read(path)
        w, h, frames = _images.probe(files, folder, path)
        self._check_place((w, h), place)
        _check_room(self._marks, frames > 1, mark_id)
        mark = _Mark(mark_id, path, (w, h), frames, place, loop_s, fps)
        mark.loading = self._decoder.submit(_images.load, files, folder, path, fps)
        self._marks[mark_id] = mark
        try:
            mark.loading.result(timeout=ADD_WAIT_S)
        except FutureTimeout:
            return [Reply(mark.describe())]
        except BaseException:
            del self._marks[mark_id]
            raise  # its code goes back in the error reply
        return [*self._loaded(), Reply(self._marks[mark_id].describe())]

    def _loaded(self) -> list[Action]:
        """Marks whose decoding ended since the last call: shown (`mark_added`) or dropped (`mark_failed`)."""
        events: list[Action] = []
        for mark in list(self._marks.values()):
            if mark.loading is None or not mark.loading.done():
                continue
            future, mark.loading = mark.loading, None
            exc = future.exception()
            if exc is not None:
                del self._marks[mark.id]
                err = exc if isinstance(exc, EngineError) else ImageDecodeError(f"{type(exc).__name__}: {exc}")
                events.append(Event("mark_failed", {"id": mark.id, "path": mark.path, "code": err.code,
                                                    "message": str(err)}))
                continue
            mark.image = future.result()
            events.append(Event("mark_added", {"id": mark.id, "kind": "animated" if mark.animated else "static"}))
        return events

    # ---- frames ----
    def on_frame(self, pad: str, media: Frame | Packet) -> list[Action]:
        if not isinstance(media, Frame) or media.data.ndim != 3 or media.data.shape[2] != 3:
            raise FormatError(f"watermark expects rgb24 video frames on `{pad}`, got {type(media).__name__}")
        actions = self._loaded()
        src = media.data
        target = self._ctx.output_buffer("out")  # render straight into the output ring slot
        if target is None or target.shape != src.shape:
            if self._out is None or self._out.shape != src.shape:
                self._out = np.empty(src.shape, dtype=np.uint8)
            target = self._out
        np.copyto(target, src)
        fh, fw = src.shape[:2]
        self._size = (fw, fh)
        for mark in self._marks.values():
            if mark.image is None:
                continue
            frames, (x0, y0, _, _) = mark.prepared(mark.image, fw, fh)
            if mark.t0_ns is None:
                mark.t0_ns = media.pts_ns
            i = frame_at(mark.image.durations_ms, mark.loop_s, media.pts_ns - mark.t0_ns)
            blend_into(target, frames[i], x0, y0)
        self._frames += 1
        actions.append(Emit("out", Frame(target, pts_ns=media.pts_ns, seq=media.seq, meta=dict(media.meta))))
        return actions

    def metrics(self) -> dict[str, Any]:
        animated = sum(1 for m in self._marks.values() if m.animated)
        loading = sum(1 for m in self._marks.values() if m.image is None)
        return {"frames": self._frames, "marks": len(self._marks), "static": len(self._marks) - animated,
                "animated": animated, "loading": loading}
