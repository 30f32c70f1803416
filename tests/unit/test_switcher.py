"""The switcher in the harness: selection at the next frame with no gap, image and freeze pauses,
alternates of another size scaled to the output, unknown names refused with a code."""

from __future__ import annotations

import numpy as np
import pytest
from mediaengine.actors.switcher import Switcher, fit_to
from mediaengine.sdk.errors import OptionError, UnknownLayerError
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.testing import ActorHarness

IV = 1_000_000_000 // 10


def solid(w: int, h: int, v: int) -> np.ndarray:
    return np.full((h, w, 3), v, np.uint8)


def harness(**opts: object) -> ActorHarness:
    fmts = {"main": VideoFormat(160, 90, 10.0), "pause": VideoFormat(320, 180, 5.0)}
    return ActorHarness(Switcher, dict(opts), input_formats=fmts, node_id="sel")


def values(h: ActorHarness) -> list[int]:
    return [int(f.data[0, 0, 0]) for f in h.emitted("out")]


def test_fit_to_keeps_a_picture_of_the_right_size_and_scales_others() -> None:
    src = solid(160, 90, 7)
    assert fit_to(src, 160, 90) is src and fit_to(solid(320, 180, 9), 160, 90).shape == (90, 160, 3)


def at(h: ActorHarness, t: float) -> ActorHarness:
    h.clock.now_ns = round(t * IV)
    return h


def test_select_image_then_main_switches_at_once_and_fills_the_slow_still() -> None:
    h = harness()
    at(h, 0).frame("main", Frame(solid(160, 90, 10), pts_ns=0))  # the selected input passes through
    h.frame("pause", Frame(solid(320, 180, 200), pts_ns=0))  # not selected: kept, not sent
    assert at(h, 1).control("select", args=["pause"]) == {"selected": "pause", "showing": "pause"}  # sent at once
    h.tick(2 * IV)  # the still comes 5 times a second: the switcher sends it on its own clock,
    h.tick(3 * IV)  # every tick
    at(h, 3.2).frame("main", Frame(solid(160, 90, 20), pts_ns=3 * IV))  # main goes on underneath
    at(h, 3.5).control("select", input="main")
    at(h, 4).frame("main", Frame(solid(160, 90, 30), pts_ns=4 * IV))
    h.tick(5 * IV)  # main is live again: the clock only bridges a late frame (none here)
    assert values(h) == [10, 200, 200, 200, 20, 30]
    pts = [f.pts_ns for f in h.emitted("out")]
    assert pts == sorted(set(pts)) and pts[-1] == 4 * IV, pts  # strictly increasing; live frames keep theirs
    assert [e.data["to"] for e in h.events("selected")] == ["pause", "main"]
    assert h.emitted("out")[1].data.shape == (90, 160, 3)  # the 320x180 still scaled to the output


def test_freeze_shows_the_last_main_picture_while_main_goes_on() -> None:
    h = harness(pause_mode="freeze")
    at(h, 0).frame("main", Frame(solid(160, 90, 10), pts_ns=0))
    assert at(h, 1).control("select", args=["pause"])["showing"] == "freeze"
    at(h, 1.5).frame("main", Frame(solid(160, 90, 30), pts_ns=IV))
    h.tick(3 * IV)
    at(h, 3.2).control("select", args=["main"])
    assert values(h) == [10, 10, 10, 30]


def test_an_unknown_name_is_refused_and_the_selection_stays() -> None:
    h = harness()
    at(h, 0).frame("main", Frame(solid(160, 90, 10), pts_ns=0))
    with pytest.raises(UnknownLayerError, match="cannot select 'paus'; inputs: main, pause") as e:
        h.control("select", args=["paus"])
    assert e.value.code == 1335
    assert values(h) == [10] and h.control("selected")["selected"] == "main"
    with pytest.raises(OptionError, match="initial='brb' names no input"):
        harness(initial="brb")


def test_an_alternate_without_a_picture_yet_keeps_the_last_frame_going_out() -> None:
    h = ActorHarness(Switcher, {}, input_formats={"main": VideoFormat(160, 90, 10.0),
                                                  "poor_network": VideoFormat(160, 90, 1.0)})
    at(h, 0).frame("main", Frame(solid(160, 90, 10), pts_ns=0))
    at(h, 1).control("select", args=["poor_network"])
    at(h, 2).frame("poor_network", Frame(solid(160, 90, 99), pts_ns=2 * IV))  # 1 fps: sent on the clock
    h.tick(2 * IV)
    assert values(h) == [10, 10, 99]


def test_network_poor_shows_the_poor_input_at_once_and_back_when_cleared() -> None:
    """What the RTMP sender's rate controller does on network_poor / network_recovered (`abr_poor_switcher`):
    it sets `network_poor`, and the switcher shows `poor_input` instead of the selection until it is cleared."""
    fmts = {"main": VideoFormat(160, 90, 10.0), "poor": VideoFormat(160, 90, 5.0)}
    h = ActorHarness(Switcher, {"poor_input": "poor"}, input_formats=fmts, node_id="sel")
    at(h, 0).frame("main", Frame(solid(160, 90, 10), pts_ns=0))
    h.frame("poor", Frame(solid(160, 90, 99), pts_ns=0))
    at(h, 1).set(network_poor=True)  # the slate goes out at once, then on the switcher's clock
    h.tick(2 * IV)
    at(h, 2.5).frame("main", Frame(solid(160, 90, 20), pts_ns=2 * IV))  # main goes on underneath, not shown
    at(h, 3).set(network_poor=False)
    at(h, 4).frame("main", Frame(solid(160, 90, 30), pts_ns=4 * IV))
    assert values(h) == [10, 99, 99, 20, 30]
    assert [e.data for e in h.events("network_picture")] == [{"network_poor": True, "showing": "poor"},
                                                               {"network_poor": False, "showing": "main"}]
    assert h.control("selected")["selected"] == "main"  # the selection itself never changed
    with pytest.raises(OptionError, match="poor_input='slate' names no input"):
        ActorHarness(Switcher, {"poor_input": "slate"}, input_formats=fmts)
