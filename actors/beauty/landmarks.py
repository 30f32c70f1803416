"""Face landmarks for the beauty filter: MediaPipe face mesh, steadied, held and faded.

- `FaceMesh` finds faces and their 468 landmarks the way mediapipe 0.10.21's face mesh does in tracking
  mode, with the models inside its wheel (newer releases download them, which an offline machine cannot):
  MediaPipe's short-range face detector runs when fewer faces are followed than `max_faces` (the start, a
  face lost), and MediaPipe's landmark model then follows each face from frame to frame on a crop turned
  and placed by the last frame's landmarks (`roi.py`).  The model runs in the calling thread (`model.py`):
  the same landmarks as MediaPipe's own graph (`GraphFaceMesh`, within a few hundredths of a pixel on the
  test clip), about 1 ms less per 720p frame, and no work left running on other threads after the answer.
- `Steady` keeps the warps from shimmering on a still face.  The mesh jitters by a fraction of a pixel
  from frame to frame even on identical frames; a warp follows its landmarks, so the output would flicker.
  The landmarks are followed with a 1-euro-like filter (heavy smoothing when slow, little when fast)
  behind a dead band: a change whose RMS over all points is below `deadband` (a share of the face width)
  is ignored, so a still face gets bit-identical landmarks and the output does not move at all.
- `FaceTracks` matches the detected faces to the faces of the last frames (nearest centre), holds a face
  that a frame missed for `hold` frames at full strength, then fades it out over `fade` frames; a
  face that is gone for good leaves no trace (frames without faces pass through unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from mediaengine.sdk.errors import FaceModelError
from numpy.typing import NDArray

from .model import INPUT, LandmarkModel, mediapipe_missing
from .pipeline import Face
from .regions import face_frame
from .roi import Roi, crop_matrix, overlap, project, roi_from_box, roi_from_landmarks

__all__ = ["SAME_FACE", "FaceMesh", "FaceTracks", "GraphFaceMesh", "Steady", "mediapipe_face_mesh", "mesh_points"]

Landmarks = NDArray[np.float32]
#: the face mesh's own landmarks (without the 10 iris points that `refine_landmarks` adds)
MESH_POINTS = 468
#: two squares overlapping more than this (intersection over union) hold the same face
SAME_FACE = 0.5


def mediapipe_face_mesh() -> Any:
    """mediapipe's `solutions.face_mesh` module, or FaceModelError saying how to get it."""
    try:
        from mediapipe.python.solutions import face_mesh
    except Exception as exc:  # ImportError, or a broken install (protobuf, numpy ABI)
        raise mediapipe_missing(exc) from exc
    return face_mesh


#: one landmark of a serialized NormalizedLandmarkList: field 1 (a 15-byte message) holding x, y, z as
#: fixed32 fields 1, 2, 3.  Tag and length bytes at these offsets; the floats follow the tags
_LANDMARK_BYTES = 17
_LANDMARK_TAGS = ((0, 0x0A), (1, 0x0F), (2, 0x0D), (7, 0x15), (12, 0x1D))


def mesh_points(face: Any) -> Landmarks:
    """The mesh's first 468 (x, y), normalised to the image, from one NormalizedLandmarkList.  Read from
    its serialized bytes with numpy when every landmark has exactly x, y and z (what the face mesh
    writes): 0.01 ms instead of 0.2 ms for a Python loop over 468 protobuf messages; any other layout
    takes that loop."""
    raw = np.frombuffer(face.SerializeToString(), np.uint8)
    if raw.size >= MESH_POINTS * _LANDMARK_BYTES and raw.size % _LANDMARK_BYTES == 0:
        rows = raw.reshape(-1, _LANDMARK_BYTES)[:MESH_POINTS]
        if all((rows[:, i] == tag).all() for i, tag in _LANDMARK_TAGS):
            xy = np.empty((MESH_POINTS, 2), np.float32)
            xy[:, 0] = np.ascontiguousarray(rows[:, 3:7]).view("<f4")[:, 0]
            xy[:, 1] = np.ascontiguousarray(rows[:, 8:12]).view("<f4")[:, 0]
            return xy
    return np.array([(p.x, p.y) for p in face.landmark[:MESH_POINTS]], np.float32)


class FaceMesh:
    """Face landmarks in tracking mode, as MediaPipe's face mesh finds them: `detect(rgb)` -> landmarks
    (468, 2) in pixels, per face (see the module's docstring)."""

    def __init__(self, max_faces: int = 1, min_detection: float = 0.5, min_tracking: float = 0.5,
                 runtime: str = "auto") -> None:
        self._detector = _face_detector(min_detection)  # FaceModelError without mediapipe
        self._model = LandmarkModel(runtime=runtime)
        self.runtime = self._model.runtime
        self.max_faces = max_faces
        self.min_tracking = min_tracking
        self.detections = 0  # frames the face detector ran on
        self._rois: list[Roi] = []  # where to look in the next frame: one square per face followed
        self._crop = np.empty((INPUT, INPUT, 3), np.uint8)

    def detect(self, rgb: NDArray[np.uint8]) -> list[Landmarks]:
        rois = self._rois
        if len(rois) < self.max_faces:  # a face to find: the detector runs (MediaPipe does the same)
            rois = rois + self._find(rgb)[:self.max_faces]
        faces: list[Landmarks] = []
        follow: list[Roi] = []
        for roi in rois:
            if len(follow) == self.max_faces:
                break
            if roi.size < 8 or any(overlap(roi, f) > SAME_FACE for f in follow):
                continue  # a detection of a face already followed, or two squares that met on one face
            matrix = crop_matrix(roi, INPUT)
            cv2.warpAffine(rgb, matrix, (INPUT, INPUT), dst=self._crop,
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
            uv, score = self._model.run(self._crop)
            if score < self.min_tracking:
                continue  # lost: the detector looks for it from the next frame
            pts = project(uv, matrix)
            faces.append(pts)
            follow.append(roi_from_landmarks(pts))
        self._rois = follow
        return faces

    def _find(self, rgb: NDArray[np.uint8]) -> list[Roi]:
        """The faces' squares from MediaPipe's short-range face detector, best first."""
        self.detections += 1
        h, w = rgb.shape[:2]
        found = self._detector.process(np.ascontiguousarray(rgb)).detections or ()
        rois = []
        for d in found:
            box, eyes = d.location_data.relative_bounding_box, d.location_data.relative_keypoints
            if len(eyes) < 2:
                continue
            x0, y0 = box.xmin * w, box.ymin * h
            rois.append(roi_from_box(x0, y0, x0 + box.width * w, y0 + box.height * h,
                                     (eyes[0].x * w, eyes[0].y * h), (eyes[1].x * w, eyes[1].y * h)))
        return rois

    def reset(self) -> None:
        """Forget the faces followed: the next frame starts with the detector."""
        self._rois = []

    def close(self) -> None:
        self._detector.close()


def _face_detector(min_detection: float) -> Any:
    try:
        from mediapipe.python.solutions import face_detection
    except Exception as exc:  # ImportError, or a broken install (protobuf, numpy ABI)
        raise mediapipe_missing(exc) from exc
    try:  # model 0: the short-range detector, the one the face mesh uses
        return face_detection.FaceDetection(model_selection=0, min_detection_confidence=min_detection)
    except Exception as exc:  # a model file missing from the wheel, a graph that does not start
        raise FaceModelError(f"mediapipe's face detector did not start: {type(exc).__name__}: {exc}") from exc


class GraphFaceMesh:
    """MediaPipe's own face-mesh graph in tracking mode: `detect(rgb)` -> landmarks (468, 2) in pixels, per
    face.  The reference `FaceMesh` is checked against (tests) and measured against (the `beauty` benchmark)."""

    def __init__(self, max_faces: int = 1, refine: bool = False, min_detection: float = 0.5,
                 min_tracking: float = 0.5) -> None:
        module = mediapipe_face_mesh()
        try:
            self._mesh = module.FaceMesh(static_image_mode=False, max_num_faces=max_faces,
                                         refine_landmarks=refine, min_detection_confidence=min_detection,
                                         min_tracking_confidence=min_tracking)
        except Exception as exc:  # a model file missing from the wheel, a graph that does not start
            raise FaceModelError(f"mediapipe's face mesh did not start: {type(exc).__name__}: {exc}") from exc
        self.max_faces = max_faces

    def detect(self, rgb: NDArray[np.uint8]) -> list[Landmarks]:
        h, w = rgb.shape[:2]
        result = self._mesh.process(rgb)
        faces = []
        for face in result.multi_face_landmarks or ():
            pts = mesh_points(face)
            pts *= np.array([w, h], np.float32)
            faces.append(pts)
        return faces

    def close(self) -> None:
        self._mesh.close()


@dataclass
class Steady:
    """Steadies one face's landmarks (see the module's docstring)."""

    deadband: float = 0.004  # RMS change below this share of the face width is ignored
    slow: float = 0.25  # smoothing weight of a new measurement when the face barely moves
    fast_at: float = 0.03  # an RMS change of this share of the face width is followed at once
    current: Landmarks | None = None

    def update(self, raw: Landmarks) -> Landmarks:
        if self.current is None or self.current.shape != raw.shape:
            self.current = raw.copy()
            return self.current
        width = face_frame(self.current).width
        rms = float(np.sqrt(np.mean(np.sum((raw - self.current) ** 2, axis=1)))) / width
        if rms < self.deadband:
            return self.current
        alpha = min(1.0, self.slow + (1.0 - self.slow) * rms / self.fast_at)
        self.current = (self.current + np.float32(alpha) * (raw - self.current)).astype(np.float32)
        return self.current


@dataclass
class _Track:
    steady: Steady
    missed: int = 0


@dataclass
class FaceTracks:
    """The faces of the last frames, for `update(detected) -> [Face(landmarks, weight)]`."""

    hold: int = 5  # frames a missed face keeps its full strength
    fade: int = 10  # frames over which it then fades out
    limit: int = 4  # faces followed at once: the most recently seen are kept
    tracks: list[_Track] = field(default_factory=list)

    def update(self, detected: list[Landmarks]) -> list[Face]:
        unmatched = list(range(len(detected)))
        for track in self.tracks:
            assert track.steady.current is not None
            best, best_d = None, float("inf")
            centre = track.steady.current.mean(axis=0)
            limit = face_frame(track.steady.current).width * 0.6
            for i in unmatched:
                d = float(np.hypot(*(detected[i].mean(axis=0) - centre)))
                if d < best_d and d < limit:
                    best, best_d = i, d
            if best is None:
                track.missed += 1
            else:
                unmatched.remove(best)
                track.steady.update(detected[best])
                track.missed = 0
        for i in unmatched:
            steady = Steady()
            steady.update(detected[i])
            self.tracks.append(_Track(steady))
        self.tracks = [t for t in self.tracks if t.missed <= self.hold + self.fade]
        if len(self.tracks) > self.limit:
            self.tracks = sorted(self.tracks, key=lambda t: t.missed)[:self.limit]
        faces = []
        for t in self.tracks:
            assert t.steady.current is not None
            weight = 1.0 if t.missed <= self.hold else 1.0 - (t.missed - self.hold) / (self.fade + 1)
            faces.append(Face(t.steady.current, weight))
        return faces

    def clear(self) -> None:
        self.tracks.clear()
