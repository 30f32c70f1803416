"""The whole beauty of one frame: tracked faces and strengths in, the beautified frame out.

`beautify(src, out, faces, strengths)` copies `src` into `out` (the output ring slot) and then, per
face, tones and smooths the skin (`effects.apply_tone`) and reshapes it (`warp.warp_maps` + one
`cv2.remap` of the part of the face's box that moves), only inside the face's box.  All strengths 0,
or no face: `out` is a bit-exact copy.

Strengths are 0..100 per effect (`EFFECTS`); `presets.yaml` beside this module gives them per `level`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray

from .effects import ToneAmounts, ToneScratch, apply_tone, tone_lut
from .regions import Box, Landmarks, face_box
from .warp import WarpAmounts, WarpMaps, map_buffer, remap_rect, warp_maps

__all__ = ["EFFECTS", "PRESETS_FILE", "BeautyScratch", "Face", "FaceResult", "beautify", "load_presets",
           "preset"]

#: every effect, each a strength 0..100
EFFECTS = ("smooth", "whiten", "bright", "rosy", "blush", "thin", "chin_slim", "chin_short", "eye")
PRESETS_FILE = Path(__file__).with_name("presets.yaml")
#: margin of the box the colour effects work in, as a share of the face oval's size (the warp's is 0.25)
TONE_MARGIN = 0.03


def load_presets(path: Path = PRESETS_FILE) -> dict[int, dict[str, int]]:
    """level -> {effect: strength} for every effect, from the presets table (a ValueError names the flaw)."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path}: expected a mapping of level -> effects")
    table: dict[int, dict[str, int]] = {}
    for level, effects in raw.items():
        if not isinstance(level, int) or isinstance(level, bool) or level < 0:
            raise ValueError(f"{path}: level {level!r} is not a whole number >= 0")
        if not isinstance(effects, dict):
            raise ValueError(f"{path}: level {level} must map effect names to strengths")
        row = dict.fromkeys(EFFECTS, 0)
        for name, value in effects.items():
            if name not in row:
                raise ValueError(f"{path}: level {level}: unknown effect {name!r} (effects: {', '.join(EFFECTS)})")
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 100:
                raise ValueError(f"{path}: level {level}: {name} = {value!r} is not a strength 0..100")
            row[name] = int(value)
        table[level] = row
    return table


@cache
def _presets() -> dict[int, dict[str, int]]:
    return load_presets()


def preset(level: int) -> dict[str, int]:
    """The strengths of preset `level` (KeyError if the table has no such level)."""
    return dict(_presets()[level])


@dataclass
class Face:
    """One tracked face: landmarks in frame pixels and a weight 0..1 (1 = seen; less while fading out)."""

    landmarks: Landmarks
    weight: float = 1.0


@dataclass
class FaceResult:
    box: Box
    warp_scale: float  # 1.0, or how much the fold check scaled the reshaping down
    max_shift: float  # the largest reshaping displacement in pixels


@dataclass
class BeautyScratch:
    """Per-actor buffers and caches, reused from frame to frame."""

    tone: ToneScratch = field(default_factory=ToneScratch)
    box: dict[int, NDArray[np.uint8]] = field(default_factory=dict)
    toned: dict[int, NDArray[np.uint8]] = field(default_factory=dict)
    lut_key: tuple[float, float, float] | None = None
    lut: NDArray[np.uint8] | None = None
    maps: dict[int, tuple[bytes, WarpAmounts, Box, WarpMaps | None]] = field(default_factory=dict)
    map_store: dict[int, NDArray[np.float32]] = field(default_factory=dict)  # the remap tables live here

    def box_buffer(self, index: int, shape: tuple[int, ...]) -> NDArray[np.uint8]:
        return _buffer(self.box, index, shape)

    def tone_buffer(self, index: int, shape: tuple[int, ...]) -> NDArray[np.uint8]:
        return _buffer(self.toned, index, shape)


def _buffer(store: dict[int, NDArray[np.uint8]], index: int, shape: tuple[int, ...]) -> NDArray[np.uint8]:
    b = store.get(index)
    if b is None or b.shape != shape:
        b = store[index] = np.empty(shape, np.uint8)
    return b


def _amounts(strengths: Mapping[str, float], weight: float) -> tuple[ToneAmounts, WarpAmounts]:
    def s(name: str) -> float:
        return max(0.0, min(100.0, float(strengths.get(name, 0)))) / 100.0 * weight

    return (ToneAmounts(s("smooth"), s("whiten"), s("bright"), s("rosy"), s("blush")),
            WarpAmounts(s("thin"), s("chin_slim"), s("chin_short"), s("eye")))


def beautify(src: NDArray[np.uint8], out: NDArray[np.uint8], faces: Sequence[Face], strengths: Mapping[str, Any],
             scratch: BeautyScratch | None = None) -> list[FaceResult]:
    """Write the beautified `src` (HxWx3 rgb24, read only) into `out` (same shape, not aliasing `src`)."""
    scratch = scratch if scratch is not None else BeautyScratch()
    np.copyto(out, src)
    results: list[FaceResult] = []
    for index, face in enumerate(faces):
        if face.weight <= 0.0:
            continue
        tone_amt, warp_amt = _amounts(strengths, face.weight)
        if not tone_amt.any() and not warp_amt.any():
            continue
        lms = face.landmarks
        box = face_box(lms, src.shape)  # the warp's reach: the face and a margin around it
        x, y, w, h = box
        if w < 16 or h < 16:
            continue
        region = out[y:y + h, x:x + w]
        maps = _cached_maps(scratch, index, lms, box, src.shape, warp_amt)
        work = region
        if maps is not None:
            work = scratch.box_buffer(index, region.shape)  # remap may not read the array it writes
            np.copyto(work, region)
        if tone_amt.any():
            key = (tone_amt.whiten, tone_amt.bright, tone_amt.rosy)
            if key != scratch.lut_key:
                scratch.lut_key, scratch.lut = key, tone_lut(*key)
            tx, ty, tw, th = tbox = face_box(lms, src.shape, TONE_MARGIN)  # the skin's reach: the oval
            if tw >= 8 and th >= 8:
                skin = out[ty:ty + th, tx:tx + tw]
                if maps is not None:
                    toned = work[ty - y:ty - y + th, tx - x:tx - x + tw]
                    apply_tone(skin, lms, tbox, tone_amt, scratch.lut, toned, scratch.tone)
                    np.copyto(skin, toned)  # the remap below rewrites only the part of the box that moves
                else:
                    toned = scratch.tone_buffer(index, skin.shape)
                    apply_tone(skin, lms, tbox, tone_amt, scratch.lut, toned, scratch.tone)
                    np.copyto(skin, toned)
        if maps is not None:  # the rest of the box is the identity: `region` already holds it
            remap_rect(work, maps, region)
        results.append(FaceResult(box, maps.scale if maps else 1.0, maps.max_shift if maps else 0.0))
    return results


def _cached_maps(scratch: BeautyScratch, index: int, lms: Landmarks, box: Box, shape: tuple[int, ...],
                 amounts: WarpAmounts) -> WarpMaps | None:
    """The remap tables, recomputed only when the landmarks, the box or the amounts changed (a still face
    that the tracker holds steady costs one remap per frame, not a new field)."""
    key = lms.tobytes()
    hit = scratch.maps.get(index)
    if hit is not None and hit[0] == key and hit[1] == amounts and hit[2] == box:
        return hit[3]
    store = scratch.map_store[index] = map_buffer(scratch.map_store.get(index), box)
    maps = warp_maps(lms, box, shape, amounts, buffer=store)
    scratch.maps[index] = (key, amounts, box, maps)
    return maps
