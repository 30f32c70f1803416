"""overlay (a filter) and snapshot (a sink): pure functions and hooks called directly."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from mediaengine.actors import overlay, snapshot
from mediaengine.sdk.actor import Emit, Event
from mediaengine.sdk.errors import FieldError, FileError, FormatMismatchError, OptionError, UnknownCommandError
from mediaengine.sdk.formats import NS, AudioFormat, Frame, VideoFormat
from mediaengine.sdk.options import live_option_names
from mediaengine.testing import ActorHarness
from numpy.typing import NDArray

FMT = VideoFormat(320, 180, 30.0)


def picture(h: int = 180, w: int = 320, seed: int = 3) -> NDArray[Any]:
    """A read-only frame, like the zero-copy view the runtime hands to on_frame."""
    rng = np.random.default_rng(seed)
    img = (rng.integers(0, 60, (h, w, 3)) + 40).astype(np.uint8)  # dark, noisy: text stands out
    img.flags.writeable = False
    return img


# ---- overlay: the pure function -------------------------------------------------------------------

def test_empty_text_is_an_exact_copy() -> None:
    src = picture()
    out = np.zeros_like(src)
    assert overlay.draw_overlay(src, out, "") is out
    np.testing.assert_array_equal(out, src)


def test_text_is_drawn_where_asked_and_nowhere_else() -> None:
    src = picture()
    before = src.copy()
    out = overlay.draw_overlay(src, np.empty_like(src), "HELLO", x=0.5, y=0.5, scale=2.0, color=(255, 255, 255))
    np.testing.assert_array_equal(src, before)  # the input is untouched (it is read-only anyway)
    changed = np.argwhere((out != src).any(axis=2))
    assert len(changed) > 200
    ys, xs = changed[:, 0], changed[:, 1]
    assert ys.min() >= 90 and xs.min() >= 160  # the block's top-left corner is at (x*W, y*H)
    white = (out > 200).all(axis=2)  # anti-aliased text: count clearly white pixels
    assert white[90:, 160:].sum() > 50 and white[:90].sum() == 0


def test_box_fills_a_rectangle_behind_the_text() -> None:
    src = picture()
    out = overlay.draw_overlay(src, np.empty_like(src), "Hi", x=0.1, y=0.2, scale=3.0, box=True,
                               color=(255, 255, 0), box_color=(0, 0, 128))
    x0, y0 = 32, 36  # 0.1 * 320, 0.2 * 180
    assert tuple(out[y0 + 1, x0 + 1]) == (0, 0, 128)
    box = (out == (0, 0, 128)).all(axis=2)
    assert box[y0:, x0:].sum() > 400 and box[:y0].sum() == 0 and box[:, :x0].sum() == 0
    yellow = (out[:, :, 0] > 200) & (out[:, :, 1] > 200) & (out[:, :, 2] < 80)
    assert yellow[y0:, x0:].sum() > 20 and yellow[:y0].sum() == 0


def test_text_near_the_edge_is_kept_inside_the_frame() -> None:
    src = picture()
    one = overlay.draw_overlay(src, np.empty_like(src), "EDGE", x=1.0, y=1.0, box=True)
    two = overlay.draw_overlay(src, np.empty_like(src), "EDGE\nTWO", x=1.0, y=1.0, box=True)
    for out in (one, two):
        changed = np.argwhere((out != src).any(axis=2))
        assert changed[:, 1].max() == 319 and changed[:, 0].max() == 179  # pushed in, flush with the corner
    top_one = np.argwhere((one != src).any(axis=2))[:, 0].min()
    top_two = np.argwhere((two != src).any(axis=2))[:, 0].min()
    assert 179 - top_two > 1.8 * (179 - top_one)  # two lines are about twice as tall


@pytest.mark.parametrize(("text", "rgb"), [
    ("white", (255, 255, 255)), ("#ff8000", (255, 128, 0)), ("00ff7F", (0, 255, 127)), (" Yellow ", (255, 255, 0))])
def test_parse_color(text: str, rgb: tuple[int, int, int]) -> None:
    assert overlay.parse_color(text) == rgb


def test_parse_color_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a colour"):
        overlay.parse_color("#12345")


# ---- overlay: the actor ---------------------------------------------------------------------------

def make_overlay(**options: Any) -> ActorHarness:
    return ActorHarness(overlay.Overlay, options, input_formats={"in": FMT})


def test_overlay_passes_the_format_through_and_checks_options() -> None:
    assert overlay.Overlay.output_formats(overlay.OverlayOptions(), {"in": FMT}) == {"out": FMT}
    with pytest.raises(OptionError, match="not a colour"):
        overlay.Overlay.validate(overlay.OverlayOptions(color="pinkish"), {"in": FMT})
    with pytest.raises(FormatMismatchError):
        overlay.Overlay.output_formats(overlay.OverlayOptions(), {"in": AudioFormat(48000, 2)})
    assert {"text", "x", "y"} <= set(live_option_names(overlay.OverlayOptions))


def test_overlay_emits_a_copy_with_the_same_timing() -> None:
    actor = make_overlay(text="LIVE", box=True)
    src = picture()
    before = src.copy()
    actions = actor.frame("in", Frame(src, pts_ns=5 * NS, seq=150, meta={"k": 1})) or []
    assert len(actions) == 1 and isinstance(actions[0], Emit) and actions[0].pad == "out"
    out = actions[0].media
    assert isinstance(out, Frame)
    assert (out.pts_ns, out.seq, out.meta) == (5 * NS, 150, {"k": 1})
    assert out.data.shape == src.shape and out.data.dtype == np.uint8 and out.data.flags.c_contiguous
    assert not np.shares_memory(out.data, src)
    np.testing.assert_array_equal(src, before)
    assert (out.data != src).any()
    assert actor.zero_copy("out") == 1  # drawn straight into the lent output buffer


def test_overlay_without_text_passes_frames_through() -> None:
    actor = make_overlay()
    src = picture()
    (action,) = actor.frame("in", Frame(src, pts_ns=0)) or []
    assert isinstance(action, Emit) and isinstance(action.media, Frame)
    np.testing.assert_array_equal(action.media.data, src)
    assert not np.shares_memory(action.media.data, src)


def test_overlay_live_options_apply_to_the_next_frame() -> None:
    actor = make_overlay(text="A", x=0.0, y=0.0, scale=3.0)
    src = picture()
    (a1,) = actor.frame("in", Frame(src, pts_ns=0)) or []
    assert isinstance(a1, Emit) and isinstance(a1.media, Frame)
    first = a1.media.data.copy()  # the runtime copies it into shared memory before the next call
    assert (first[:90, :160] != src[:90, :160]).any()
    actor.set(x=0.6, y=0.6, color="#00ff00")
    with pytest.raises(OptionError, match=r"node\.color: not a colour: 'pinkish'") as info:
        actor.set(color="pinkish")  # refused by validate() before it reaches a frame
    assert info.value.code == 1108 and actor.actor.options.color == "#00ff00"
    (a2,) = actor.frame("in", Frame(src, pts_ns=1)) or []
    assert isinstance(a2, Emit) and isinstance(a2.media, Frame)
    second = a2.media.data
    np.testing.assert_array_equal(second[:90, :160], src[:90, :160])  # moved away from the corner
    green = (second[:, :, 1] > 200) & (second[:, :, 0] < 80) & (second[:, :, 2] < 80)
    assert green[108:, 192:].sum() > 20 and green[:108].sum() == 0


def test_overlay_follows_a_resolution_change() -> None:
    actor = make_overlay(text="X")
    # the runtime (and the harness) refuse a frame that does not match the declared format until
    # format changes travel on the edge (on_format_changed); the actor itself already follows it
    (a,) = actor.actor.on_frame("in", Frame(picture(360, 640), pts_ns=0)) or []
    assert isinstance(a, Emit) and isinstance(a.media, Frame) and a.media.data.shape == (360, 640, 3)


# ---- snapshot -------------------------------------------------------------------------------------

def make_snapshot(path: Path, **options: Any) -> ActorHarness:
    # output_dir: what the runtime gives from the topology's `output_dir`
    return ActorHarness(snapshot.Snapshot, {"path": str(path), **options}, input_formats={"in": FMT},
                        output_dir=str(path.parent))


def saved_events(actions: list[Any] | None) -> list[dict[str, Any]]:
    return [a.data for a in actions or [] if isinstance(a, Event) and a.name == "snapshot_saved"]


def read_png(path: str | Path) -> NDArray[Any]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"{path} is not a readable image"
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_snapshot_declares_a_dropping_input() -> None:
    assert snapshot.Snapshot.inputs["in"].policy == "drop_oldest"
    assert snapshot.Snapshot.outputs == {}
    with pytest.raises(OptionError, match=r"every_s: -1 is out of range 0\.\.86400"):
        ActorHarness(snapshot.Snapshot, {"every_s": -1.0}, input_formats={"in": FMT})


def test_snapshot_saves_the_first_frame_as_png(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "snap.png"
    actor = make_snapshot(target)
    src = picture()
    events = saved_events(actor.frame("in", Frame(src, pts_ns=123, seq=4)))
    assert events == [{"path": str(target), "pts_ns": 123, "seq": 4}]
    np.testing.assert_array_equal(read_png(target), src)  # lossless, right channel order
    assert saved_events(actor.frame("in", Frame(picture(seed=9), pts_ns=456, seq=5))) == []
    np.testing.assert_array_equal(read_png(target), src)
    assert os.listdir(target.parent) == ["snap.png"]  # no temporary file left behind


def test_snapshot_every_s_counts_media_time(tmp_path: Path) -> None:
    actor = make_snapshot(tmp_path / "s.png", every_s=1.0)
    saved = []
    for pts in (0, NS // 2, NS, 3 * NS // 2, 19 * NS // 10, 2 * NS, 2 * NS + 1):
        if saved_events(actor.frame("in", Frame(picture(), pts_ns=pts))):
            saved.append(pts)
    assert saved == [0, NS, 2 * NS]


def test_snapshot_command_saves_the_next_frame(tmp_path: Path) -> None:
    actor = make_snapshot(tmp_path / "auto.png")
    actor.frame("in", Frame(picture(seed=1), pts_ns=0))
    wanted = tmp_path / "asked" / "now.png"
    assert actor.control("snapshot", path=str(wanted)) == {"path": str(wanted)}
    assert not wanted.exists()
    nxt = picture(seed=2)
    events = saved_events(actor.frame("in", Frame(nxt, pts_ns=NS, seq=30)))
    assert events == [{"path": str(wanted), "pts_ns": NS, "seq": 30}]
    np.testing.assert_array_equal(read_png(wanted), nxt)
    assert saved_events(actor.frame("in", Frame(nxt, pts_ns=2 * NS))) == []  # once only
    # without a path: the configured one
    assert actor.control("snapshot") == {"path": str(tmp_path / "auto.png")}
    last = picture(seed=5)
    assert len(saved_events(actor.frame("in", Frame(last, pts_ns=3 * NS)))) == 1
    np.testing.assert_array_equal(read_png(tmp_path / "auto.png"), last)


def test_snapshot_rejects_bad_commands(tmp_path: Path) -> None:
    actor = make_snapshot(tmp_path / "x.png")
    with pytest.raises(FieldError):
        actor.control("snapshot", path=42)
    with pytest.raises(UnknownCommandError):
        actor.control("explode")


def test_snapshot_unwritable_folder_is_a_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    actor = make_snapshot(blocker / "snap.png")
    with pytest.raises(FileError, match=re.escape("snap.png")):
        actor.frame("in", Frame(picture(), pts_ns=0))


def test_save_png_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    first, second = picture(seed=1), picture(seed=2)
    assert snapshot.save_png(first, str(target)) == str(target)
    inode = target.stat().st_ino
    snapshot.save_png(second, str(target))
    assert target.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    np.testing.assert_array_equal(read_png(target), second)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # like any new file, not mkstemp's 0600
