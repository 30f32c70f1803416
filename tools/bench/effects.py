"""Benchmark `effects`: per-frame cost of the video effect filters at 720p and 1080p, against a plain copy.

Each case runs the real actor class in this process, the way the runtime drives it: `setup(ctx)` with a
Context whose `output_buffer` lends one of four preallocated slots in turn (as a ring of depth 4 does),
then `on_frame` on a picture that changes every frame; a case's figure is the time of `on_frame`.  The
baseline, `copy`, is one `np.copyto` of the frame into such a slot: what any filter that emits a new
picture pays at least.  OpenCV runs on one thread (`cv2.setNumThreads(1)`), as one actor process gets
about one core here.  Cases alternate within each repetition, so a drift in machine load hits all.

Cases are a list (`CASES`); another module adds its own by defining `CASES` (and `TARGETS`) in
`tools/bench/effects_compositor.py`, which is imported when present (the compositor's rows).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from mediaengine.sdk.actor import Actor, Context
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.topology.loader import validate_options

from ._common import Result, Settings, Spread, Table, Target, fmt_x

NAME = "effects"
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
SLOTS = 4

#: a case's per-frame step, made once per size: `step(frame)` does one frame's work
Step = Callable[[Frame], None]


@dataclass(frozen=True)
class Case:
    """One row: `make(width, height, assets)` builds the per-frame step (setup cost not measured)."""

    name: str
    make: Callable[[int, int, Path], Step]


@dataclass(frozen=True)
class Goal:
    """A target from the issue: `case` at `size` costs at most `ms` per frame."""

    case: str
    size: str
    ms: float


class _Slots:
    """Four preallocated output slots lent in turn, like a ring of depth 4."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.bufs = [np.zeros(shape, np.uint8) for _ in range(SLOTS)]
        self.i = 0

    def lend(self, pad: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
        self.i = (self.i + 1) % SLOTS
        return self.bufs[self.i]


def actor_step(cls: type[Actor[Any]], options: dict[str, Any]) -> Callable[[int, int, Path], Step]:
    """A case that runs `cls` with `options` (checked by the loader's own option rules)."""
    def make(w: int, h: int, assets: Path) -> Step:
        fmt = VideoFormat(w, h, 30.0)
        opts = validate_options(cls, cls.__name__, options, where_of=lambda o: f"{cls.__name__}.{o}")
        cls.validate(opts, {"in": fmt})
        out = cls.output_formats(opts, {"in": fmt})["out"]
        assert isinstance(out, VideoFormat)
        slots = _Slots(out.shape)
        actor = cls(opts)
        actor.setup(Context(node_id=cls.__name__, input_formats={"in": fmt}, output_formats={"out": out},
                            lend=slots.lend, output_dir=str(assets)))

        def step(frame: Frame) -> None:
            actor.on_frame("in", frame)
        return step
    return make


def copy_step(w: int, h: int, assets: Path) -> Step:
    slots = _Slots((h, w, 3))

    def step(frame: Frame) -> None:
        np.copyto(slots.lend("out"), frame.data)
    return step


# ---- assets -------------------------------------------------------------------------------------

def make_assets(folder: Path) -> dict[str, str]:
    """Three static marks (PNG and WebP with alpha, a JPEG) and an animated GIF of 12 frames."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:200, 0:400].astype(np.float32)
    rgba = np.dstack([255 * x / 400, 255 * y / 200, np.full_like(x, 120), 255 * (x / 400)]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "logo.png")
    Image.fromarray(rgba[:, ::-1].copy(), "RGBA").save(folder / "badge.webp", lossless=True)
    Image.fromarray(rgba[..., :3].copy(), "RGB").save(folder / "photo.jpg", quality=90)
    frames = []
    for i in range(12):
        pic = np.zeros((160, 160, 3), np.uint8)
        cv2.circle(pic, (80, 80), 20 + 5 * i, (255, 40 * (i % 6), 200), -1)
        frames.append(Image.fromarray(pic, "RGB"))
    frames[0].save(folder / "spin.gif", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return {"logo": str(folder / "logo.png"), "badge": str(folder / "badge.webp"),
            "photo": str(folder / "photo.jpg"), "spin": str(folder / "spin.gif")}


def watermark_case(animated: int) -> Callable[[int, int, Path], Step]:
    from mediaengine.actors.watermark import Watermark

    def make(w: int, h: int, assets: Path) -> Step:
        files = make_assets(assets)
        marks: list[dict[str, Any]] = [
            {"id": "logo", "path": files["logo"], "x": 0.8, "y": 0.05, "width": 0.15},
            {"id": "badge", "path": files["badge"], "x": 0.05, "y": 0.05, "width": 0.12, "opacity": 0.7},
            {"id": "photo", "path": files["photo"], "x": 0.8, "y": 0.85, "width": 0.1},
        ]
        marks += [{"id": f"spin{i}", "path": files["spin"], "x": 0.1 + 0.13 * i, "y": 0.6, "width": 0.1}
                  for i in range(animated)]
        return actor_step(Watermark, {"marks": marks})(w, h, assets)
    return make


def transform_case(**options: Any) -> Callable[[int, int, Path], Step]:
    from mediaengine.actors.transform import Transform

    def make(w: int, h: int, assets: Path) -> Step:
        opts = dict(options)
        if opts.pop("scale", False):  # 2/3 of the size: 1080p -> 720p, 720p -> 853x480
            opts.update(width=w * 2 // 3 // 2 * 2, height=h * 2 // 3 // 2 * 2)
        return actor_step(Transform, opts)(w, h, assets)
    return make


CASES: list[Case] = [
    Case("copy (baseline)", copy_step),
    Case("watermark 3 static + 1 animated", watermark_case(1)),
    Case("watermark 3 static + 5 animated", watermark_case(5)),
    Case("transform mirror", transform_case(mirror=True)),
    Case("transform rotate 90", transform_case(rotate=90)),
    Case("transform rotate 180", transform_case(rotate=180)),
    Case("transform scale to 2/3", transform_case(scale=True)),
    Case("transform mirror + rotate 90", transform_case(mirror=True, rotate=90)),
]
TARGETS: list[Goal] = [Goal("watermark 3 static + 1 animated", "720p", 1.0)]


def all_cases() -> tuple[list[Case], list[Goal]]:
    """Our cases plus those of `tools/bench/effects_compositor.py` when that module exists."""
    cases, goals = list(CASES), list(TARGETS)
    try:
        extra = importlib.import_module("tools.bench.effects_compositor")
    except ModuleNotFoundError as exc:
        if exc.name != "tools.bench.effects_compositor":
            raise
        return cases, goals
    return cases + list(getattr(extra, "CASES", [])), goals + list(getattr(extra, "TARGETS", []))


def pictures(w: int, h: int, n: int = 8) -> list[Frame]:
    """A few different frames (a moving gradient), so no cache sees the same picture twice in a row."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        pic = np.dstack([(x + 40 * i) % 256, (y + 20 * i) % 256, ((x + y) / 8 + 30 * i) % 256]).astype(np.uint8)
        pic.flags.writeable = False  # a ring view: read only
        out.append(Frame(pic, pts_ns=0))
    return out


def time_case(step: Step, frames: list[Frame], count: int) -> float:
    """Median seconds per frame over `count` frames (after 10 warm-up frames)."""
    per = []
    for k in range(count + 10):
        f = frames[k % len(frames)]
        frame = Frame(f.data, pts_ns=k * 33_333_333, seq=k)
        t0 = time.perf_counter()
        step(frame)
        if k >= 10:
            per.append(time.perf_counter() - t0)
    return float(np.median(per))


def run(settings: Settings) -> Result:
    res = Result(NAME)
    cv2.setNumThreads(1)
    cases, goals = all_cases()
    reps = settings.n(5, 2)
    count = 20 if settings.quick else 200  # frames per repetition (not `settings.n`: --reps sets repetitions)
    assets = Path(settings.workdir) / "effects-assets"
    figures: dict[str, dict[str, list[float]]] = {}
    for size, (w, h) in SIZES.items():
        steps = {c.name: c.make(w, h, assets) for c in cases}
        frames = pictures(w, h)
        for _ in range(reps):
            for name, step in steps.items():  # alternate the cases within each repetition
                figures.setdefault(size, {}).setdefault(name, []).append(time_case(step, frames, count))
    t = Table(["filter", *(f"{s} ms/frame" for s in SIZES), *(f"{s} vs copy" for s in SIZES)])
    for c in cases:
        ms = [Spread.of([v * 1e3 for v in figures[s][c.name]]) for s in SIZES]
        vs = [Spread.of([a / b for a, b in zip(figures[s][c.name], figures[s][cases[0].name], strict=True)])
              for s in SIZES]
        t.add(c.name, *(m.fmt(lambda v: f"{v:.3f}") for m in ms), *(x.fmt(fmt_x) for x in vs))
    res.tables.append((f"per-frame cost of on_frame (median of {count} frames; median [min..max] of {reps} "
                       "repetitions), one OpenCV thread", t))
    for g in goals:
        value = Spread.of(figures[g.size][g.case]).median * 1e3
        res.targets.append(Target(f"{g.case} at {g.size} (ms per frame)", value, "<=", g.ms, f"{value:.3f} ms"))
    res.data = {"figures_ms": {s: {n: [v * 1e3 for v in vals] for n, vals in by.items()}
                               for s, by in figures.items()}, "reps": reps, "frames": count}
    copy720 = Spread.of(figures["720p"][cases[0].name]).median * 1e3
    wm = Spread.of(figures["720p"]["watermark 3 static + 1 animated"]).median * 1e3
    wm5 = Spread.of(figures["1080p"]["watermark 3 static + 5 animated"]).median * 1e3
    rot = Spread.of(figures["1080p"]["transform rotate 90"]).median * 1e3
    res.headline = (f"720p: 3 static + 1 animated watermarks {wm:.2f} ms per frame (copy alone {copy720:.2f} ms); "
                    f"1080p: 3 + 5 watermarks {wm5:.2f} ms, rotate 90 {rot:.2f} ms")
    return res
