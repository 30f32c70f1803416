"""Where the face-mesh model looks: a rotated square around a face, and the crop that feeds the model.

MediaPipe's face mesh does not look at the whole frame.  It runs its 192x192 landmark model on a square
crop around the face, turned so the eyes lie level, and follows the face by taking the next frame's
square from this frame's landmarks.  These are the same rules as its graphs (mediapipe 0.10.21,
`face_landmark_landmarks_to_roi` and `face_detection_front_detection_to_roi`):

- from landmarks: the centre of their bounding box; turned by the line from landmark 33 (the outer corner
  of the eye on the image's left) to 263 (the other eye's outer corner);
- from a face detection: the centre of its box; turned by the line from its keypoint 0 to keypoint 1
  (the eyes);
- then the longer side, x 1.5, as the square's side.

`crop_matrix` maps a crop pixel to the frame (for `cv2.warpAffine` with `WARP_INVERSE_MAP`), and the same
matrix takes the model's landmarks, which are crop pixels, back to frame pixels.  Pure functions, no
model and no MediaPipe here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["EYE_ENDS", "SCALE", "Roi", "crop_matrix", "overlap", "project", "roi_from_box", "roi_from_landmarks"]

Point = NDArray[np.float32] | tuple[float, float]

#: the landmarks whose line sets the square's turn (outer eye corners: image-left, image-right)
EYE_ENDS = (33, 263)
#: the square's side over the longer side of the face's box
SCALE = 1.5


@dataclass(frozen=True)
class Roi:
    """A square around a face: centre (cx, cy) and side in frame pixels, turned by `angle` radians
    (the crop's x axis points along (cos angle, sin angle) in the frame; y down)."""

    cx: float
    cy: float
    size: float
    angle: float

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the square, its turn ignored (MediaPipe compares regions the same way)."""
        h = self.size / 2
        return self.cx - h, self.cy - h, self.cx + h, self.cy + h


def roi_from_box(x0: float, y0: float, x1: float, y1: float, start: Point, end: Point) -> Roi:
    """The square around the box (x0, y0)-(x1, y1), turned by the line start -> end (all in pixels)."""
    angle = math.atan2(float(end[1]) - float(start[1]), float(end[0]) - float(start[0]))
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * SCALE, angle)


def roi_from_landmarks(pts: NDArray[np.float32]) -> Roi:
    """The next frame's square from this frame's (468, 2) landmarks in pixels."""
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return roi_from_box(float(x0), float(y0), float(x1), float(y1), pts[EYE_ENDS[0]], pts[EYE_ENDS[1]])


def crop_matrix(roi: Roi, n: int) -> NDArray[np.float64]:
    """2x3 affine matrix from crop pixels (u, v) of an n x n crop to frame pixels: the crop's corner (0, 0)
    is the square's corner and (n/2, n/2) its centre."""
    k = roi.size / n
    c, s = math.cos(roi.angle) * k, math.sin(roi.angle) * k
    h = n / 2
    return np.array([[c, -s, roi.cx - (c - s) * h],
                     [s, c, roi.cy - (s + c) * h]], np.float64)


def project(uv: NDArray[np.float32], matrix: NDArray[np.float64]) -> NDArray[np.float32]:
    """Crop pixels (N, >=2) -> frame pixels (N, 2) float32, written out (a matrix product would call BLAS,
    whose thread pool spins after each call: see BENCHMARKS.md, beauty)."""
    u, v = uv[:, 0], uv[:, 1]
    out = np.empty((len(uv), 2), np.float32)
    out[:, 0] = u * matrix[0, 0] + v * matrix[0, 1] + matrix[0, 2]
    out[:, 1] = u * matrix[1, 0] + v * matrix[1, 1] + matrix[1, 2]
    return out


def overlap(a: Roi, b: Roi) -> float:
    """Intersection over union of the two squares' bounds (0 = apart, 1 = the same)."""
    ax0, ay0, ax1, ay1 = a.bounds()
    bx0, by0, bx1, by1 = b.bounds()
    iw, ih = min(ax1, bx1) - max(ax0, bx0), min(ay1, by1) - max(ay0, by0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a.size * a.size + b.size * b.size - inter)
