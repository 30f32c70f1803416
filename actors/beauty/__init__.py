"""Face beauty: skin smoothing, whitening, brightness, rosy tone, blush, face thinning, chin and eye
enlarging on MediaPipe face-mesh landmarks, in real time.

    nodes:
      - {id: beauty, kind: beauty, inputs: {in: cam}, options: {level: 3, eye: 40}}

    mediaengine ctl beauty set smooth=60 eye=30      # live, from the next frame
    mediaengine ctl beauty set enabled=false         # pass-through, no gap

- Every effect is a strength 0..100 and live: `smooth`, `whiten`, `bright` (brightness/shine), `rosy`,
  `blush` (cheeks), `thin` (face thinning), `chin_slim`, `chin_short`, `eye` (enlarging).
- `level` 0..5 (live) sets them all from the presets table `presets.yaml` beside this module (data anyone
  can edit); an effect given on its own overrides its level's value (`set eye=null` hands it back).
  Level 0 with no overrides is a bit-exact pass-through.
- `max_faces` (1..4) faces are found and followed (`landmarks.py`: MediaPipe's face detector and
  face-mesh model, tracking, re-detection when a face is lost, steadied so still faces do not shimmer,
  held `hold_frames` when a frame misses the face, faded out over `fade_frames` once it is gone).  Frames
  without a face pass through unchanged.
- rgb24 in, rgb24 out, any size; the result is written straight into the output ring slot.
- Events: `beauty_faces` {faces, was} when the number of faces found changes; `beauty_applied` {pts_ns,
  after_pts_ns, enabled, strengths} on the first frame a live change applies to (its `pts_ns`), with the
  last frame before it (`after_pts_ns`): a change applies to the next frame that arrives.
- Commands: `status` (enabled, level, effective strengths, faces), `presets` (the table).

The media work is pure functions beside this actor: `roi.py` (where the landmark model looks),
`regions.py` (landmark index sets, masks), `effects.py` (colour and smoothing), `warp.py` (reshaping as
one remap), `pipeline.py` (a frame).  Needs `mediaengine[beauty]` (mediapipe 0.10.21, Python 3.9-3.12,
and LiteRT to run its landmark model; without LiteRT OpenCV runs it, slower); without mediapipe the node
fails with 1345 `FaceModelError`.  Metrics: `landmark_runtime` (litert or opencv), `face_detections`
(frames the face detector ran on).  Costs per 720p frame are in BENCHMARKS.md (`python -m tools.bench
beauty`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mediaengine.sdk.actor import Actions, Actor, Context, Emit, Event, InPort, OutPort, Reply, option
from mediaengine.sdk.errors import FormatError, FormatMismatchError, OptionError
from mediaengine.sdk.formats import Format, Frame, Packet, VideoFormat
from numpy.typing import NDArray

from .landmarks import FaceMesh, FaceTracks
from .pipeline import EFFECTS, BeautyScratch, beautify, load_presets, preset

__all__ = ["Beauty", "BeautyOptions", "strengths"]

_MAX_LEVEL = 5


def _effect(doc: str) -> Any:
    return option(None, range=(0, 100), live=True, doc=f"{doc} 0..100; unset = the level's value (live)")


@dataclass(frozen=True)
class BeautyOptions:
    enabled: bool = option(True, live=True, doc="apply the effects (false: frames pass through; live)")
    level: int = option(3, range=(0, _MAX_LEVEL), live=True,
                        doc="preset 0..5 from presets.yaml setting every effect (0 = off; live)")
    smooth: int | None = _effect("skin smoothing")
    whiten: int | None = _effect("skin whitening")
    bright: int | None = _effect("skin brightness / shine")
    rosy: int | None = _effect("rosy skin tone")
    blush: int | None = _effect("cheek blush")
    thin: int | None = _effect("face thinning")
    chin_slim: int | None = _effect("slimmer chin")
    chin_short: int | None = _effect("shorter chin")
    eye: int | None = _effect("eye enlarging")
    max_faces: int = option(1, range=(1, 4), doc="faces found and beautified at once (each costs landmarks time)")
    hold_frames: int = option(5, range=(0, 60), doc="frames a face missed by the detector keeps its effects")
    fade_frames: int = option(10, range=(0, 120), doc="frames over which the effects of a lost face fade out")


def strengths(o: BeautyOptions) -> dict[str, int]:
    """The effective strength of every effect: the level's preset, overridden by effects set on their own."""
    values = preset(o.level)
    for name in EFFECTS:
        own = getattr(o, name)
        if own is not None:
            values[name] = int(own)
    return values


class Beauty(Actor[BeautyOptions]):
    """Beautifies the faces in every frame (a copy; the input is never modified)."""

    inputs = {"in": InPort("video", policy="drop_oldest")}
    outputs = {"out": OutPort("video", default=True)}
    Options = BeautyOptions
    # imported once by the engine's fork server: ~0.5 s a restarted node would spend with its input stalled
    preload = ("mediapipe.python.solutions.face_detection", "ai_edge_litert.interpreter")

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        o: BeautyOptions = options
        try:
            table = load_presets()
        except (OSError, ValueError) as exc:
            raise OptionError(f"the beauty presets table does not load: {exc}") from exc
        if o.level not in table:
            raise OptionError(f"level {o.level} is not in the presets table (levels: {sorted(table)})",
                              where="level")

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        fmt = input_formats.get("in")
        if not isinstance(fmt, VideoFormat) or fmt.pix_fmt != "rgb24":
            raise FormatMismatchError("beauty needs rgb24 video on `in`")
        return {"out": fmt}

    def setup(self, ctx: Context) -> Actions:
        t0 = time.perf_counter()
        self._ctx = ctx
        self._mesh = FaceMesh(max_faces=self.options.max_faces)  # FaceModelError (1345) without mediapipe
        self._tracks = FaceTracks(hold=self.options.hold_frames, fade=self.options.fade_frames,
                                  limit=self.options.max_faces)
        self._scratch = BeautyScratch()
        self._strengths = strengths(self.options)
        self._own: NDArray[np.uint8] | None = None
        self._frames = self._with_face = 0
        self._faces = 0
        self._ms: list[float] = []
        self._last_pts: int | None = None  # of the last frame processed
        self._changed_after: int | None = None  # a live change applies from the frame after this one
        self._change_pending = False
        self._setup_ms = (time.perf_counter() - t0) * 1000.0  # the face mesh's start (a restart's cost)
        return None

    def on_option_changed(self, name: str, value: Any) -> Actions:
        self._strengths = strengths(self.options)
        if not self._change_pending:  # several options of one `set` arrive as several calls
            self._changed_after, self._change_pending = self._last_pts, True
        if name == "enabled" and not value:
            self._tracks.clear()  # on again: start from fresh landmarks, not stale ones
        return None

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "status":
            return [Reply({"enabled": self.options.enabled, "level": self.options.level,
                           "strengths": dict(self._strengths), "faces": self._faces})]
        if command == "presets":
            return [Reply({str(k): v for k, v in load_presets().items()})]
        return super().on_control(command, args)

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame) or media.data.ndim != 3 or media.data.shape[2] != 3:
            raise FormatError(f"beauty expects rgb24 video frames on `{pad}`, got {type(media).__name__}")
        src = media.data
        target = self._ctx.output_buffer("out")
        if target is None or target.shape != src.shape:
            if self._own is None or self._own.shape != src.shape:
                self._own = np.empty_like(src)
            target = self._own
        t0 = time.perf_counter()
        actions: list[Any] = []
        if self.options.enabled and any(self._strengths.values()):
            faces = self._tracks.update(self._mesh.detect(src))
            beautify(src, target, faces, self._strengths, self._scratch)
            seen = sum(1 for f in faces if f.weight >= 1.0)
        else:
            np.copyto(target, src)
            seen = 0
        if self._change_pending:  # the first frame with the new settings: which one it is, for checks
            actions.append(Event("beauty_applied", {"pts_ns": media.pts_ns, "after_pts_ns": self._changed_after,
                                                    "enabled": self.options.enabled,
                                                    "strengths": dict(self._strengths)}))
            self._change_pending = False
        self._last_pts = media.pts_ns
        if seen != self._faces:
            actions.append(Event("beauty_faces", {"faces": seen, "was": self._faces}))
            self._faces = seen
        self._ms.append((time.perf_counter() - t0) * 1000.0)
        del self._ms[:-300]
        self._frames += 1
        self._with_face += seen > 0
        actions.append(Emit("out", Frame(target, pts_ns=media.pts_ns, seq=media.seq, meta=dict(media.meta))))
        return actions

    def stop(self) -> Actions:
        self._mesh.close()
        return None

    def metrics(self) -> dict[str, Any]:
        ms = sorted(self._ms)
        return {"frames": self._frames, "frames_with_face": self._with_face, "faces": self._faces,
                "enabled": self.options.enabled, "level": self.options.level,
                "ms_median": round(ms[len(ms) // 2], 2) if ms else None, "setup_ms": round(self._setup_ms, 1),
                "landmark_runtime": self._mesh.runtime, "face_detections": self._mesh.detections}
