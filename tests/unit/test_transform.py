"""transform: crop, mirror, rotation and scaling against numpy references, and the actor through
ActorHarness (live mirror and crop, the output size fixed at start, option rules)."""

from __future__ import annotations

import numpy as np
import pytest
from mediaengine.actors.transform import Transform, TransformOptions, crop_rect, geometry, output_size, transform_frame
from mediaengine.sdk.errors import OptionError
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.testing import ActorHarness

SRC = np.random.default_rng(7).integers(0, 256, (36, 64, 3), dtype=np.uint8)
ROT90_K = {0: 0, 90: -1, 180: 2, 270: 1}  # np.rot90 turns counter-clockwise; `rotate` is clockwise


def run(o: TransformOptions, src: np.ndarray = SRC, size: tuple[int, int] | None = None) -> np.ndarray:
    ih, iw = src.shape[:2]
    ow, oh = size or output_size(iw, ih, o.rotate, o.width, o.height)
    out = np.full((oh, ow, 3), 77, np.uint8)  # a slot holding an older frame
    return transform_frame(src, out, geometry(iw, ih, o, (ow, oh)), scratch={})


@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("rotate", [0, 90, 180, 270])
def test_mirror_and_rotation_are_pixel_exact(rotate: int, mirror: bool) -> None:
    ref = np.rot90(np.fliplr(SRC) if mirror else SRC, ROT90_K[rotate])
    assert (run(TransformOptions(mirror=mirror, rotate=rotate)) == ref).all()


def test_crop_is_taken_before_mirror_and_rotation() -> None:
    o = TransformOptions(crop_x=0.25, crop_y=0.5, crop_w=0.5, crop_h=0.5, mirror=True, rotate=90)
    part = SRC[18:36, 16:48]
    out = run(o, size=(18, 32))
    assert (out == np.rot90(np.fliplr(part), -1)).all()
    with pytest.raises(OptionError, match="leaves the picture"):
        crop_rect(64, 36, 0.6, 0, 0.5, 1)


def test_scaling_fits_pads_stretches_or_crops() -> None:
    flat = np.full((36, 64, 3), 200, np.uint8)
    pad = run(TransformOptions(width=64, height=64, fit="pad"), flat)
    assert (pad[14:50] == 200).all() and (pad[:14] == 0).all() and (pad[50:] == 0).all()  # 64x36 centred
    assert (run(TransformOptions(width=64, height=64, fit="stretch"), flat) == 200).all()
    assert (run(TransformOptions(width=64, height=64, fit="crop"), flat) == 200).all()
    g = geometry(64, 36, TransformOptions(width=64, height=64, fit="crop"), (64, 64))
    assert g.src_window == (14, 0, 36, 36)  # the middle square
    half = run(TransformOptions(width=32, height=18), SRC)
    blocks = SRC.reshape(18, 2, 32, 2, 3).mean(axis=(1, 3))  # INTER_AREA at 1/2: the mean of each 2x2 block
    assert np.abs(half - blocks).max() <= 1
    assert output_size(1280, 720, 90, 0, 0) == (720, 1280) and output_size(1280, 720, 0, 640, 0) == (640, 360)


def test_actor_mirror_and_crop_are_live_and_the_size_stays() -> None:
    fmt = VideoFormat(64, 36, 30.0)
    h = ActorHarness(Transform, {"orientation": "portrait"}, input_formats={"in": fmt}, node_id="t")
    assert h.output_formats["out"] == VideoFormat(36, 64, 30.0)
    h.frame("in", Frame(SRC, pts_ns=0))
    assert (h.emitted("out")[-1].data == np.rot90(SRC, -1)).all() and h.zero_copy("out") == 1
    assert h.set(mirror=True) == {"mirror": True}
    h.frame("in", Frame(SRC, pts_ns=1))
    assert (h.emitted("out")[-1].data == np.rot90(np.fliplr(SRC), -1)).all()
    h.set(crop_x=0.5, crop_w=0.5)  # the right half, padded into the same 36x64 output
    h.frame("in", Frame(SRC, pts_ns=2))
    assert h.emitted("out")[-1].data.shape == (64, 36, 3)
    h.set(crop_w=1.0, crop_x=0.0)
    assert h.set(orientation="", rotate=270) == {"orientation": "", "rotate": 270}  # same size: exact
    h.frame("in", Frame(SRC, pts_ns=3))
    assert (h.emitted("out")[-1].data == np.rot90(np.fliplr(SRC), 1)).all()
    h.set(rotate=0, mirror=False)  # a landscape picture fitted into the portrait output: bars above and below
    h.frame("in", Frame(SRC, pts_ns=4))
    out = h.emitted("out")[-1].data
    assert (out[:22] == 0).all() and (out[42:] == 0).all() and out[22:42].std() > 20
    h.set(rotate=90)
    with pytest.raises(OptionError, match="not both"):
        h.set(orientation="portrait")
    with pytest.raises(OptionError, match="leaves the picture"):
        h.set(crop_x=0.8)
    assert h.metrics() == {"frames": 5, "mirror": False, "rotate": 90}


def test_option_rules_are_checked_at_load() -> None:
    fmt = {"in": VideoFormat(64, 36, 30.0)}
    with pytest.raises(OptionError, match="not both"):
        ActorHarness(Transform, {"rotate": 90, "orientation": "portrait"}, input_formats=fmt)
    with pytest.raises(OptionError, match="not a colour"):
        ActorHarness(Transform, {"pad_color": "purple-ish"}, input_formats=fmt)
    with pytest.raises(OptionError):
        ActorHarness(Transform, {"rotate": 45}, input_formats=fmt)


def test_a_new_input_size_is_followed_when_the_output_size_is_not_set() -> None:
    h = ActorHarness(Transform, {"rotate": 90}, input_formats={"in": VideoFormat(64, 36, 30.0)})
    h.format_changed("in", VideoFormat(128, 72, 30.0))
    assert h.output_formats["out"] == VideoFormat(72, 128, 30.0)
    big = np.random.default_rng(2).integers(0, 256, (72, 128, 3), dtype=np.uint8)
    h.frame("in", Frame(big, pts_ns=0))
    assert (h.emitted("out")[-1].data == np.rot90(big, -1)).all()
