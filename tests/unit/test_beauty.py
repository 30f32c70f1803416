"""beauty: the pure functions (presets, tone curves, masks, the reshaping map) and the actor through
ActorHarness on a real face (tests/facekit.py): pass-through at strength 0, nothing outside the face's
box touched, no fold in the warp, no shimmer on a still face, no face / a lost face / two faces / a face
cut by the frame's edge, live changes from the next frame, and 1345 without mediapipe."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="the beauty extra needs mediapipe 0.10.21 (Python 3.9-3.12)")

from mediaengine.actors.beauty import Beauty, BeautyOptions, strengths
from mediaengine.actors.beauty.effects import tone_lut
from mediaengine.actors.beauty.landmarks import FaceMesh, mediapipe_face_mesh, mesh_points
from mediaengine.actors.beauty.pipeline import EFFECTS, Face, beautify, load_presets
from mediaengine.actors.beauty.regions import face_box
from mediaengine.actors.beauty.warp import WarpAmounts, warp_maps
from mediaengine.sdk.errors import FaceModelError, OptionError
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.testing import ActorHarness

from tests import facekit as fk

ALL = dict.fromkeys(EFFECTS, 100)


def mesh_landmarks(rgb: np.ndarray, max_faces: int = 1) -> list[np.ndarray]:
    mesh = FaceMesh(max_faces=max_faces)
    try:
        return mesh.detect(np.ascontiguousarray(rgb))
    finally:
        mesh.close()


def run_actor(frames: list[np.ndarray], **options: object) -> tuple[list[np.ndarray], ActorHarness]:
    h, w = frames[0].shape[:2]
    harness = ActorHarness(Beauty, dict(options), input_formats={"in": VideoFormat(w, h, 30)})
    try:
        for i, f in enumerate(frames):
            harness.frame("in", Frame(np.array(f), pts_ns=i * 33_333_333, seq=i))
    finally:
        harness.stop()
    return [np.array(m.data) for m in harness.emitted("out")], harness


# ---- landmarks ---------------------------------------------------------------------------------

def test_mesh_points_read_from_the_bytes_equal_the_protobuf_loop() -> None:
    """The fast reader of the mesh's landmarks gives exactly what a loop over the messages gives, with
    and without the iris points; another layout (a landmark with more fields) takes the loop."""
    from mediapipe.framework.formats import landmark_pb2

    frame = np.ascontiguousarray(fk.face_clip(n=1, size=(1280, 720))[0])
    for refine in (False, True):
        mesh = mediapipe_face_mesh().FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=refine)
        try:
            face = mesh.process(frame).multi_face_landmarks[0]
        finally:
            mesh.close()
        loop = np.array([(p.x, p.y) for p in face.landmark[:468]], np.float32)
        assert len(face.landmark) == (478 if refine else 468)
        assert np.array_equal(mesh_points(face), loop)
    other = landmark_pb2.NormalizedLandmarkList()
    other.CopyFrom(face)
    other.landmark[3].visibility = 0.5  # 5 more bytes in that landmark: the fixed layout does not hold
    assert np.array_equal(mesh_points(other), loop)


# ---- presets and strengths ---------------------------------------------------------------------

def test_the_presets_table_has_levels_0_to_5_and_level_0_is_off() -> None:
    table = load_presets()
    assert sorted(table) == [0, 1, 2, 3, 4, 5]
    assert all(v == 0 for v in table[0].values())
    for level in range(1, 6):  # each level is at least as strong as the one below it, effect by effect
        assert all(table[level][e] >= table[level - 1][e] for e in EFFECTS)


@pytest.mark.parametrize(("text", "flaw"), [
    ("1: {smooth: 20, sparkle: 3}\n", "unknown effect 'sparkle'"),
    ("1: {smooth: 120}\n", "not a strength 0..100"),
    ("one: {smooth: 10}\n", "not a whole number"),
    ("- 1\n", "expected a mapping"),
])
def test_a_broken_presets_table_names_its_flaw(tmp_path: Path, text: str, flaw: str) -> None:
    path = tmp_path / "presets.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=flaw):
        load_presets(path)


def test_effects_given_on_their_own_override_the_level() -> None:
    table = load_presets()
    assert strengths(BeautyOptions(level=4)) == table[4]
    mixed = strengths(BeautyOptions(level=4, eye=0, smooth=90))
    assert mixed == {**table[4], "eye": 0, "smooth": 90}


def test_a_level_missing_from_the_table_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="range"):
        ActorHarness(Beauty, {"level": 9}, input_formats={"in": VideoFormat(64, 64, 30)})


def test_tone_curves_keep_black_and_white_and_lift_the_middle() -> None:
    assert tone_lut(0, 0, 0) is None
    for whiten, bright in ((0.6, 0), (0, 0.6), (1, 1)):
        lut = tone_lut(whiten, bright, 0)
        assert lut is not None and lut.shape == (256,)
        assert lut[0] == 0 and lut[255] == 255 and (np.diff(lut.astype(int)) >= 0).all()
        assert lut[128] > 140
    rosy = tone_lut(0, 0, 0.6)
    assert rosy is not None and rosy.shape == (256, 1, 3)
    r, g = rosy[128, 0, 0], rosy[128, 0, 1]
    assert r > 128 > g  # redder, less green


# ---- frames: pass-through, reach, folds ---------------------------------------------------------

def test_strength_zero_everywhere_is_a_bit_exact_copy() -> None:
    frame = fk.place_face()
    (lms,) = mesh_landmarks(frame)
    out = np.empty_like(frame)
    beautify(frame, out, [Face(lms)], dict.fromkeys(EFFECTS, 0))
    assert np.array_equal(out, frame)
    outs, _ = run_actor([frame] * 3, level=0)
    assert all(np.array_equal(o, frame) for o in outs)


def test_no_pixel_outside_the_face_box_changes_and_inside_it_does() -> None:
    frame = fk.place_face()
    (lms,) = mesh_landmarks(frame)
    out = np.empty_like(frame)
    (result,) = beautify(frame, out, [Face(lms)], ALL)
    x, y, w, h = result.box
    assert result.box == face_box(lms, frame.shape)
    outside = np.ones(frame.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert np.array_equal(out[outside], frame[outside])
    assert (out[~outside] != frame[~outside]).any(axis=-1).mean() > 0.3


@pytest.mark.parametrize("scale", [0.7, 1.0, 1.5])
def test_the_reshaping_map_never_folds(scale: float) -> None:
    """The Jacobian of the full-resolution map (every pixel) stays positive at full strength of every
    reshaping effect at once, for small, medium and frame-filling faces."""
    frame = fk.place_face(scale=scale)
    faces = mesh_landmarks(frame)
    assert faces, f"no face found at scale {scale}"
    lms = faces[0]
    box = face_box(lms, frame.shape)
    maps = warp_maps(lms, box, frame.shape, WarpAmounts(thin=1, chin_slim=1, chin_short=1, eye=1))
    assert maps is not None and maps.max_shift > 3
    xy = maps.full(box[2], box[3])
    gx_x, gy_x = np.gradient(xy[..., 0], axis=(1, 0))
    gx_y, gy_y = np.gradient(xy[..., 1], axis=(1, 0))
    det = gx_x * gy_y - gy_x * gx_y
    assert det.min() > 0.2, f"the map folds: Jacobian determinant {det.min():.3f}"
    # and at the box's sides inside the frame it is the identity, so the box joins the frame seamlessly
    ident = np.stack(np.meshgrid(np.arange(box[2]), np.arange(box[3])), axis=-1).astype(np.float32)
    for side in (xy[0] - ident[0], xy[-1] - ident[-1], xy[:, 0] - ident[:, 0], xy[:, -1] - ident[:, -1]):
        assert np.abs(side).max() < 0.05


def test_a_grid_drawn_through_the_warp_keeps_its_lines_in_order() -> None:
    """A grid image through the strongest warp: every grid line stays one unbroken line, and the lines
    keep their order (no crossing, no tear)."""
    frame = fk.place_face()
    (lms,) = mesh_landmarks(frame)
    grid = np.full_like(frame, 255)
    for k in range(3):  # lines 3 px thick, so interpolation cannot thin one out of sight
        grid[k::12] = 0
    out = np.empty_like(grid)
    beautify(grid, out, [Face(lms)], {"thin": 100, "chin_slim": 100, "chin_short": 100, "eye": 100})
    x, y, w, h = face_box(lms, frame.shape)
    for col in range(x, x + w, 7):
        dark = np.flatnonzero(out[y:y + h, col, 0] < 160)
        runs = np.split(dark, np.flatnonzero(np.diff(dark) > 1) + 1)
        expected = len(range((-y) % 12, h, 12))
        assert abs(len(runs) - expected) <= 1, f"column {col}: {len(runs)} lines, expected {expected}"


# ---- the actor on real material ------------------------------------------------------------------

def test_a_still_face_does_not_shimmer() -> None:
    """The same frame 60 times at the strongest level: after the first few frames no output pixel moves
    by more than 1 level from one frame to the next."""
    frames = fk.still_clip(n=60)
    outs, harness = run_actor(list(frames), level=5)
    steps = [int(np.abs(outs[i].astype(np.int16) - outs[i - 1]).max()) for i in range(5, len(outs))]
    assert max(steps) <= 1, f"largest frame-to-frame change after frame 5: {max(steps)}"
    assert not np.array_equal(outs[-1], frames[-1])
    metrics = harness.metrics()
    assert metrics["frames_with_face"] == 60
    # the landmark model ran in the actor's thread through LiteRT, and the face was followed, not searched
    # for on every frame
    assert metrics["landmark_runtime"] == "litert" and metrics["face_detections"] == 1


def test_frames_without_a_face_pass_through_unchanged() -> None:
    frame = fk.no_face_frame()
    outs, harness = run_actor([frame] * 10, level=5)
    assert len(outs) == 10 and all(np.array_equal(o, frame) for o in outs)
    assert harness.metrics()["frames_with_face"] == 0 and not harness.events("beauty_faces")


def test_a_face_lost_mid_stream_is_held_then_faded_then_gone_and_found_again() -> None:
    frames = list(fk.lost_face_clip(n=60, gone=(20, 40)))
    outs, harness = run_actor(frames, level=5, hold_frames=3, fade_frames=5)
    assert len(outs) == 60  # no frame dropped
    changed = [not np.array_equal(o, f) for o, f in zip(outs, frames, strict=True)]
    assert all(changed[:20]) and all(changed[40 + 3:])  # the face (found again within a few frames)
    assert all(changed[20:23])  # held: the detector's miss does not switch the effects off at once
    assert not any(changed[29:40])  # gone after hold + fade: the picture passes through unchanged
    events = [e.data["faces"] for e in harness.events("beauty_faces")]
    assert events[:3] == [1, 0, 1]


def test_two_faces_are_both_beautified_when_max_faces_allows() -> None:
    frame = fk.two_faces_frame()
    faces = fk.landmarks(frame, max_faces=2)
    assert len(faces) == 2
    boxes = [face_box(f[:468].astype(np.float32), frame.shape) for f in faces]

    def touched(out: np.ndarray) -> list[bool]:
        return [not np.array_equal(out[y:y + h, x:x + w], frame[y:y + h, x:x + w]) for x, y, w, h in boxes]

    outs, _ = run_actor([frame] * 3, level=4, max_faces=2)
    assert touched(outs[-1]) == [True, True]
    outs, _ = run_actor([frame] * 3, level=4, max_faces=1)
    assert sorted(touched(outs[-1])) == [False, True]


def test_a_face_cut_by_the_frame_edge_is_beautified_without_error() -> None:
    frame = fk.edge_face_frame()
    (lms,) = mesh_landmarks(frame)
    assert lms[:, 0].min() < 0  # the face really leaves the frame
    outs, _ = run_actor([frame] * 3, level=5)
    x, y, w, h = face_box(lms, frame.shape)
    assert x == 0 and not np.array_equal(outs[-1], frame)
    outside = np.ones(frame.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert np.array_equal(outs[-1][outside], frame[outside])


@pytest.mark.parametrize("size", [(320, 180), (640, 360), (1920, 1080), (333, 251)])
def test_any_frame_size_runs(size: tuple[int, int]) -> None:
    frame = fk.place_face(size=size)
    outs, _ = run_actor([frame] * 2, level=5)
    assert len(outs) == 2 and outs[-1].shape == frame.shape


def test_live_changes_apply_from_the_next_frame_and_off_is_a_clean_pass_through() -> None:
    frame = fk.place_face()
    harness = ActorHarness(Beauty, {"level": 0}, input_formats={"in": VideoFormat(1280, 720, 30)})
    try:
        def push(i: int) -> np.ndarray:
            harness.frame("in", Frame(frame, pts_ns=i * 33_333_333, seq=i))
            return np.array(harness.emitted("out")[-1].data)

        assert np.array_equal(push(0), frame)
        harness.set(eye=60)
        eyes = push(1)
        assert not np.array_equal(eyes, frame)
        harness.set(enabled=False)
        assert np.array_equal(push(2), frame)
        harness.set(enabled=True)
        again = push(3)  # on again at once (landmarks found afresh, so within a fraction of a level)
        assert not np.array_equal(again, frame) and np.abs(again.astype(np.int16) - eyes).mean() < 0.5
        harness.set(eye=None)  # handed back to level 0
        assert np.array_equal(push(4), frame)
        status = harness.control("status")
        assert status["strengths"]["eye"] == 0 and status["faces"] == 0  # nothing to do: no face search
    finally:
        harness.stop()


def test_without_mediapipe_the_node_fails_with_1345(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions", None)
    monkeypatch.setitem(sys.modules, "mediapipe.python.solutions.face_mesh", None)
    with pytest.raises(FaceModelError, match=r"mediaengine\[beauty\]") as info:
        ActorHarness(Beauty, {}, input_formats={"in": VideoFormat(64, 64, 30)})
    assert info.value.code == 1345 and not info.value.restartable
