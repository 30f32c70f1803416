"""mediaengine.sdk.stamp: burn and read frame stamps, including through a real libx264 encode/decode."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
import pytest
from mediaengine.actors import test_pattern
from mediaengine.sdk import stamp
from numpy.typing import NDArray

WALL0 = 1_760_000_000_000  # a plausible wall-clock time in ms


def _frame(h: int, w: int, value: int = 90) -> NDArray[Any]:
    return np.full((h, w, 3), value, dtype=np.uint8)


@pytest.mark.parametrize(("counter", "wall_ms"), [
    (0, 0), (1, WALL0), (2**32 - 1, 2**48 - 1), (123_456_789, WALL0 + 999), (0x80000001, 0x800000000001)])
def test_burn_then_read_gives_back_the_values(counter: int, wall_ms: int) -> None:
    img = _frame(360, 640)
    stamp.burn(img, counter, wall_ms)
    assert stamp.read(img) == stamp.Stamp(counter, wall_ms)


def test_values_wrap_at_their_bit_width() -> None:
    img = _frame(360, 640)
    stamp.burn(img, 2**32 + 5, 2**48 + 7)
    assert stamp.read(img) == (5, 7)


@pytest.mark.parametrize(("h", "w", "size"), [
    (360, 640, (56, 128)), (720, 1280, (112, 256)), (180, 320, (28, 64)), (1280, 720, (112, 256))])
def test_stamp_size_is_the_documented_region_and_only_it_changes(h: int, w: int, size: tuple[int, int]) -> None:
    assert stamp.stamp_size(h, w) == size
    img = _frame(h, w)
    stamp.burn(img, 42, WALL0)
    changed = np.argwhere((img != 90).any(axis=2))
    assert changed[:, 0].max() < size[0] and changed[:, 1].max() < size[1]
    assert set(np.unique(img[: size[0], : size[1]])) == {0, 255}  # pure black and white cells
    assert stamp.read(img) == (42, WALL0)


def test_grey_frames_work_too() -> None:
    img = np.full((240, 426), 30, dtype=np.uint8)
    stamp.burn(img, 77, WALL0)
    assert stamp.read(img) == (77, WALL0)


def test_read_returns_none_without_a_valid_stamp() -> None:
    assert stamp.read(_frame(360, 640)) is None
    rng = np.random.default_rng(7)
    for _ in range(50):
        assert stamp.read(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)) is None
    assert stamp.read(_frame(20, 40)) is None  # smaller than any stamp


def test_a_damaged_cell_fails_the_checksum() -> None:
    img = _frame(360, 640)
    stamp.burn(img, 1000, WALL0)
    c = stamp.cell_size(360, 640)
    y, x = int(3.5 * c), int(5.5 * c)  # a data cell (row 3, column 5)
    img[int(y - c / 2): int(y + c / 2), int(x - c / 2): int(x + c / 2)] ^= 255
    assert stamp.read(img) is None


def test_burn_refuses_frames_too_small() -> None:
    with pytest.raises(ValueError, match="too small"):
        stamp.burn(_frame(20, 50), 1, 2)


@pytest.mark.parametrize(("w", "h"), [(640, 360), (960, 540), (854, 480), (320, 180)])
def test_a_stamp_survives_resizing_the_frame(w: int, h: int) -> None:
    img = _frame(720, 1280)
    stamp.burn(img, 31337, WALL0)
    small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    assert stamp.read(small) == (31337, WALL0)


def _x264_round_trip(frames: list[NDArray[Any]], kbps: int) -> tuple[list[NDArray[Any]], int]:
    h, w = frames[0].shape[:2]
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.framerate = Fraction(30, 1)
    enc.bit_rate = kbps * 1000
    enc.options = {"preset": "veryfast", "tune": "zerolatency"}
    packets = []
    for i, img in enumerate(frames):
        f = av.VideoFrame.from_ndarray(img, "rgb24").reformat(format="yuv420p")
        f.pts = i
        packets += enc.encode(f)
    packets += enc.encode(None)
    dec = av.CodecContext.create("h264", "r")
    decoded = []
    for p in packets:
        decoded += dec.decode(p)
    decoded += dec.decode(None)
    return [d.to_ndarray(format="rgb24") for d in decoded], sum(p.size for p in packets)


@pytest.mark.parametrize(("w", "h"), [(640, 360), (1280, 720), (320, 180)])
@pytest.mark.parametrize("pattern", ["bars", "noise"])
def test_counters_survive_libx264_at_300_kbps(w: int, h: int, pattern: test_pattern.Pattern) -> None:
    background = test_pattern.make_background(pattern, w, h)
    counters = [1_000_000 + 3 * i for i in range(30)]
    frames = []
    for i, k in enumerate(counters):
        out = np.empty((h, w, 3), dtype=np.uint8)
        frames.append(test_pattern.render_frame(out, background, k, 30.0, WALL0 + 33 * i, "x264", pattern))
    decoded, size = _x264_round_trip(frames, kbps=300)
    kbps = size * 8 * 30 / len(frames) / 1000
    assert kbps < 600, f"the encoder did not compress hard ({kbps:.0f} kbit/s): the test proves nothing"
    got = [stamp.read(img) for img in decoded]
    assert got == [stamp.Stamp(k, WALL0 + 33 * i) for i, k in enumerate(counters)]
