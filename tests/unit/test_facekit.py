"""The face test kit (tests/facekit.py) tells the truth: its material contains the faces it claims (found by
FaceMesh at every size it offers, absent where it says there is none), and its measures move by what a known
transform predicts, stay put under re-measurement and H.264, and score blur, edges and colour in the units
they name.  Run with `-s` to see the numbers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests import facekit as fk

# name: (size, frames).  1080p uses fewer frames only to keep encoding time down.
CLIP_SIZES = {"360p": ((640, 360), 90), "720p": ((1280, 720), 90), "1080p": ((1920, 1080), 30)}


@pytest.mark.parametrize("name", list(CLIP_SIZES))
def test_face_clip_is_found_by_facemesh_tracking(name: str) -> None:
    size, n = CLIP_SIZES[name]
    frames = fk.face_clip(n, size)
    assert len(frames) == n
    assert all(f.shape == (size[1], size[0], 3) and f.dtype == np.uint8 for f in frames)
    counts = fk.count_faces(frames)
    rate = sum(c == 1 for c in counts) / n
    height = fk.measure(frames[0]).face_height
    print(f"\n{name}: face found in {rate:.1%} of {n} tracked frames, face height {height:.0f} px")
    assert rate >= 0.9


def test_face_clip_moves_as_posed_and_stays_inside() -> None:
    """The measured face follows `clip_poses`: its centre within 3% of the face height of the posed centre,
    its height within 5% of 0.46 x frame height x scale, all 478 landmarks inside the frame."""
    size = (1280, 720)
    frames, poses = fk.face_clip(90, size), fk.clip_poses(90, size)
    centres = []
    for i in range(0, 90, 15):
        m = fk.measure(frames[i])
        assert m is not None
        expected_h = fk.FACE_FRACTION * size[1] * poses[i].scale
        err = np.hypot(*np.subtract(fk.face_center(m.landmarks), poses[i].center))
        assert err < 0.03 * expected_h, (i, err)
        assert abs(m.face_height / expected_h - 1) < 0.05, (i, m.face_height, expected_h)
        assert (m.landmarks >= 0).all() and (m.landmarks[:, 0] < size[0]).all() and (m.landmarks[:, 1] < size[1]).all()
        centres.append(poses[i].center)
    spread = np.ptp(np.array(centres), axis=0)
    assert spread[0] > 60 and spread[1] > 20, spread  # it really moves


def test_material_is_deterministic_seeded_and_read_only() -> None:
    size = (640, 360)
    raw = [fk.place_face(size, p.scale, p.center, p.angle) for p in fk.clip_poses(5, size, seed=3)]
    a = fk.h264_roundtrip(fk.add_camera_noise(raw, seed=3))
    b = fk.h264_roundtrip(fk.add_camera_noise(raw, seed=3))
    c = fk.add_camera_noise(raw, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(fk.add_camera_noise(raw, seed=3)[0], c[0])
    noisy = fk.still_clip(3, noise=True)
    assert not np.array_equal(noisy[0], noisy[1])  # each frame gets its own noise
    d = noisy[0].astype(np.float32) - fk.place_face()
    assert 2.0 < d.std() < 4.0  # sigma 2.5 plus up to 2% exposure flicker
    assert not fk.face_clip(90)[0].flags.writeable


def test_no_face_two_faces_and_face_cut_by_the_edge() -> None:
    assert fk.landmarks(fk.no_face_frame(), max_faces=2) == []
    assert fk.measure(fk.no_face_frame()) is None
    two = fk.landmarks(fk.two_faces_frame(), max_faces=2)
    assert len(two) == 2
    assert sorted(f[:, 0].mean() < 640 for f in two) == [False, True]  # one in each half
    edge = fk.edge_face_frame()
    found = fk.landmarks(edge, max_faces=2)
    assert len(found) == 1
    cut = -found[0][:, 0].min() / np.ptp(found[0][:, 0])
    print(f"\nedge face: {cut:.0%} of its width is left of the frame")
    assert cut > 0.1  # the face really is cut by the left edge
    assert fk.face_box(found[0], edge.shape)[0] == 0


def test_lost_face_clip_loses_and_regains_the_face() -> None:
    gone = (20, 40)
    counts = fk.count_faces(fk.lost_face_clip(60, gone))
    present = counts[: gone[0]] + counts[gone[1]:]
    print(f"\nlost-face clip: found {sum(present)}/{len(present)} face frames, "
          f"{sum(counts[gone[0]:gone[1]])}/{gone[1] - gone[0]} no-face frames; per frame {counts}")
    assert counts[gone[0]:gone[1]] == [0] * (gone[1] - gone[0])
    assert sum(present) >= 0.9 * len(present)
    assert all(c == 1 for c in counts[gone[1] + 2:])  # regained within 2 frames


POSES = [fk.Pose((640, 360), 1.0, 0.0), fk.Pose((560, 380), 1.05, 4.0), fk.Pose((720, 340), 0.95, -4.0)]


@pytest.mark.parametrize("pose", POSES, ids=["centred", "left-tilted", "right-tilted"])
def test_scaling_by_1_1_gives_known_changes(pose: fk.Pose) -> None:
    frame = fk.place_face((1280, 720), pose.scale, pose.center, pose.angle)
    before = fk.measure(frame, samples=9)  # eye area jitters ±3% per detection: average all 9 jittered detections
    after = fk.measure(fk.scale_about(frame, 1.10, fk.face_center(before.landmarks)), samples=9)
    change = after.change(before)
    ratio = (after.jaw_width / after.eye_distance) / (before.jaw_width / before.eye_distance) - 1
    print("\nx1.10:", {k: f"{v:+.1%}" for k, v in change.items()}, f"jaw/eyes ratio {ratio:+.2%}")
    assert abs(change["eye_area"] - 0.21) <= 0.04
    assert abs(change["jaw_width"] - 0.10) <= 0.02
    assert abs(change["eye_distance"] - 0.10) <= 0.02
    assert abs(ratio) <= 0.02


def test_remeasuring_the_same_frame_gives_identical_numbers() -> None:
    frame = fk.face_clip(90)[10]
    a, b = fk.measure(frame), fk.measure(frame)
    assert a.values() == b.values() and np.array_equal(a.landmarks, b.landmarks)
    assert fk.measure(frame, samples=5).values() == fk.measure(frame, samples=5).values()


@pytest.mark.parametrize("pose", POSES, ids=["centred", "left-tilted", "right-tilted"])
def test_h264_round_trip_moves_measures_less_than_2_percent(pose: fk.Pose) -> None:
    frame = fk.place_face((1280, 720), pose.scale, pose.center, pose.angle)
    coded = fk.h264_roundtrip([frame], crf=30)[0]
    change = fk.measure(coded, samples=5).change(fk.measure(frame, samples=5))
    print("\nh264 crf 30:", {k: f"{v:+.2%}" for k, v in change.items()})
    assert max(abs(v) for v in change.values()) < 0.02


def test_measure_noise_on_a_still_noisy_compressed_face() -> None:
    """A camera pointed at a still face: per-frame sensor noise then H.264; one detection per frame."""
    values = [fk.measure(f).values() for f in fk.still_clip(20, noise=True, h264=True)]
    cv = {k: np.std([v[k] for v in values]) / np.mean([v[k] for v in values]) for k in fk.FaceMeasure.NAMES}
    print("\nframe-to-frame noise (std/mean):", {k: f"{v:.2%}" for k, v in cv.items()})
    assert cv["eye_area"] < 0.03
    assert max(v for k, v in cv.items() if k != "eye_area") < 0.015


@pytest.fixture(scope="module")
def webcam_face() -> tuple[np.ndarray, np.ndarray]:
    frame = fk.still_clip(1, noise=True, h264=True)[0]
    return frame, fk.measure(frame).landmarks


def _blur_inside(rgb: np.ndarray, mask: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    return np.where(mask[..., None] > 0, cv2.GaussianBlur(rgb, (0, 0), sigma), rgb)


def test_blurring_skin_lowers_hf_energy_and_leaves_eye_lip_edges(webcam_face: tuple[np.ndarray, np.ndarray]) -> None:
    frame, lms = webcam_face
    skin, band = fk.skin_mask(lms, frame.shape), fk.eye_lip_edge_mask(lms, frame.shape)
    assert not (skin & band).any()
    smoothed = _blur_inside(frame, skin)
    hf0, hf1 = fk.hf_energy(frame, skin), fk.hf_energy(smoothed, skin)
    e0, e1 = fk.edge_energy(frame, band), fk.edge_energy(smoothed, band)
    print(f"\nskin blur: hf_energy {hf0:.2f} -> {hf1:.2f} ({hf1 / hf0:.0%}); band edge_energy {e0:.0f} -> {e1:.0f}")
    assert hf1 <= 0.5 * hf0
    assert e1 == e0
    blurred_band = _blur_inside(frame, band)  # the edge score is not blind: blurring the band lowers it
    assert fk.edge_energy(blurred_band, band) < 0.5 * e0


def test_hf_energy_sees_sensor_noise_on_skin() -> None:
    """hf_energy is not blind to texture: sensor noise (sigma 2.5) roughly doubles it on the clean skin."""
    clean = fk.place_face()
    skin = fk.skin_mask(fk.measure(clean).landmarks, clean.shape)
    noisy = fk.still_clip(1, noise=True)[0]
    hf_clean, hf_noisy = fk.hf_energy(clean, skin), fk.hf_energy(noisy, skin)
    print(f"\nskin hf_energy clean {hf_clean:.2f}, with sensor noise {hf_noisy:.2f}")
    assert hf_noisy > 1.5 * hf_clean


def test_brightening_skin_by_10_raises_l_star_by_3_to_4(webcam_face: tuple[np.ndarray, np.ndarray]) -> None:
    frame, lms = webcam_face
    skin = fk.skin_mask(lms, frame.shape)
    brighter = frame.astype(np.int16)
    brighter[skin > 0] += 10
    brighter = np.clip(brighter, 0, 255).astype(np.uint8)
    before, after = fk.mean_lab(frame, skin), fk.mean_lab(brighter, skin)
    print(f"\nskin Lab {np.round(before, 1)} -> {np.round(after, 1)}")
    assert 3.0 <= after[0] - before[0] <= 4.0


@pytest.mark.parametrize(("rgb", "lab"), [((255, 255, 255), (100, 0, 0)), ((119, 119, 119), (50.0, 0, 0)),
                                          ((255, 0, 0), (53.24, 80.09, 67.20))])
def test_mean_lab_is_real_cielab(rgb: tuple[int, int, int], lab: tuple[float, float, float]) -> None:
    img = np.full((8, 8, 3), rgb, np.uint8)
    assert np.allclose(fk.mean_lab(img, np.full((8, 8), 255, np.uint8)), lab, atol=0.6)


def test_region_masks_sit_where_they_should(webcam_face: tuple[np.ndarray, np.ndarray]) -> None:
    frame, lms = webcam_face
    shape = frame.shape
    skin = fk.skin_mask(lms, shape)
    oval = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(oval, [np.round(lms[fk.FACE_OVAL]).astype(np.int32)], 255)
    share = (skin > 0).sum() / (oval > 0).sum()
    assert skin.shape == shape[:2] and skin.dtype == np.uint8
    assert 0.4 < share < 0.75, share
    assert not (skin & ~oval).any()
    for ring in (fk.LEFT_EYE, fk.RIGHT_EYE, fk.LIPS_OUTER):  # features are out of the skin, in the band
        pts = np.round(lms[ring]).astype(int)
        assert not skin[pts[:, 1], pts[:, 0]].any()
        assert fk.eye_lip_edge_mask(lms, shape)[pts[:, 1], pts[:, 0]].all()
    right, left = fk.cheek_masks(lms, shape)
    assert right.any() and left.any() and not ((right | left) & ~skin).any()
    nose_x = lms[fk.NOSE_TIP, 0]
    assert np.nonzero(right)[1].mean() < nose_x < np.nonzero(left)[1].mean()
    x0, y0, x1, y1 = fk.face_box(lms, shape, margin=0.1)
    assert x0 < lms[:, 0].min() and lms[:, 0].max() < x1 and y0 < lms[:, 1].min() and lms[:, 1].max() < y1


def test_mean_abs_diff_outside_counts_only_outside_the_box() -> None:
    a = fk.place_face((320, 180))
    b = a.copy()
    b[50:100, 100:200] = 255 - b[50:100, 100:200]
    assert fk.mean_abs_diff_outside(a, b, (100, 50, 200, 100)) == 0.0
    c = a.astype(np.int16)
    c[0:10, 0:10] += 9
    outside = 320 * 180 - 50 * 100
    got = fk.mean_abs_diff_outside(a, np.clip(c, 0, 255).astype(np.uint8), (100, 50, 200, 100))
    assert got == pytest.approx(9 * 10 * 10 / outside, rel=0.05)  # a few pixels saturate at 255
