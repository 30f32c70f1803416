"""beauty, effect by effect, measured on a real moving face (tests/facekit.py: the astronaut portrait moved,
scaled and turned per frame, with sensor noise and a real H.264 round trip).

Each effect runs alone at strength 60 through the actor (its own landmark tracking, as in a push) and is
compared with strength 0 of the same frames; landmarks are re-detected on the output with iris refinement
(`facekit.measure`, the mean of 5 slightly warped detections) and averaged over several frames.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

pytest.importorskip("mediapipe", reason="the beauty extra needs mediapipe 0.10.21 (Python 3.9-3.12)")

from mediaengine.actors.beauty import Beauty
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.testing import ActorHarness

from tests import facekit as fk

FRAMES = 30
MEASURED = (8, 12, 16, 20, 24, 29)  # after the tracker settled; spread over the motion
STRENGTH = 60
CHIN_PAIRS = ((149, 378), (176, 400))  # across the chin, above its tip


@functools.cache
def clip() -> tuple[np.ndarray, ...]:
    return tuple(fk.face_clip(n=FRAMES, size=(1280, 720)))


@functools.cache
def beautified(effect: str) -> tuple[np.ndarray, ...]:
    frames = clip()
    harness = ActorHarness(Beauty, {"level": 0, effect: STRENGTH}, input_formats={"in": VideoFormat(1280, 720, 30)})
    try:
        for i, f in enumerate(frames):
            harness.frame("in", Frame(np.array(f), pts_ns=i * 33_333_333, seq=i))
    finally:
        harness.stop()
    outs = tuple(np.array(m.data) for m in harness.emitted("out"))
    assert len(outs) == FRAMES
    return outs


@functools.cache
def measure_before(i: int) -> fk.FaceMeasure:
    m = fk.measure(clip()[i], samples=5)
    assert m is not None
    return m


def mean_change(effect: str) -> dict[str, float]:
    """The mean relative change of each measure over the measured frames (0.10 = +10%)."""
    changes = []
    for i in MEASURED:
        after = fk.measure(beautified(effect)[i], samples=5)
        assert after is not None, f"frame {i}: no face found after {effect}"
        change = after.change(measure_before(i))
        before_chin = np.mean([np.hypot(*(measure_before(i).landmarks[a] - measure_before(i).landmarks[b]))
                               for a, b in CHIN_PAIRS])
        after_chin = np.mean([np.hypot(*(after.landmarks[a] - after.landmarks[b])) for a, b in CHIN_PAIRS])
        change["chin_width"] = after_chin / before_chin - 1.0
        changes.append(change)
    result = {k: float(np.mean([c[k] for c in changes])) for k in changes[0]}
    print(effect, {k: f"{100 * v:+.1f}%" for k, v in result.items()})
    return result


def assert_controls_kept(change: dict[str, float]) -> None:
    """Between the eyes and nose to mouth: within 2%."""
    assert abs(change["eye_distance"]) <= 0.02, change
    assert abs(change["nose_mouth"]) <= 0.02, change


def test_eye_enlarging_grows_the_eye_opening_by_15_percent_or_more() -> None:
    change = mean_change("eye")
    assert change["eye_area"] >= 0.15
    assert_controls_kept(change)


def test_face_thinning_narrows_the_jaw_by_5_percent_or_more() -> None:
    change = mean_change("thin")
    assert change["jaw_width"] <= -0.05
    assert_controls_kept(change)


def test_chin_shortening_shortens_the_chin() -> None:
    change = mean_change("chin_short")
    assert change["chin_length"] <= -0.03
    assert abs(change["jaw_width"]) <= 0.02
    assert_controls_kept(change)


def test_chin_slimming_narrows_the_chin() -> None:
    change = mean_change("chin_slim")
    assert change["chin_width"] <= -0.03
    assert_controls_kept(change)


def regions(i: int) -> dict[str, np.ndarray]:
    lms = fk.landmarks(clip()[i])[0]
    shape = clip()[i].shape
    left, right = fk.cheek_masks(lms, shape)
    skin = fk.skin_mask(lms, shape)
    return {"skin": skin, "edges": fk.eye_lip_edge_mask(lms, shape), "cheeks": left | right,
            "skin_not_cheeks": skin & ~(left | right)}


def test_smoothing_removes_skin_texture_and_keeps_eye_and_lip_edges() -> None:
    for i in MEASURED:
        before, after, r = clip()[i], beautified("smooth")[i], regions(i)
        hf = fk.hf_energy(after, r["skin"]) / fk.hf_energy(before, r["skin"])
        edges = fk.edge_energy(after, r["edges"]) / fk.edge_energy(before, r["edges"])
        print(f"frame {i}: skin high-frequency energy x{hf:.2f}, eye/lip edge energy x{edges:.3f}")
        assert hf <= 0.70 and edges >= 0.90


def test_whitening_raises_skin_lightness_and_leaves_the_background() -> None:
    for i in MEASURED:
        before, after, r = clip()[i], beautified("whiten")[i], regions(i)
        lift = fk.mean_lab(after, r["skin"])[0] - fk.mean_lab(before, r["skin"])[0]
        box = fk.face_box(fk.landmarks(before)[0], before.shape)
        background = fk.mean_abs_diff_outside(after, before, box)
        print(f"frame {i}: skin L* {lift:+.2f}, background mean difference {background:.3f}")
        assert lift >= 3.0 and background <= 1.0


def test_blush_reddens_the_cheeks_only() -> None:
    for i in MEASURED:
        before, after, r = clip()[i], beautified("blush")[i], regions(i)
        cheeks = fk.mean_lab(after, r["cheeks"])[1] - fk.mean_lab(before, r["cheeks"])[1]
        elsewhere = fk.mean_lab(after, r["skin_not_cheeks"])[1] - fk.mean_lab(before, r["skin_not_cheeks"])[1]
        print(f"frame {i}: a* on the cheeks {cheeks:+.2f}, on the rest of the skin {elsewhere:+.2f}")
        assert cheeks >= 1.5 and abs(elsewhere) <= 0.3


def test_brightness_and_rosy_tone_act_on_the_skin() -> None:
    for i in MEASURED[:3]:
        before, r = clip()[i], regions(i)
        bright = fk.mean_lab(beautified("bright")[i], r["skin"])[0] - fk.mean_lab(before, r["skin"])[0]
        rosy = fk.mean_lab(beautified("rosy")[i], r["skin"])[1] - fk.mean_lab(before, r["skin"])[1]
        print(f"frame {i}: brightness L* {bright:+.2f}, rosy a* {rosy:+.2f}")
        assert bright >= 2.0 and rosy >= 2.0


@pytest.mark.parametrize("size", [(640, 360), (1920, 1080)])
def test_the_same_face_at_360p_and_1080p(size: tuple[int, int]) -> None:
    """Eye enlarging and thinning scale with the frame: the same face at 360p (just above the detector's
    smallest face) and at 1080p, both effects at 60, measured like the 720p clip."""
    frames = fk.face_clip(n=12, size=size)
    harness = ActorHarness(Beauty, {"level": 0, "eye": STRENGTH, "thin": STRENGTH},
                           input_formats={"in": VideoFormat(*size, 30)})
    try:
        for i, f in enumerate(frames):
            harness.frame("in", Frame(np.array(f), pts_ns=i * 33_333_333, seq=i))
    finally:
        harness.stop()
    outs = [np.array(m.data) for m in harness.emitted("out")]
    changes = []
    for i in (6, 11):
        before, after = fk.measure(frames[i], samples=5), fk.measure(outs[i], samples=5)
        assert before is not None and after is not None
        changes.append(after.change(before))
    eye = float(np.mean([c["eye_area"] for c in changes]))
    jaw = float(np.mean([c["jaw_width"] for c in changes]))
    print(f"{size[0]}x{size[1]}: eye area {100 * eye:+.1f}%, jaw width {100 * jaw:+.1f}%")
    assert eye >= 0.15 and jaw <= -0.05
