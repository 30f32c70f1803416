"""Benchmark-only actor kinds, registered on import (`mediaengine.topology.registry.register`).

They run inside the real engine (supervisor, fork server, runtime, rings) when it is started through
`python -m tools.bench._host`, which also adds this module to the fork server's preload list so the
forked actors know the kinds.  They measure, they do not process:

- `bench_source`: emits a pre-rendered RGB frame at `fps` (or, with `fps: 0`, `burst` frames every
  millisecond tick: as fast as the chain takes them), each with `meta["t0"]` = CLOCK_MONOTONIC ns at
  emission;
- `bench_pass`: a pass-through filter that emits its zero-copy input view unchanged (the runtime
  then writes it into the next ring: the one copy a real filter also pays for its output);
- `bench_overlay`: the real `overlay` filter, plus an event `first_frame_out` (CLOCK_MONOTONIC ns of
  its first emission) so a restart's time to first frame is exact;
- `bench_beep`: the real `tone`, silenced outside short beeps on the wall clock (`_beep.py`), so a
  puller can measure audio latency and the A/V offset;
- `bench_sink`: records `now - meta["t0"]` of every frame; control commands `bench_reset` and
  `bench_stats` (count, rate, latency percentiles).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mediaengine.actors.overlay import Overlay
from mediaengine.actors.tone import Tone
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Emit, Event, InPort, OutPort, Reply, option
from mediaengine.sdk.formats import NS, Format, Frame, Packet, VideoFormat
from mediaengine.topology.registry import register

from . import _beep
from ._common import percentile

MAX_SAMPLES = 200_000


@dataclass(frozen=True)
class BenchSourceOptions:
    width: int = option(1920, doc="frame width")
    height: int = option(1080, doc="frame height")
    fps: float = option(30.0, range=(0, None), live=True,
                        doc="frames per second; 0 = as fast as the chain takes them (burst per 1 ms tick)")
    burst: int = option(4, range=(1, None), live=True, doc="frames emitted per tick when fps is 0")


class BenchSource(Actor[BenchSourceOptions]):
    """Pre-rendered frames stamped with their emission time."""

    outputs = {"out": OutPort("video", default=True)}
    Options = BenchSourceOptions
    is_source = True

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: BenchSourceOptions = options
        return {"out": VideoFormat(o.width, o.height, o.fps if o.fps > 0 else 1000.0)}

    def setup(self, ctx: Context) -> None:
        o = self.options
        rng = np.random.default_rng(7)
        self._frames = [rng.integers(0, 256, size=(o.height, o.width, 3), dtype=np.uint8) for _ in range(3)]
        self.tick_interval_ns = round(NS / o.fps) if o.fps > 0 else 1_000_000
        self._k = 0
        self._next: int | None = None

    def on_option_changed(self, name: str, value: Any) -> Actions:
        o = self.options
        self.tick_interval_ns = round(NS / o.fps) if o.fps > 0 else 1_000_000
        self._next = None
        return None

    def _frame(self, k: int) -> Emit:
        data = self._frames[k % len(self._frames)]
        return Emit("out", Frame(data, pts_ns=k * (self.tick_interval_ns or 1), seq=k,
                                 meta={"t0": time.monotonic_ns()}))

    def on_tick(self, now_ns: int) -> Actions:
        iv = self.tick_interval_ns or 1
        if self.options.fps > 0:
            k = now_ns // iv
            if self._next is not None and k < self._next:
                return None
            self._next = k + 1
            return [self._frame(k)]
        out: list[Action] = []
        for _ in range(self.options.burst):
            self._k += 1
            out.append(self._frame(self._k))
        return out


@dataclass(frozen=True)
class NoOptions:
    pass


class _FirstFrameEvent:
    """Mixin: an event with the CLOCK_MONOTONIC times at which this process finished `setup()` and
    emitted its first frame (taken in the hook that returns it, just before the runtime writes it)."""

    _first_sent = False
    _setup_ns = 0

    def _mark_setup(self) -> None:
        self._setup_ns = time.monotonic_ns()

    def _first(self, actions: Actions) -> Actions:
        if self._first_sent or not actions:
            return actions
        self._first_sent = True
        return [*actions, Event("first_frame_out", {"mono_ns": time.monotonic_ns(), "setup_ns": self._setup_ns,
                                                    "wall_ns": time.time_ns()})]


class BenchPass(_FirstFrameEvent, Actor[NoOptions]):
    """Pass-through filter: emits the input view itself (no copy in the filter)."""

    inputs = {"in": InPort("video")}
    outputs = {"out": OutPort("video", default=True)}
    Options = NoOptions

    def setup(self, ctx: Context) -> None:
        self._mark_setup()

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        return self._first([Emit("out", media)])


class BenchOverlay(_FirstFrameEvent, Overlay):
    """The real overlay filter, reporting its first frame out."""

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        self._mark_setup()

    def on_frame(self, pad: str, media: Frame | Packet) -> list[Action]:
        return list(self._first(super().on_frame(pad, media)) or [])


class BenchBeep(Tone):
    """The real `tone`, silenced outside the beeps: sample n of the engine timeline is due at wall time
    `wall0 + n / rate`, with `wall0` the wall clock at engine time 0 (read at the first tick)."""

    _wall0: float | None = None

    def on_tick(self, now_ns: int) -> list[Action]:
        if self._wall0 is None:
            self._wall0 = time.time() - now_ns / NS
        rate = self.options.rate
        out: list[Action] = []
        for action in super().on_tick(now_ns):
            if isinstance(action, Emit) and isinstance(action.media, Frame):
                f = action.media
                first = f.seq * self.options.samples_per_frame
                action = Emit(action.pad, Frame(_beep.gate(f.data, first, rate, self._wall0), f.pts_ns, f.seq, f.meta))
            out.append(action)
        return out


class BenchSink(Actor[NoOptions]):
    """Records the latency of every frame from its source's emission (meta t0)."""

    inputs = {"in": InPort("video")}
    Options = NoOptions

    def setup(self, ctx: Context) -> None:
        self._reset()

    def _reset(self) -> None:
        self._lat = np.zeros(MAX_SAMPLES, np.int64)
        self._n = 0
        self._frames = 0
        self._first_ns = 0
        self._last_ns = 0

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        now = time.monotonic_ns()
        t0 = media.meta.get("t0") if isinstance(media, Frame) else None
        if self._frames == 0:
            self._first_ns = now
        self._last_ns = now
        self._frames += 1
        if isinstance(t0, int) and self._n < MAX_SAMPLES:
            self._lat[self._n] = now - t0
            self._n += 1
        return None

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "bench_reset":
            self._reset()
            return [Reply({"reset": True})]
        if command == "bench_stats":
            lat = (self._lat[: self._n] / 1e9).tolist()
            span = (self._last_ns - self._first_ns) / 1e9
            return [Reply({
                "frames": self._frames,
                "span_s": span,
                "fps": (self._frames - 1) / span if span > 0 else 0.0,
                "lat_p50_s": percentile(lat, 50), "lat_p90_s": percentile(lat, 90),
                "lat_p99_s": percentile(lat, 99), "lat_max_s": max(lat, default=float("nan")),
                "samples": self._n,
            })]
        return super().on_control(command, args)


KINDS: dict[str, type[Actor[Any]]] = {
    "bench_source": BenchSource,
    "bench_pass": BenchPass,
    "bench_overlay": BenchOverlay,
    "bench_sink": BenchSink,
    "bench_beep": BenchBeep,
}

for _name, _cls in KINDS.items():
    register(_name, _cls)
