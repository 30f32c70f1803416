"""Video test source: moving colour bars with a burned-in frame counter, clock and machine stamp.

Every frame shows something that moves (the pattern scrolls sideways and a marker sweeps the bottom
edge once per second), a human-readable frame counter and UTC wall-clock time, an optional caption,
and a machine-readable stamp (`mediaengine.sdk.stamp`: 32-bit counter + wall-clock ms, CRC-checked) in the
top-left corner that survives H.264 at low bitrates, so tests and monitors can identify every frame
end to end.

Frames follow the engine's media clock: frame k has `pts_ns = k * interval_ns` and `seq = k`, where
`interval_ns = round(1e9 / fps)` and k is derived from the engine time, so a restarted source
continues the same timeline.  A late tick emits the missed frames too (up to 5); after a longer gap
the source jumps to the current frame.

    nodes:
      - {id: src, kind: test_pattern, options: {width: 1280, height: 720, fps: 30, text: "cam A"}}

`width` and `height` can change while running (`mediaengine ctl set src width=1280 height=720`): the
source announces the new size on its output (`ChangeFormat`) and renders at it from the next frame;
downstream filters and encoders follow.  The new size must fit `max_width` x `max_height`, declared
at load time because the ring's slots are sized for it (0 = the start size: it may shrink, not grow).

Rendering costs about 1 ms per 1280x720 frame (one preallocated buffer, slice copies, no per-frame
allocation of frame-sized arrays).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
from mediaengine.sdk import stamp
from mediaengine.sdk.actor import Action, Actor, ChangeFormat, Context, Emit, OutPort, option
from mediaengine.sdk.errors import OptionError
from mediaengine.sdk.formats import NS, Format, Frame, VideoFormat
from mediaengine.sdk.pacing import video_indices_due
from numpy.typing import NDArray

__all__ = ["TestPattern", "TestPatternOptions", "make_background", "render_frame"]

Pattern = Literal["bars", "gradient", "noise"]

#: a late source emits at most this many missed frames before the current one; beyond, it jumps

# SMPTE-like bar colours (rgb)
_BARS = np.array([[192, 192, 192], [192, 192, 0], [0, 192, 192], [0, 192, 0],
                  [192, 0, 192], [192, 0, 0], [0, 0, 192], [16, 16, 16]], dtype=np.uint8)


@dataclass(frozen=True)
class TestPatternOptions:
    __test__ = False  # not a pytest test class despite the name
    width: int = option(640, range=(64, 7680), live=True, doc="frame width in pixels (>= 64)")
    height: int = option(360, range=(64, 4320), live=True, doc="frame height in pixels (>= 64)")
    fps: float = option(30.0, range=(0.1, 240.0), doc="frames per second")
    pattern: Pattern = option("bars", doc="background: scrolling colour bars, scrolling hue gradient, or noise")
    text: str = option("", live=True, doc="extra caption drawn under the counter")
    max_width: int = option(0, range=(0, 7680),
                            doc="largest width a live `set` may switch to (ring slots are sized for it); 0 = width")
    max_height: int = option(0, range=(0, 4320), doc="largest height a live `set` may switch to; 0 = height")


# ---- pure functions -------------------------------------------------------------------------------

def make_background(pattern: Pattern, width: int, height: int, seed: int = 0) -> NDArray[np.uint8]:
    """A background that is periodic in x over `width` pixels (so it scrolls without a seam)."""
    if pattern == "bars":
        cols = (np.arange(width) * len(_BARS)) // width
        row = _BARS[cols]
        ramp = np.linspace(0.55, 1.0, height, dtype=np.float32)[:, None, None]
        return np.ascontiguousarray((row[None, :, :] * ramp).astype(np.uint8))
    if pattern == "gradient":
        hue = ((np.arange(width) * 180) // width).astype(np.uint8)  # OpenCV hue range 0..179
        sat = np.linspace(255, 96, height).astype(np.uint8)
        hsv = np.empty((height, width, 3), dtype=np.uint8)
        hsv[:, :, 0] = hue[None, :]
        hsv[:, :, 1] = sat[:, None]
        hsv[:, :, 2] = 230
        return np.asarray(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), dtype=np.uint8)
    if pattern == "noise":
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8).astype(np.uint8, copy=False)
    raise ValueError(f"unknown pattern {pattern!r}")


def _scroll_offset(pattern: Pattern, index: int, width: int, fps: float) -> int:
    if pattern == "noise":
        return (index * 7919 + (index * index) % 613) % width  # jumps around: fresh noise each frame
    step = max(1, round(width / (4.0 * fps)))  # one full period every 4 s
    return (index * step) % width


def _utc_text(wall_ms: int) -> str:
    secs, ms = divmod(wall_ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs)) + f".{ms:03d} UTC"


def render_frame(out: NDArray[np.uint8], background: NDArray[np.uint8], index: int, fps: float, wall_ms: int,
                 caption: str = "", pattern: Pattern = "bars") -> NDArray[np.uint8]:
    """Draw test-pattern frame `index` into `out` (HxWx3 uint8, same shape as `background`).

    Scrolls `background`, sweeps a marker along the bottom once per second, writes the counter,
    `wall_ms` as UTC time and `caption`, and burns the machine stamp.  Returns `out`.
    """
    h, w = out.shape[:2]
    off = _scroll_offset(pattern, index, w, fps)
    out[:, : w - off] = background[:, off:]
    out[:, w - off:] = background[:, :off]

    # seconds sweep: a white marker along the bottom edge, one pass per second
    bar_h = max(4, h // 40)
    per_second = max(1, round(fps))
    pos = (index % per_second) * w // per_second
    out[h - bar_h:, :] = 0
    out[h - bar_h:, pos: pos + max(4, w // per_second)] = 255

    # human-readable counter, clock and caption under the stamp
    sh, _ = stamp.stamp_size(h, w)
    font_scale = max(0.35, h / 720.0 * 1.1)
    thick = max(1, round(h / 360.0))
    lines = [f"#{index:08d}", _utc_text(wall_ms)]
    if caption:
        lines.append(caption)
    (_, line_h), base = cv2.getTextSize("#0", cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
    pad = max(2, line_h // 3)
    y = sh + pad
    for line in lines:
        (tw, _), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thick)
        if y + line_h + base + pad > h - bar_h:
            break
        out[y: y + line_h + base + pad, : tw + 2 * pad] = 0
        cv2.putText(out, line, (pad, y + line_h + pad // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thick, cv2.LINE_8)
        y += line_h + base + pad

    stamp.burn(out, index, wall_ms)
    return out


# ---- the actor ------------------------------------------------------------------------------------

class TestPattern(Actor[TestPatternOptions]):
    """Moving test picture with counter, clock and a machine-readable stamp."""

    __test__ = False  # not a pytest test class despite the name
    outputs = {"out": OutPort("video", default=True)}
    Options = TestPatternOptions
    is_source = True

    #: wall clock used for the burned-in time (injectable for tests)
    wall_clock_ns: Callable[[], int] = staticmethod(time.time_ns)

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: TestPatternOptions = options
        if not (o.max_width or o.max_height):
            return {"out": VideoFormat(o.width, o.height, o.fps)}
        return {"out": VideoFormat(o.width, o.height, o.fps, max_width=max(o.max_width, o.width),
                                   max_height=max(o.max_height, o.height))}

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        o: TestPatternOptions = options
        if (o.max_width and o.width > o.max_width) or (o.max_height and o.height > o.max_height):
            raise OptionError(f"size {o.width}x{o.height} exceeds max_width x max_height "
                              f"{o.max_width or o.width}x{o.max_height or o.height} (raise them in the topology)")

    def setup(self, ctx: Context) -> None:
        o = self.options
        self._ctx = ctx
        self.tick_interval_ns = round(NS / o.fps)
        self._use_format(self.output_formats(o, {})["out"])
        self._next: int | None = None

    def _use_format(self, fmt: VideoFormat) -> None:
        self._fmt = fmt
        self._background = make_background(self.options.pattern, fmt.width, fmt.height)
        self._pool: list[NDArray[np.uint8]] = []  # one buffer per frame emitted in the same hook call

    def _buffer(self, i: int) -> NDArray[np.uint8]:
        while len(self._pool) <= i:
            self._pool.append(np.empty((self._fmt.height, self._fmt.width, 3), dtype=np.uint8))
        return self._pool[i]

    def on_tick(self, now_ns: int) -> list[Action]:
        interval = self.tick_interval_ns
        assert interval is not None, "setup() not called"
        o = self.options
        actions: list[Action] = []
        fmt = self.output_formats(o, {})["out"]
        changed = fmt != self._fmt
        if changed and isinstance(fmt, VideoFormat):  # a live `set` of width/height: announce, then render
            self._use_format(fmt)
            actions.append(ChangeFormat("out", fmt))
        for i, k in enumerate(video_indices_due(self._next, now_ns, interval)):
            wall_ms = self.wall_clock_ns() // 1_000_000
            # the first frame of a tick renders straight into the output ring slot when one is lent
            # (not in the tick that changes the size: that slot was lent with the old shape)
            target = self._ctx.output_buffer("out") if i == 0 and not changed else None
            img = render_frame(target if target is not None else self._buffer(i), self._background, k, o.fps,
                               wall_ms, o.text, o.pattern)
            actions.append(Emit("out", Frame(img, pts_ns=k * interval, seq=k)))
            self._next = k + 1
        return actions
