"""The compositor's pure functions (placement, fit, compose) with arrays, and the actor in the harness:
layers from options, live `layer` commands, newest picture per input, stale and ended inputs."""

from __future__ import annotations

import numpy as np
import pytest
from mediaengine.actors.compositor import (
    Compositor,
    Layer,
    compose,
    halve_towards,
    parse_layer,
    place,
    render_layer,
)
from mediaengine.sdk.errors import LayerGeometryError, OptionError, UnknownLayerError
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.testing import ActorHarness

NS = 1_000_000_000
OUT = {"width": 320, "height": 180, "fps": 10.0}
IV = NS // 10


def solid(w: int, h: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.full((h, w, 3), rgb, np.uint8)


def test_place_contain_cover_stretch() -> None:
    box = dict(x=0.5, y=0.5, w=0.5, h=0.5)  # a 160x90 box at (160, 90) of 320x180
    # a square source: contain letterboxes inside the box, cover crops it, stretch fills it
    assert place(Layer(**box, fit="contain"), 100, 100, 320, 180).dst == (195, 90, 285, 180)
    cover = place(Layer(**box, fit="cover"), 100, 100, 320, 180)
    assert cover.dst == (160, 90, 320, 180) and cover.crop == (0, 22, 100, 78)
    stretch = place(Layer(**box, fit="stretch"), 100, 100, 320, 180)
    assert stretch.dst == (160, 90, 320, 180) and stretch.crop == (0, 0, 100, 100)


def test_parse_layer_refuses_zero_size_bad_fit_and_unknown_fields() -> None:
    with pytest.raises(LayerGeometryError, match=r"mix.cam.w: w=0: a layer needs a size > 0") as e:
        parse_layer({"w": 0}, where="mix.cam")
    assert e.value.code == 1336
    with pytest.raises(LayerGeometryError, match="fit='zoom'"):
        parse_layer({"fit": "zoom"})
    with pytest.raises(LayerGeometryError, match="unknown layer field 'size'"):
        parse_layer({"size": 3})
    with pytest.raises(LayerGeometryError, match=r"x=1\.5 is outside"):
        parse_layer({"x": 1.5})
    assert parse_layer({"x": 1}, Layer(w=0.3)).x == 1.0 and parse_layer({}, Layer(w=0.3)).w == 0.3


def test_compose_draws_layers_in_order_with_opacity_border_and_clipping() -> None:
    out = np.empty((100, 200, 3), np.uint8)
    red = solid(50, 40, (255, 0, 0))
    blue = solid(60, 60, (0, 0, 255))
    compose(out, (0, 255, 0), [
        (red, (10, 10, 60, 50), 1.0, 0, (0, 0, 0)),
        (blue, (170, 70, 230, 130), 0.5, 2, (255, 255, 255)),  # reaches past the frame: clipped
    ])
    assert tuple(out[0, 0]) == (0, 255, 0)  # background
    assert tuple(out[30, 30]) == (255, 0, 0)
    assert tuple(out[90, 180]) == (0, 128, 128) or np.abs(out[90, 180].astype(int) - (0, 127, 127)).max() <= 1
    assert tuple(out[71, 180]) == (255, 255, 255)  # the border (top edge)


def test_render_layer_resizes_only_what_is_needed() -> None:
    src = np.zeros((720, 1280, 3), np.uint8)
    src[:, 640:] = 200
    same = render_layer(src, place(Layer(), 1280, 720, 1280, 720))
    assert same.base is src or same is src  # a full-frame layer of the same size is not copied
    small = render_layer(src, place(Layer(w=0.25, h=0.25), 1280, 720, 1280, 720))
    assert small.shape == (180, 320, 3) and small[:, :150].max() < 10 and small[:, 170:].min() > 190


def test_halve_towards_keeps_a_picture_shown_small_small() -> None:
    src = np.zeros((720, 1280, 3), np.uint8)
    src[:, 640:] = 200
    quarter = halve_towards(src, place(Layer(w=0.25, h=0.25), 1280, 720, 1280, 720))  # a 320x180 box
    assert quarter.shape == (180, 320, 3) and quarter[:, :150].max() == 0 and quarter[:, 170:].min() == 200
    assert halve_towards(src, place(Layer(w=0.3, h=0.3), 1280, 720, 1280, 720)).shape == (360, 640, 3)
    assert halve_towards(src, place(Layer(w=0.6), 1280, 720, 1280, 720)) is src  # less than 2x: untouched


def harness(layers: dict | None = None, **opts: object) -> ActorHarness:
    fmts = {"screen": VideoFormat(640, 360, 30.0), "cam": VideoFormat(320, 240, 15.0)}
    return ActorHarness(Compositor, {**OUT, "layers": layers or {}, **opts}, input_formats=fmts, node_id="mix")


def test_pip_layer_sits_at_its_rectangle_and_moves_live() -> None:
    h = harness({"cam": {"x": 0.7, "y": 0.7, "w": 0.25, "h": 0.25, "z": 1, "fit": "stretch"}})
    h.frame("screen", Frame(solid(640, 360, (0, 0, 200)), pts_ns=0))
    h.frame("cam", Frame(solid(320, 240, (220, 40, 40)), pts_ns=0))
    h.tick(IV)
    pic = h.emitted("out")[-1].data
    assert pic.shape == (180, 320, 3) and h.zero_copy("out") == 1
    assert tuple(pic[150, 250]) == (220, 40, 40) and tuple(pic[20, 20]) == (0, 0, 200)
    assert h.control("layer", args=["cam"], x=0.05, y=0.05) == {
        "cam": Layer(0.05, 0.05, 0.25, 0.25, "stretch", 1).as_dict(), "applies_from": 2}
    h.tick(2 * IV)  # the very next frame shows the layer at its new place
    pic = h.emitted("out")[-1].data
    assert tuple(pic[20, 20]) == (220, 40, 40) and tuple(pic[150, 250]) == (0, 0, 200)


def test_bad_layer_commands_are_refused_and_the_layer_stays() -> None:
    h = harness({"cam": {"x": 0.7, "y": 0.7, "w": 0.25, "h": 0.25}})
    with pytest.raises(UnknownLayerError, match="no layer 'cma'; layers: screen, cam") as e:
        h.control("layer", id="cma", x=0.1)
    assert e.value.code == 1335
    with pytest.raises(LayerGeometryError, match=r"mix\.cam\.w"):
        h.control("layer", args=["cam"], w=0.0)
    assert h.control("layers")["cam"]["w"] == 0.25


def test_options_name_bad_layers_at_load() -> None:
    with pytest.raises(OptionError, match="layer 'webcam' names no input"):
        harness({"webcam": {"x": 0.1}})
    with pytest.raises(OptionError, match=r"layers\.cam\.h"):
        harness({"cam": {"h": 0.0}})


def test_stale_input_is_hidden_after_stale_ms_and_an_ended_one_at_once() -> None:
    h = harness({"cam": {"x": 0.5, "y": 0.5, "w": 0.5, "h": 0.5, "z": 1, "fit": "stretch"}}, stale_ms=300)
    h.clock.now_ns = 0
    h.frame("screen", Frame(solid(640, 360, (0, 0, 200)), pts_ns=0))
    h.frame("cam", Frame(solid(320, 240, (220, 40, 40)), pts_ns=0))
    h.tick(IV)
    assert tuple(h.emitted("out")[-1].data[170, 310]) == (220, 40, 40)
    h.clock.now_ns = 5 * IV  # the screen keeps coming, the camera stalls
    h.frame("screen", Frame(solid(640, 360, (0, 0, 200)), pts_ns=5 * IV))
    h.tick(5 * IV)  # 500 ms since the camera's last frame > stale_ms
    assert tuple(h.emitted("out")[-1].data[170, 310]) == (0, 0, 200)
    h.frame("cam", Frame(solid(320, 240, (220, 40, 40)), pts_ns=6 * IV))
    h.tick(6 * IV)
    assert tuple(h.emitted("out")[-1].data[170, 310]) == (220, 40, 40)
    h.actor.on_eos("cam")
    h.tick(7 * IV)
    assert tuple(h.emitted("out")[-1].data[170, 310]) == (0, 0, 200)


def test_newest_frame_wins_and_inputs_may_change_size() -> None:
    h = harness()
    h.frame("screen", Frame(solid(640, 360, (10, 10, 10)), pts_ns=0))
    h.frame("screen", Frame(solid(1280, 720, (90, 90, 90)), pts_ns=1))  # a bigger picture, newest
    h.tick(IV)
    assert tuple(h.emitted("out")[-1].data[90, 160]) == (90, 90, 90)
    assert h.metrics()["layers_shown"] == 1
