"""beauty's landmarks: the crop square's geometry (`roi.py`, pure), the landmark model run directly
(`model.py`, LiteRT and OpenCV's dnn) and `FaceMesh` following real faces, checked against MediaPipe's own
face-mesh graph (`GraphFaceMesh`) on the moving test clip, a face lost and found, two faces and a face cut
by the frame's edge."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="the beauty extra needs mediapipe 0.10.21 (Python 3.9-3.12)")

from mediaengine.actors.beauty.landmarks import FaceMesh, GraphFaceMesh
from mediaengine.actors.beauty.model import INPUT, LandmarkModel
from mediaengine.actors.beauty.roi import EYE_ENDS, Roi, crop_matrix, overlap, project, roi_from_landmarks
from mediaengine.sdk.errors import FaceModelError

from tests import facekit as fk

RUNTIMES = ["litert", "opencv"]


# ---- the square and the crop (pure) -------------------------------------------------------------

def test_the_crop_matrix_puts_the_crop_centre_on_the_square_centre_and_turns_with_it() -> None:
    roi = Roi(500.0, 300.0, 384.0, math.radians(30))
    m = crop_matrix(roi, INPUT)
    corners = np.array([[INPUT / 2, INPUT / 2], [INPUT, INPUT / 2], [0, 0]], np.float32)
    centre, right, corner = project(corners, m)
    assert np.allclose(centre, (500, 300), atol=1e-3)
    # the crop's x axis runs along the turn, half the side from the centre
    assert np.allclose(right - centre, (192 * math.cos(math.radians(30)), 192 * math.sin(math.radians(30))),
                       atol=1e-3)
    assert math.isclose(float(np.hypot(*(corner - centre))), 192 * math.sqrt(2), rel_tol=1e-5)


def test_a_frame_point_cropped_and_projected_back_lands_where_it_was() -> None:
    """warpAffine with the matrix samples the frame where `project` says: a bright dot drawn in the frame
    shows in the crop at the place whose projection is the dot."""
    frame = np.zeros((720, 1280, 3), np.uint8)
    cv2.circle(frame, (700, 420), 3, (255, 255, 255), -1)
    m = crop_matrix(Roi(640.0, 360.0, 300.0, math.radians(-20)), INPUT)
    crop = cv2.warpAffine(frame, m, (INPUT, INPUT), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    back = project(np.array([[xs.mean(), ys.mean()]], np.float32), m)[0]
    assert np.hypot(*(back - (700, 420))) < 1.0


def test_the_square_from_landmarks_is_turned_by_the_eyes_and_half_again_the_face() -> None:
    rng = np.random.default_rng(1)
    pts = rng.uniform((400, 200), (600, 450), (468, 2)).astype(np.float32)
    pts[EYE_ENDS[0]], pts[EYE_ENDS[1]] = (450, 300), (550, 350)  # a line falling 26.6 degrees
    roi = roi_from_landmarks(pts)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    assert math.isclose(roi.angle, math.atan2(50, 100), rel_tol=1e-6)
    assert math.isclose(roi.size, 1.5 * max(x1 - x0, y1 - y0), rel_tol=1e-6)
    assert (roi.cx, roi.cy) == pytest.approx(((x0 + x1) / 2, (y0 + y1) / 2))


def test_overlap_is_one_for_the_same_square_and_zero_for_squares_apart() -> None:
    a = Roi(100.0, 100.0, 50.0, 0.0)
    assert overlap(a, a) == pytest.approx(1.0)
    assert overlap(a, Roi(200.0, 100.0, 50.0, 0.3)) == 0.0
    assert overlap(a, Roi(125.0, 100.0, 50.0, 0.0)) == pytest.approx(1 / 3)


# ---- the model, run directly -----------------------------------------------------------------------

@pytest.mark.parametrize("runtime", [*RUNTIMES, "auto"])
def test_a_broken_model_file_is_a_face_model_error_naming_it(runtime: str, tmp_path: Path) -> None:
    missing = tmp_path / "face_landmark.tflite"
    missing.write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match=r"face_landmark\.tflite"):
        LandmarkModel(missing, runtime=runtime)


def test_both_runtimes_give_the_same_landmarks_and_scores() -> None:
    frame = np.ascontiguousarray(fk.face_clip(n=1)[0])
    roi = roi_from_landmarks(GraphFaceMesh().detect(frame)[0])
    crop = cv2.warpAffine(frame, crop_matrix(roi, INPUT), (INPUT, INPUT),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    (a, sa), (b, sb) = (LandmarkModel(runtime=r).run(crop) for r in RUNTIMES)
    assert np.abs(a - b).max() < 0.05 and sa > 0.9 and sb > 0.9
    # a crop without a face scores low
    coffee = cv2.resize(fk.no_face_frame(), (INPUT, INPUT))
    assert all(LandmarkModel(runtime=r).run(coffee)[1] < 0.5 for r in RUNTIMES)


# ---- FaceMesh on real faces ------------------------------------------------------------------------

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_face_mesh_follows_the_moving_face_as_mediapipes_graph_does(runtime: str) -> None:
    """On the moving test clip (noise, H.264) every frame's landmarks are within a fraction of a pixel of
    those of MediaPipe's own graph in tracking mode, and the detector ran once: the face was followed."""
    frames = [np.ascontiguousarray(f) for f in fk.face_clip(n=60)]
    graph, mesh = GraphFaceMesh(), FaceMesh(runtime=runtime)
    try:
        ours = [mesh.detect(f) for f in frames]
        theirs = [graph.detect(f) for f in frames]
    finally:
        graph.close()
        mesh.close()
    assert mesh.runtime == runtime
    assert [len(x) for x in ours] == [len(x) for x in theirs] == [1] * len(frames)
    worst = [float(np.abs(a[0] - b[0]).max()) for a, b in zip(ours, theirs, strict=True)]
    mean = [float(np.abs(a[0] - b[0]).mean()) for a, b in zip(ours, theirs, strict=True)]
    assert max(mean) < 0.25 and max(worst) < 1.5, (max(mean), max(worst))
    assert mesh.detections == 1


def test_a_lost_face_is_dropped_and_found_again_by_the_detector() -> None:
    frames = [np.ascontiguousarray(f) for f in fk.lost_face_clip(n=60, gone=(20, 40))]
    mesh = FaceMesh()
    try:
        found = [len(mesh.detect(f)) for f in frames]
    finally:
        mesh.close()
    assert found[:20] == [1] * 20 and found[20:40] == [0] * 20
    assert found[40:] == [1] * 20  # the detector runs on every frame without a face and finds it at once
    # the start, then every frame from the one after the face went (on that one the model, looking where
    # the face was, said there was none) to the one it came back on
    assert mesh.detections == 1 + 19 + 1


@pytest.mark.parametrize("max_faces", [1, 2, 4])
def test_max_faces_limits_the_faces_followed(max_faces: int) -> None:
    frame = np.ascontiguousarray(fk.two_faces_frame())
    mesh = FaceMesh(max_faces=max_faces)
    try:
        faces = [mesh.detect(frame) for _ in range(5)]
    finally:
        mesh.close()
    assert [len(f) for f in faces] == [min(2, max_faces)] * 5
    if max_faces >= 2:  # one face on each half, never one face twice
        xs = sorted(float(f[:, 0].mean()) for f in faces[-1])
        assert xs[0] < 640 < xs[1]
    # with room for more faces than the frame holds the detector keeps looking, as MediaPipe's does
    assert mesh.detections == (1 if max_faces <= 2 else 5)


def test_a_face_cut_by_the_frame_edge_is_followed() -> None:
    frame = np.ascontiguousarray(fk.edge_face_frame())
    mesh = FaceMesh()
    try:
        faces = [mesh.detect(frame) for _ in range(3)]
    finally:
        mesh.close()
    assert [len(f) for f in faces] == [1, 1, 1]
    assert faces[-1][0][:, 0].min() < 0  # the part of the face outside the frame is there, off the frame


def test_an_unknown_runtime_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown runtime 'tflite'"):
        LandmarkModel(runtime="tflite")
