"""Face regions from MediaPipe face-mesh landmarks: which landmark is what, and the masks built from them.

Landmarks are a float32 (468, 2) or (478, 2) array of pixel coordinates (x, y) in the frame, in the
face mesh's canonical numbering (the indices below are those of `mediapipe.solutions.face_mesh`'s
FACEMESH_* connection sets, written out so this module needs no MediaPipe).  Left and right are the
subject's: the subject's left eye is on the image's right.

Everything here is pure: landmarks in, numbers or arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BROW_L", "BROW_R", "CHEEK_L", "CHEEK_R", "CHIN", "EYE_L", "EYE_R", "FACE_OVAL", "FOREHEAD", "JAW_L",
    "JAW_R", "LIPS", "NOSE_BRIDGE", "NOSE_LOWER", "FaceFrame", "cheek_weights", "face_box", "face_frame",
    "skin_mask",
]

Landmarks = NDArray[np.float32]
Box = tuple[int, int, int, int]  # x, y, w, h in pixels

#: the face's outline, in order around it (starts at the top of the forehead, goes down the image's right)
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
             148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
#: eye contours, in order around each eye
EYE_R = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
EYE_L = [362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398]
#: eyebrows (a hull of these covers each brow)
BROW_R = [46, 53, 52, 65, 55, 70, 63, 105, 66, 107]
BROW_L = [276, 283, 282, 295, 285, 300, 293, 334, 296, 336]
#: the outer lip line, in order
LIPS = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
#: the lower nose: nostrils and the wings around them (a hull)
NOSE_LOWER = [48, 64, 98, 97, 2, 326, 327, 294, 278, 129, 358, 219, 439, 240, 460]
#: the jaw line on each side, from the ear down to the chin (the points face thinning pulls in)
JAW_R = [132, 58, 172, 136, 150, 149]
JAW_L = [361, 288, 397, 365, 379, 378]
#: the chin tip and the points beside it
CHIN = 152
CHIN_SIDES = [148, 176, 377, 400]
#: the chin's sides on each side, from the jaw's lower end to just beside the tip (chin slimming)
CHIN_SLIM_R = [136, 150, 149, 176]
CHIN_SLIM_L = [365, 379, 378, 400]
#: between the eyes (top of the nose bridge) and the forehead's top
NOSE_BRIDGE = 168
FOREHEAD = 10
#: the centres of the cheeks (under the outer eye corner, level with the nose wings)
CHEEK_R = [50, 205, 187, 123, 117]
CHEEK_L = [280, 425, 411, 352, 346]
_CHEEKS = [CHEEK_R, CHEEK_L]


@dataclass(frozen=True)
class FaceFrame:
    """The face's own axes: `down` from between the eyes to the chin, `across` from the image's left of
    the face to its right (perpendicular to `down`), and its size in pixels."""

    centre: NDArray[np.float32]  # between the eyes
    down: NDArray[np.float32]  # unit vector
    across: NDArray[np.float32]  # unit vector
    width: float  # across the face oval
    height: float  # forehead top to chin


_FRAMES: dict[bytes, FaceFrame] = {}  # the last few faces' frames: every stage of a frame asks for them


def face_frame(lms: Landmarks) -> FaceFrame:
    """The face's axes and size (cached for the last few landmark sets: a frame asks several times)."""
    key = lms.tobytes()
    ff = _FRAMES.get(key)
    if ff is None:
        if len(_FRAMES) >= 8:
            _FRAMES.pop(next(iter(_FRAMES)))
        ff = _FRAMES[key] = _face_frame(lms)
    return ff


def _face_frame(lms: Landmarks) -> FaceFrame:
    centre = lms[NOSE_BRIDGE]
    axis = lms[CHIN] - lms[FOREHEAD]
    height = float(np.hypot(*axis)) or 1.0
    down = (axis / height).astype(np.float32)
    across = np.array([-down[1], down[0]], np.float32)  # down rotated by -90 degrees: image-right on an upright face
    if float(np.dot(across, lms[454] - lms[234])) < 0:
        across = -across
    oval = lms[FACE_OVAL]
    proj = (oval - centre) @ across
    width = float(proj.max() - proj.min()) or 1.0
    return FaceFrame(centre.astype(np.float32), down, across, width, height)


def face_box(lms: Landmarks, shape: tuple[int, ...], margin: float = 0.25) -> Box:
    """The face oval's bounding box grown by `margin` x its size on every side, clipped to the frame
    (h, w, ...) and rounded outwards to even numbers; (0, 0, 0, 0) when the face is wholly outside."""
    h, w = shape[:2]
    oval = lms[FACE_OVAL]
    x0, y0 = oval.min(axis=0)
    x1, y1 = oval.max(axis=0)
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    bx0 = max(0, int(np.floor(x0 - mx)) & ~1)
    by0 = max(0, int(np.floor(y0 - my)) & ~1)
    bx1 = min(w, int(np.ceil(x1 + mx)) + 1 & ~1)
    by1 = min(h, int(np.ceil(y1 + my)) + 1 & ~1)
    if bx1 <= bx0 or by1 <= by0:
        return 0, 0, 0, 0
    return bx0, by0, bx1 - bx0, by1 - by0


def _poly(mask: NDArray[np.uint8], pts: NDArray[np.float32], value: int, hull: bool = False) -> None:
    p = np.round(pts * 4).astype(np.int32)  # 2 bits of sub-pixel precision
    if hull:
        p = cv2.convexHull(p)
    cv2.fillPoly(mask, [p.reshape(-1, 1, 2)], value, lineType=cv2.LINE_AA, shift=2)


#: the oval's points above the brows: on most faces the hair starts there, so the mask pulls them down
_FOREHEAD_TOP = [10, 338, 297, 332, 284, 251, 389, 109, 67, 103, 54, 21, 162]
_OVAL_TOP = np.isin(FACE_OVAL, _FOREHEAD_TOP)  # which of FACE_OVAL's points those are


def skin_mask(lms: Landmarks, box: Box, scale: float = 1.0, out: NDArray[np.uint8] | None = None
              ) -> NDArray[np.uint8]:
    """A soft 0..255 mask of the face's skin over `box` (box-relative), drawn at `scale` x the box's size
    (the effects compute at a reduced scale): the face oval with its top pulled down from the hairline,
    the eyes, brows and lips cut out (grown a little so their edges stay sharp), feathered at the rim.
    The nose stays in: the guided filter keeps the nostrils' edges, and a hole there shows."""
    x, y, w, h = box
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    mask = out if out is not None and out.shape == (sh, sw) else np.empty((sh, sw), np.uint8)
    mask.fill(0)
    pts = (lms - np.array([x, y], np.float32)) * np.float32(scale)
    ff = face_frame(lms)
    oval = pts[FACE_OVAL]
    centre = pts[NOSE_BRIDGE]
    oval[_OVAL_TOP] = centre + (oval[_OVAL_TOP] - centre) * np.float32(0.8)
    _poly(mask, oval, 255)
    holes = np.zeros_like(mask)
    for idx, hull in ((EYE_R, False), (EYE_L, False), (BROW_R, True), (BROW_L, True), (LIPS, False)):
        _poly(holes, pts[idx], 255, hull)
    width = ff.width * scale
    grow = max(1, round(width * 0.03))
    holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    cv2.subtract(mask, holes, dst=mask)
    # feather: a blur whose size follows the face, then cut the features out again so they keep their edges
    k = max(3, round(width * 0.08) | 1)
    cv2.stackBlur(mask, (k, k), dst=mask)  # a Gaussian's shape at a cost that does not grow with k
    cv2.subtract(mask, holes, dst=mask)
    return mask


def cheek_weights(lms: Landmarks, box: Box, scale: float = 1.0, size: tuple[int, int] | None = None
                  ) -> NDArray[np.float32]:
    """The blush weights of both cheeks over `box` at `scale` x its size (`size` (h, w): that grid's size,
    default the box's scaled): soft ellipses centred on the cheeks, wider than tall along the face's axes,
    (1 - d^2)^3 inside and exactly 0 outside, so blush touches nothing else.  Both cheeks in one sweep
    over the (small) grid: a dozen numpy steps, not a dozen per cheek."""
    x, y, bw, bh = box
    h, w = size if size is not None else (max(1, round(bh * scale)), max(1, round(bw * scale)))
    ff = face_frame(lms)
    r = ff.width * 0.15 * scale
    centres = (lms[_CHEEKS].sum(axis=1) * np.float32(1.0 / len(CHEEK_R)) - np.array([x, y], np.float32)) \
        * np.float32(scale)  # (2, 2): each cheek's centre on the grid
    dx = np.arange(w, dtype=np.float32)[None, None, :] - centres[:, 0, None, None]  # (2, 1, w)
    dy = np.arange(h, dtype=np.float32)[None, :, None] - centres[:, 1, None, None]  # (2, h, 1)
    a = (dx * ff.across[0] + dy * ff.across[1]) * np.float32(1 / (1.6 * r))
    b = (dx * ff.down[0] + dy * ff.down[1]) * np.float32(1 / (1.1 * r))
    t = a * a
    t += b * b
    np.subtract(np.float32(1.0), t, out=t)
    np.maximum(t, np.float32(0.0), out=t)
    weights: NDArray[np.float32] = (t * t * t).sum(axis=0)
    return weights
