"""Real-face test material and face measurements for the beauty tests.

Material: every picture is made at run time from `skimage.data.astronaut()` (a 512x512 RGB portrait shipped
inside scikit-image), so nothing binary is committed.  `place_face` puts the portrait on a canvas at a known
scale, rotation and position; `face_clip` animates it smoothly, adds webcam-like sensor noise and exposure
flicker, and really encodes/decodes it through libx264 so the frames carry H.264 artefacts.  Everything is
deterministic for a given seed.  Generated frames are cached and returned **read-only**: copy before writing.

Measurement: MediaPipe FaceMesh (0.10.21, legacy `mp.solutions.face_mesh`) in static-image mode with iris
refinement on, because without refinement the re-detected eye contour does not follow an eye enlargement
(docs: /work/shared/notes/video-faces-and-capture.md).  `measure` turns landmarks into distances and areas in
pixels; the mask builders give skin, eye/lip edge band and cheek regions; `hf_energy`, `edge_energy`,
`mean_lab` and `mean_abs_diff_outside` score what a filter did inside or outside those regions.

Face sizes: FaceMesh's short-range detector misses faces below ~150 px (landmark 10 to 152); at `scale=1`
`place_face` makes the face 0.46 of the frame height (331 px at 720p, 166 px at 360p, 497 px at 1080p).

Typical use in a test::

    frame = place_face()
    before = measure(frame)
    after = measure(beauty(frame))
    assert after.eye_area / before.eye_area > 1.1
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import av
import cv2
import mediapipe as mp
import numpy as np
from skimage import data as skdata

Size = tuple[int, int]  # (width, height) in pixels
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive

# --- landmark index sets ------------------------------------------------------------------------------------

_FM = mp.solutions.face_mesh


def _rings(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Order a FaceMesh connection set (unordered edges) into its closed loops of landmark indices."""
    nbrs: dict[int, list[int]] = {}
    for a, b in edges:
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    seen: set[int] = set()
    loops = []
    for start in sorted(nbrs):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in nbrs[cur] if n != prev and (n not in seen or n == start)]
            if not nxt or nxt[0] == start:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return loops


def _points(edges: Iterable[tuple[int, int]]) -> list[int]:
    return sorted({i for e in edges for i in e})


# "Left"/"right" are the subject's: the subject's left eye is on the right of the picture.
LEFT_EYE: list[int] = _rings(_FM.FACEMESH_LEFT_EYE)[0]  # 16-point closed eye contour
RIGHT_EYE: list[int] = _rings(_FM.FACEMESH_RIGHT_EYE)[0]
FACE_OVAL: list[int] = _rings(_FM.FACEMESH_FACE_OVAL)[0]  # 36-point closed outline, forehead to chin
LIPS_OUTER: list[int] = next(r for r in _rings(_FM.FACEMESH_LIPS) if 61 in r)  # through the mouth corners 61/291
LIPS_INNER: list[int] = next(r for r in _rings(_FM.FACEMESH_LIPS) if 78 in r)  # the mouth opening
LEFT_BROW: list[int] = _points(_FM.FACEMESH_LEFT_EYEBROW)  # upper and lower brow edges (open paths)
RIGHT_BROW: list[int] = _points(_FM.FACEMESH_RIGHT_EYEBROW)
NOSTRILS: list[int] = [115, 48, 64, 98, 97, 2, 326, 327, 294, 278, 344]  # lower rim of FACEMESH_NOSE: both wings
FOREHEAD_TOP, CHIN_TIP, NOSE_TIP = 10, 152, 1
MOUTH_CENTRE: tuple[int, int] = (13, 14)  # inner upper / lower lip midpoints; their mean is the mouth centre
# Face-oval pairs (subject's right, subject's left) from the mouth corners' level (58/288) down the jaw to
# just above the chin (150/379); their mean width is the jaw width a face-thinning warp narrows.
JAW_PAIRS: list[tuple[int, int]] = [(58, 288), (172, 397), (136, 365), (150, 379)]
# Cheek patch centres: the mean of an upper (50/280) and a lower (205/425) cheek landmark, the cheek apple.
CHEEK_POINTS: tuple[tuple[int, int], tuple[int, int]] = ((50, 205), (280, 425))

# --- material -----------------------------------------------------------------------------------------------

# Where the face is in astronaut(): midpoint of landmarks 10 and 152, and their distance (measured once with
# FaceMesh, refine on).  `place_face` scales and moves the portrait about this point.
ASTRONAUT_FACE_CENTRE = (223.8, 124.6)
ASTRONAUT_FACE_HEIGHT = 105.9
FACE_FRACTION = 0.46  # face height (10 to 152) / frame height at place_face(scale=1): 331 px at 720p


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=1)
def astronaut() -> np.ndarray:
    """The 512x512 RGB uint8 portrait (read-only)."""
    return _readonly(np.ascontiguousarray(skdata.astronaut()))


def _border(background: str | tuple[int, int, int]) -> tuple[int, tuple[int, int, int]]:
    if background == "replicate":
        return cv2.BORDER_REPLICATE, (0, 0, 0)
    if background == "reflect":
        return cv2.BORDER_REFLECT_101, (0, 0, 0)
    if isinstance(background, tuple):
        return cv2.BORDER_CONSTANT, background
    raise ValueError(f"background must be 'replicate', 'reflect' or an (r, g, b) tuple, not {background!r}")


def place_face(size: Size = (1280, 720), scale: float = 1.0, center: tuple[float, float] | None = None,
               angle: float = 0.0, background: str | tuple[int, int, int] = "replicate") -> np.ndarray:
    """The portrait on a `size` canvas: its face centre at `center` (default: the frame centre), rotated
    `angle` degrees counter-clockwise about it, the face `scale * 0.46` of the frame height.

    Where the scaled portrait does not cover the canvas, `background` fills: "replicate" (edge pixels),
    "reflect", or a constant (r, g, b).  Returns a new writable RGB uint8 frame."""
    w, h = size
    zoom = scale * FACE_FRACTION * h / ASTRONAUT_FACE_HEIGHT
    cx, cy = center if center is not None else (w / 2, h / 2)
    m = cv2.getRotationMatrix2D(ASTRONAUT_FACE_CENTRE, angle, zoom)
    m[:, 2] += (cx - ASTRONAUT_FACE_CENTRE[0], cy - ASTRONAUT_FACE_CENTRE[1])
    mode, value = _border(background)
    return cv2.warpAffine(astronaut(), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=value)


def scale_about(rgb: np.ndarray, factor: float, center: tuple[float, float]) -> np.ndarray:
    """The frame's content scaled by `factor` about `center` (edges replicated): a known geometric change."""
    m = cv2.getRotationMatrix2D(center, 0.0, factor)
    h, w = rgb.shape[:2]
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


@dataclass(frozen=True)
class Pose:
    """Where the face is in one frame of a clip (`place_face` arguments)."""

    center: tuple[float, float]
    scale: float
    angle: float


def clip_poses(n: int, size: Size, seed: int = 0) -> list[Pose]:
    """A smooth, seeded motion: sums of slow sinusoids (periods 1.5-4 s at 30 fps) for position (±7% of the
    width, ±4% of the height), scale (±6%) and angle (±5°).  The face stays fully inside the frame."""
    rng = np.random.default_rng(seed)
    w, h = size
    t = np.arange(n) / 30.0

    def wave(amplitude: float) -> np.ndarray:
        periods = rng.uniform(1.5, 4.0, 2)
        phases = rng.uniform(0, 2 * math.pi, 2)
        return amplitude * (0.7 * np.sin(2 * math.pi * t / periods[0] + phases[0])
                            + 0.3 * np.sin(2 * math.pi * t / periods[1] + phases[1]))

    dx, dy, ds, da = wave(0.07 * w), wave(0.04 * h), wave(0.06), wave(5.0)
    return [Pose((w / 2 + dx[i], h / 2 + dy[i]), 1.0 + ds[i], da[i]) for i in range(n)]


def add_camera_noise(frames: Sequence[np.ndarray], seed: int = 0, sigma: float = 2.5,
                     flicker: float = 0.02) -> list[np.ndarray]:
    """Webcam-like frames: a per-frame exposure gain in 1 ± `flicker` and Gaussian sensor noise of `sigma`
    (8-bit units, independent per pixel and channel within a frame).

    For speed (~3 ms a 720p frame instead of ~40) the noise is one seeded field 64 px larger than the frame,
    and each frame reads it at its own random offset."""
    rng = np.random.default_rng(seed + 1_000_003)
    h, w = frames[0].shape[:2]
    pad = 64
    field = rng.standard_normal((h + pad, w + pad, 3), dtype=np.float32) * np.float32(sigma)
    out = []
    for f in frames:
        gain = 1.0 + rng.uniform(-flicker, flicker)
        y, x = rng.integers(0, pad, 2)
        out.append(cv2.addWeighted(f, gain, field[y:y + h, x:x + w], 1.0, 0.0, dtype=cv2.CV_8U))
    return out


def h264_roundtrip(frames: Sequence[np.ndarray], crf: int = 30, preset: str = "superfast") -> list[np.ndarray]:
    """The frames encoded with libx264 (yuv420p, one thread so the result is deterministic) into an in-memory
    MP4 and decoded back to RGB: real block, ringing and chroma-subsampling artefacts."""
    h, w = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(crf), "preset": preset}
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        out.mux(stream.encode(None))
    buf.seek(0)
    with av.open(buf, "r") as inp:
        decoded = [fr.to_ndarray(format="rgb24") for fr in inp.decode(video=0)]
    if len(decoded) != len(frames):
        raise RuntimeError(f"h264 round trip returned {len(decoded)} frames for {len(frames)}")
    return decoded


def _finish(frames: list[np.ndarray], seed: int, noise: bool, h264: bool, crf: int) -> tuple[np.ndarray, ...]:
    if noise:
        frames = add_camera_noise(frames, seed)
    if h264:
        frames = h264_roundtrip(frames, crf)
    return tuple(_readonly(f) for f in frames)


@functools.lru_cache(maxsize=8)
def _face_clip(n: int, size: Size, seed: int, noise: bool, h264: bool, crf: int) -> tuple[np.ndarray, ...]:
    raw = [place_face(size, p.scale, p.center, p.angle) for p in clip_poses(n, size, seed)]
    return _finish(raw, seed, noise, h264, crf)


def face_clip(n: int = 90, size: Size = (1280, 720), seed: int = 0, noise: bool = True, h264: bool = True,
              crf: int = 30) -> list[np.ndarray]:
    """`n` frames (30 fps) of the face moving smoothly (`clip_poses`), with camera noise and H.264 artefacts.

    The face scales with the frame height, so (640, 360) and (1920, 1080) give the same picture at other
    sizes.  At crf 30 the encoder removes nearly all of the added sensor noise from the skin (luma HF energy
    there: clean 2.2, noisy 4.7, noisy then crf 30 2.2, crf 23 3.2): use `h264=False` or a lower `crf` to
    test smoothing on noisy skin.  Cached: the frames are shared and read-only."""
    return list(_face_clip(n, tuple(size), seed, noise, h264, crf))


@functools.lru_cache(maxsize=4)
def _still_clip(n: int, size: Size, seed: int, noise: bool, h264: bool, crf: int) -> tuple[np.ndarray, ...]:
    return _finish([place_face(size)] * n, seed, noise, h264, crf)


def still_clip(n: int = 60, size: Size = (1280, 720), seed: int = 0, noise: bool = False, h264: bool = False,
               crf: int = 30) -> list[np.ndarray]:
    """The centred face repeated `n` times (by default identical frames, for stability tests; with `noise`
    each frame gets its own sensor noise, like a camera pointed at a still face).  Cached, read-only."""
    return list(_still_clip(n, tuple(size), seed, noise, h264, crf))


def _cover(img: np.ndarray, size: Size) -> np.ndarray:
    """`img` scaled to cover `size` and centre-cropped to it."""
    w, h = size
    ih, iw = img.shape[:2]
    k = max(w / iw, h / ih)
    big = cv2.resize(img, (max(w, round(iw * k)), max(h, round(ih * k))), interpolation=cv2.INTER_CUBIC)
    y0, x0 = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])


def no_face_frame(size: Size = (1280, 720)) -> np.ndarray:
    """A real photograph without a face (skimage `coffee()`, a cup on a table) covering the frame."""
    return _cover(skdata.coffee(), size)


def two_faces_frame(size: Size = (1280, 720)) -> np.ndarray:
    """Two portraits side by side (the right one mirrored), each face 0.8x the default size."""
    w, h = size
    left = place_face((w // 2, h), scale=0.8)
    right = cv2.flip(place_face((w - w // 2, h), scale=0.8), 1)
    return np.ascontiguousarray(np.hstack([left, right]))


EDGE_FACE_CUT = 0.25  # fraction of the face width (between the oval's extremes 234/454) outside the frame


def edge_face_frame(size: Size = (1280, 720)) -> np.ndarray:
    """The default face moved left so about a quarter of its width is cut off by the frame's left edge."""
    h = size[1]
    face_w = 91.0 * FACE_FRACTION * h / ASTRONAUT_FACE_HEIGHT  # 234-to-454 width in astronaut() is ~91 px
    return place_face(size, center=(face_w * (0.5 - EDGE_FACE_CUT), h / 2))


@functools.lru_cache(maxsize=2)
def _lost_face_clip(n: int, gone: tuple[int, int], size: Size, seed: int, noise: bool, h264: bool,
                    crf: int) -> tuple[np.ndarray, ...]:
    raw = [place_face(size, p.scale, p.center, p.angle) for p in clip_poses(n, size, seed)]
    empty = no_face_frame(size)
    raw = [empty if gone[0] <= i < gone[1] else f for i, f in enumerate(raw)]
    return _finish(raw, seed, noise, h264, crf)


def lost_face_clip(n: int = 60, gone: tuple[int, int] = (20, 40), size: Size = (1280, 720), seed: int = 0,
                   noise: bool = True, h264: bool = True, crf: int = 30) -> list[np.ndarray]:
    """A `face_clip` whose frames `gone[0]` to `gone[1]` (exclusive) show `no_face_frame` instead: the face is
    there, is lost, comes back.  Cached, read-only."""
    return list(_lost_face_clip(n, tuple(gone), tuple(size), seed, noise, h264, crf))


# --- landmarks ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _static_mesh(max_faces: int) -> _FM.FaceMesh:
    return _FM.FaceMesh(static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
                        min_detection_confidence=0.5)


def landmarks(rgb: np.ndarray, max_faces: int = 1) -> list[np.ndarray]:
    """Each found face's 478 landmarks as float (478, 2) pixel coordinates (x, y); [] when no face.

    Static-image mode (each frame detected afresh, so the same frame always gives the same numbers) with
    iris refinement (accurate eye and lip contours)."""
    h, w = rgb.shape[:2]
    result = _static_mesh(max_faces).process(np.ascontiguousarray(rgb))
    faces = result.multi_face_landmarks or []
    return [np.array([(p.x * w, p.y * h) for p in f.landmark], dtype=np.float64) for f in faces]


def count_faces(frames: Sequence[np.ndarray], max_faces: int = 1, tracking: bool = True) -> list[int]:
    """How many faces FaceMesh finds in each frame of a clip.  `tracking` uses video mode (a fresh FaceMesh
    that detects once and then tracks, as a live filter would); otherwise every frame is detected afresh."""
    if not tracking:
        return [len(landmarks(f, max_faces)) for f in frames]
    with _FM.FaceMesh(static_image_mode=False, max_num_faces=max_faces, refine_landmarks=True) as mesh:
        return [len(mesh.process(np.ascontiguousarray(f)).multi_face_landmarks or []) for f in frames]


# --- measures -----------------------------------------------------------------------------------------------


def polygon_area(pts: np.ndarray) -> float:
    """Area of a closed polygon (shoelace), px²."""
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _dist(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.hypot(*(a - b)))


@dataclass(frozen=True, eq=False)
class FaceMeasure:
    """Distances (px) and areas (px²) of one face, from its landmarks.

    eye_area: both eye-contour polygons (LEFT_EYE + RIGHT_EYE); jaw_width: mean width across JAW_PAIRS;
    chin_length: mouth centre (13/14) to chin tip 152; eye_distance: between the eye-contour centroids;
    nose_mouth: nose tip 1 to mouth centre; face_height: forehead 10 to chin 152."""

    eye_area: float
    jaw_width: float
    chin_length: float
    eye_distance: float
    nose_mouth: float
    face_height: float
    landmarks: np.ndarray

    NAMES = ("eye_area", "jaw_width", "chin_length", "eye_distance", "nose_mouth", "face_height")

    def values(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self.NAMES}

    def change(self, before: FaceMeasure) -> dict[str, float]:
        """Each measure relative to `before`: after / before - 1 (0.10 is +10%)."""
        return {k: getattr(self, k) / getattr(before, k) - 1.0 for k in self.NAMES}


def measure_landmarks(lms: np.ndarray) -> FaceMeasure:
    """The `FaceMeasure` of one face's (478, 2) landmarks."""
    mouth = lms[list(MOUTH_CENTRE)].mean(axis=0)
    return FaceMeasure(
        eye_area=polygon_area(lms[LEFT_EYE]) + polygon_area(lms[RIGHT_EYE]),
        jaw_width=float(np.mean([_dist(lms[a], lms[b]) for a, b in JAW_PAIRS])),
        chin_length=_dist(mouth, lms[CHIN_TIP]),
        eye_distance=_dist(lms[LEFT_EYE].mean(axis=0), lms[RIGHT_EYE].mean(axis=0)),
        nose_mouth=_dist(lms[NOSE_TIP], mouth),
        face_height=_dist(lms[FOREHEAD_TOP], lms[CHIN_TIP]),
        landmarks=lms,
    )


# Small known warps (scale, degrees, dx, dy) about the face centre for `measure(samples=k)`: the first k are
# used, the first is the identity.  Each re-detection sees different pixels, so its landmark jitter is
# largely independent and the mean of k detections mapped back is steadier.
_JITTERS: list[tuple[float, float, float, float]] = [
    (1.0, 0.0, 0.0, 0.0), (1.03, 2.0, 0.37, 0.61), (0.97, -2.0, 0.74, 0.22), (1.015, -1.0, 0.11, 0.83),
    (0.985, 1.0, 0.48, 0.44), (1.02, -1.5, 0.85, 0.05), (0.98, 1.5, 0.22, 0.39), (1.01, 0.5, 0.59, 0.76),
    (0.99, -0.5, 0.96, 0.17),
]


def steady_landmarks(rgb: np.ndarray, samples: int = 5) -> np.ndarray | None:
    """One face's landmarks averaged over `samples` (1-9) detections of slightly warped copies of the frame
    (scale ±3%, rotation ±2°, sub-pixel shifts), each mapped back through its inverse warp.  FaceMesh's
    frame-to-frame jitter (eye area ±3-6% for one detection) drops to about ±2%.  None when no face."""
    if not 1 <= samples <= len(_JITTERS):
        raise ValueError(f"samples must be 1..{len(_JITTERS)}, not {samples}")
    faces = landmarks(rgb, 1)
    if not faces:
        return None
    centre = face_center(faces[0])
    h, w = rgb.shape[:2]
    found = [faces[0]]
    for scale, angle, dx, dy in _JITTERS[1:samples]:
        m = cv2.getRotationMatrix2D(centre, angle, scale)
        m[:, 2] += (dx, dy)
        warped = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        again = landmarks(warped, 1)
        if again:
            back = cv2.invertAffineTransform(m)
            found.append(again[0] @ back[:, :2].T + back[:, 2])
    return np.mean(found, axis=0)


def measure(rgb: np.ndarray, samples: int = 1) -> FaceMeasure | None:
    """The measures of the (single, most confident) face in an RGB frame; None when no face is found.

    `samples` > 1 measures `steady_landmarks` (costs `samples` detections, ~25 ms each at 720p): use it when
    comparing a frame before and after a filter, so detector jitter does not hide or fake a change."""
    lms = steady_landmarks(rgb, samples) if samples > 1 else next(iter(landmarks(rgb, 1)), None)
    return None if lms is None else measure_landmarks(lms)


def face_center(lms: np.ndarray) -> tuple[float, float]:
    """Midpoint of forehead 10 and chin 152."""
    c = (lms[FOREHEAD_TOP] + lms[CHIN_TIP]) / 2
    return float(c[0]), float(c[1])


# --- region masks (uint8 0/255, the frame's height x width) --------------------------------------------------


def _shape2(shape: Sequence[int]) -> tuple[int, int]:
    return int(shape[0]), int(shape[1])


def _fill(mask: np.ndarray, pts: np.ndarray) -> None:
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 255, lineType=cv2.LINE_8)


def _face_px(lms: np.ndarray, fraction: float) -> int:
    """`fraction` of the face height in whole pixels, at least 2."""
    return max(2, round(fraction * _dist(lms[FOREHEAD_TOP], lms[CHIN_TIP])))


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def eye_lip_edge_mask(lms: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A band around both eye contours and the outer and inner lip contours, 2.5% of the face height either
    side of each line (about 8 px at 720p): where a smoothing filter must keep edges."""
    mask = np.zeros(_shape2(shape), np.uint8)
    half = _face_px(lms, 0.025)
    for ring in (LEFT_EYE, RIGHT_EYE, LIPS_OUTER, LIPS_INNER):
        cv2.polylines(mask, [np.round(lms[ring]).astype(np.int32)], True, 255, thickness=2 * half + 1)
    return mask


def skin_mask(lms: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Skin only: the face oval eroded by 3% of the face height, minus the eyes, brows, lips, nostrils (each
    grown by 2% of the face height) and minus the `eye_lip_edge_mask` band grown by 2 px, so skin and band are
    disjoint and a 3x3 operator on the band never reads a skin pixel."""
    hw = _shape2(shape)
    oval = np.zeros(hw, np.uint8)
    _fill(oval, lms[FACE_OVAL])
    oval = cv2.erode(oval, _disc(_face_px(lms, 0.03)))
    parts = np.zeros(hw, np.uint8)
    for ring in (LEFT_EYE, RIGHT_EYE, LIPS_OUTER):
        _fill(parts, lms[ring])
    for idx in (LEFT_BROW, RIGHT_BROW, NOSTRILS):
        _fill(parts, cv2.convexHull(lms[idx].astype(np.float32))[:, 0])
    parts = cv2.dilate(parts, _disc(_face_px(lms, 0.02)))
    band = cv2.dilate(eye_lip_edge_mask(lms, shape), _disc(2))
    return np.where((oval > 0) & (parts == 0) & (band == 0), 255, 0).astype(np.uint8)


def cheek_masks(lms: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Round cheek patches (radius 12% of the face height, centred on the cheek apples CHEEK_POINTS) limited to
    `skin_mask`; (subject's right = picture left, subject's left = picture right)."""
    skin = skin_mask(lms, shape)
    radius = _face_px(lms, 0.12)
    out = []
    for pair in CHEEK_POINTS:
        m = np.zeros(_shape2(shape), np.uint8)
        cx, cy = lms[list(pair)].mean(axis=0)
        cv2.circle(m, (round(cx), round(cy)), radius, 255, -1)
        out.append(cv2.bitwise_and(m, skin))
    return out[0], out[1]


def face_box(lms: np.ndarray, shape: Sequence[int], margin: float = 0.1) -> Box:
    """The landmarks' bounding box grown by `margin` of its size on every side, clipped to the frame."""
    h, w = _shape2(shape)
    (x0, y0), (x1, y1) = lms.min(axis=0), lms.max(axis=0)
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    return (max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my)),
            min(w, math.ceil(x1 + mx) + 1), min(h, math.ceil(y1 + my) + 1))


# --- image scores -------------------------------------------------------------------------------------------


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma as float32, 0..255."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    return 0.299 * r + 0.587 * g + 0.114 * b


def _crop(rgb: np.ndarray, mask: np.ndarray, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """The mask's bounding box grown by `pad` pixels: image and boolean mask cut to it (scores stay local)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("empty mask")
    h, w = mask.shape
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    return rgb[y0:y1, x0:x1], mask[y0:y1, x0:x1] > 0


def hf_energy(rgb: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """Fine texture inside the mask: the mean squared difference between luma and its Gaussian blur
    (`sigma` px), in 8-bit units².  Skin smoothing lowers it; noise and pores raise it."""
    img, m = _crop(rgb, mask, pad=int(4 * sigma) + 2)
    y = luma(img)
    hf = y - cv2.GaussianBlur(y, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    return float(np.mean(hf[m] ** 2))


def edge_energy(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Edge strength inside the mask: the mean squared Sobel (3x3) gradient magnitude of luma."""
    img, m = _crop(rgb, mask, pad=3)
    y = luma(img)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean((gx * gx + gy * gy)[m]))


def mean_lab(rgb: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """Mean CIELAB (D65) colour inside the mask in real units: L* 0..100, a* and b* about -128..127."""
    px = rgb[mask > 0].astype(np.float32).reshape(-1, 1, 3) / np.float32(255)
    if len(px) == 0:
        raise ValueError("empty mask")
    lab = cv2.cvtColor(px, cv2.COLOR_RGB2LAB).reshape(-1, 3).mean(axis=0)
    return float(lab[0]), float(lab[1]), float(lab[2])


def mean_abs_diff_outside(a: np.ndarray, b: np.ndarray, box: Box) -> float:
    """Mean absolute difference (8-bit units, over all channels) between two frames outside `box`: what a
    face filter changed where it should not have."""
    x0, y0, x1, y1 = box
    outside = np.ones(a.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    if not outside.any():
        return 0.0
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d[outside].mean())
