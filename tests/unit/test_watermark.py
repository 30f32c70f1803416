"""watermark: the pure blend/placement/timing functions, image reading and decoding (sizes, formats, the
assets-folder rules), and the actor's commands through ActorHarness (no processes)."""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from mediaengine.actors import _images, watermark
from mediaengine.actors.watermark import Placement, Watermark, blend_into, frame_at, mark_rect, prepare
from mediaengine.sdk.errors import (
    FileError,
    ImageDecodeError,
    ImageTooLargeError,
    InputPathError,
    MarkError,
    MarkLimitError,
)
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.testing import ActorHarness
from PIL import Image

FMT = VideoFormat(320, 180, 30.0)


def exact_blend(base: np.ndarray, rgba: np.ndarray, x0: int, y0: int, opacity: float = 1.0) -> np.ndarray:
    """The reference: out = base * (1 - a) + rgb * a in float, rounded (rgba already at its shown size)."""
    out = base.astype(np.float64)
    h, w = rgba.shape[:2]
    a = rgba[..., 3:4].astype(np.float64) / 255.0 * opacity
    out[y0:y0 + h, x0:x0 + w] = out[y0:y0 + h, x0:x0 + w] * (1 - a) + rgba[..., :3] * a
    return np.rint(out).astype(np.uint8)


def rgba_picture(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pic = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    pic[: h // 3, :, 3] = 0  # fully transparent band, fully opaque band, and soft alpha elsewhere
    pic[h // 3: 2 * h // 3, :, 3] = 255
    return pic


def save(path: Path, frames: list[np.ndarray], durations: list[int] | None = None, **kw: object) -> Path:
    ims = [Image.fromarray(f, "RGBA" if f.shape[2] == 4 else "RGB") for f in frames]
    if len(ims) > 1:
        ims[0].save(path, save_all=True, append_images=ims[1:], duration=durations or 100, loop=0, **kw)
    else:
        ims[0].save(path, **kw)
    return path


def solid(color: tuple[int, int, int], w: int = 40, h: int = 20, alpha: int = 255) -> np.ndarray:
    return np.dstack([np.full((h, w, 3), color, np.uint8), np.full((h, w), alpha, np.uint8)])


# ---- pure functions ---------------------------------------------------------------------------------

def test_blend_touches_only_the_marks_rectangle_and_is_within_one_level_of_exact() -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    mark = rgba_picture(60, 30)
    out = base.copy()
    blend_into(out, prepare(mark, 60, 30, 0.8), 200, 100)
    ref = exact_blend(base, mark, 200, 100, 0.8)
    assert np.abs(out.astype(int) - ref).max() <= 1
    outside = np.ones((180, 320), bool)
    outside[100:130, 200:260] = False
    assert (out[outside] == base[outside]).all()
    assert (out[100:110, 200:260] == base[100:110, 200:260]).all()  # alpha 0: untouched


def test_blend_clips_a_mark_that_overhangs_the_frame() -> None:
    base = np.zeros((50, 50, 3), np.uint8)
    blend_into(base, prepare(solid((255, 0, 0)), 40, 20, 1.0), 30, 40)
    assert (base[40:, 30:] == (255, 0, 0)).all() and base[:40].sum() == 0 and base[:, :30].sum() == 0


def test_mark_rect_follows_the_aspect_and_refuses_what_leaves_the_frame() -> None:
    assert mark_rect(1280, 720, 200, 100, Placement(0.8, 0.05, 0.15)) == (1024, 36, 192, 96)
    with pytest.raises(MarkError, match="leaves the 1280x720 frame"):
        mark_rect(1280, 720, 200, 100, Placement(0.9, 0.05, 0.15))
    with pytest.raises(MarkError, match="leaves"):
        mark_rect(1280, 720, 100, 400, Placement(0.1, 0.5, 0.2))  # too tall from the aspect ratio
    with pytest.raises(MarkError, match="larger width"):
        mark_rect(1280, 720, 200, 100, Placement(0.1, 0.1, 0.0))
    with pytest.raises(MarkError, match="opacity"):
        mark_rect(1280, 720, 200, 100, Placement(0.1, 0.1, 0.1, 1.5))


def test_frame_at_loops_with_the_files_timing_or_a_set_loop() -> None:
    d = (100, 200, 300)
    assert [frame_at(d, 0, ms * 1_000_000) for ms in (0, 99, 100, 299, 300, 599, 600, 700)] == [0, 0, 1, 1, 2, 2, 0, 1]
    assert [frame_at(d, 1.2, ms * 1_000_000) for ms in (0, 399, 400, 800, 1199, 1200)] == [0, 0, 1, 2, 2, 0]
    assert frame_at((100,), 0, 10**12) == 0


# ---- decoding ---------------------------------------------------------------------------------------

def test_static_formats_decode_with_alpha(tmp_path: Path) -> None:
    pic = rgba_picture(30, 20)
    png = _images.decode_image(save(tmp_path / "a.png", [pic]).read_bytes(), "a.png")
    assert not png.animated and (png.frames[0] == pic).all()
    webp = _images.decode_image(save(tmp_path / "a.webp", [pic], lossless=True).read_bytes(), "a.webp")
    assert (webp.frames[0][..., 3] == pic[..., 3]).all()
    jpg = _images.decode_image(save(tmp_path / "a.jpg", [pic[..., :3].copy()]).read_bytes(), "a.jpg")
    assert jpg.size == (30, 20) and (jpg.frames[0][..., 3] == 255).all()


@pytest.mark.parametrize("suffix", ["gif", "png", "webp"])
def test_animations_decode_every_frame_with_its_duration(tmp_path: Path, suffix: str) -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    path = save(tmp_path / f"anim.{suffix}", [solid(c) for c in colors], [100, 200, 300],
                **({"lossless": True} if suffix == "webp" else {}))
    img = _images.decode_image(path.read_bytes(), path.name)
    assert img.animated and img.durations_ms == (100, 200, 300)
    assert [tuple(int(v) for v in f[5, 5, :3]) for f in img.frames] == colors


def test_a_folder_of_numbered_frames_is_read_in_number_order(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in (1, 2, 10):
        save(folder / f"f_{i}.png", [solid((i * 20, 0, 0))])
    (folder / "notes.txt").write_text("not a frame")
    files, is_folder = _images.read_trusted(str(folder))
    assert is_folder and [n for n, _ in files] == ["f_1.png", "f_2.png", "f_10.png"]
    img = _images.load(files, True, "seq", fps=5)
    assert [int(f[0, 0, 0]) for f in img.frames] == [20, 40, 200] and img.durations_ms == (200, 200, 200)


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h (no pixel data): enough to prove the size check reads headers."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)) + chunk(b"IEND", b"")


def test_oversized_corrupt_and_missing_images_are_refused_with_their_codes(tmp_path: Path) -> None:
    with pytest.raises(ImageTooLargeError, match="larger than an overlay picture may be") as e:
        _images.decode_image(png_header_only(16384, 16384), "huge.png")  # refused from its header, not decoded
    assert e.value.code == 1331
    with pytest.raises(ImageTooLargeError, match="is 5000x300; an overlay picture may be at most 4096x4096"):
        _images.decode_image(png_header_only(5000, 300), "wide.png")
    good = save(tmp_path / "g.png", [rgba_picture(64, 64)]).read_bytes()
    with pytest.raises(ImageDecodeError, match="truncated or corrupt") as d:
        _images.decode_image(good[: len(good) // 2], "half.png")
    assert d.value.code == 1330
    with pytest.raises(ImageDecodeError, match="not a PNG"):
        _images.decode_image(b"hello, not an image", "x.png")
    with pytest.raises(FileError, match="not found"):
        _images.read_trusted(str(tmp_path / "missing.png"))


# ---- the assets folder ------------------------------------------------------------------------------

def test_command_paths_stay_inside_the_assets_folder(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    (assets / "sub").mkdir(parents=True)
    secret = tmp_path / "secret.png"
    save(secret, [rgba_picture(8, 8)])
    save(assets / "sub" / "ok.png", [rgba_picture(8, 8)])
    os.symlink(secret, assets / "link.png")
    os.symlink(tmp_path, assets / "out")
    reader = _images.ConfinedReader.of(str(assets))
    files, folder = reader.read("sub/ok.png")
    assert not folder and files[0][0] == "ok.png"
    assert reader.read(str(assets / "sub" / "ok.png"))[0][0][1] == files[0][1]  # absolute inside: fine
    for bad, why in [("../secret.png", "`..`"), (str(secret), "outside the assets folder"), (".hidden.png", "hidden"),
                     ("sub/ok.txt", "not an image type"), ("link.png", "without following a link"),
                     ("out/secret.png", "without following a link"), ("", "non-empty")]:
        with pytest.raises(InputPathError, match=why) as e:
            reader.read(bad)
        assert e.value.code == 1334
    with pytest.raises(FileError, match="not found"):
        reader.read("sub/none.png")


# ---- the actor --------------------------------------------------------------------------------------

def harness(tmp_path: Path, marks: list[dict[str, object]] | None = None) -> ActorHarness:
    return ActorHarness(Watermark, {"marks": marks or [], "assets_dir": str(tmp_path)}, input_formats={"in": FMT},
                        node_id="wm")


def grey_frame(pts_ns: int = 0, value: int = 100) -> Frame:
    return Frame(np.full((180, 320, 3), value, np.uint8), pts_ns=pts_ns)


def test_topology_marks_are_drawn_into_the_lent_slot(tmp_path: Path) -> None:
    save(tmp_path / "logo.png", [solid((255, 0, 0), 40, 20, alpha=128)])
    h = harness(tmp_path, [{"id": "logo", "path": str(tmp_path / "logo.png"), "x": 0.5, "y": 0.5, "width": 0.25}])
    h.frame("in", grey_frame())
    (out,) = h.emitted("out")
    assert h.zero_copy("out") == 1
    # 80x40 at (160, 90): 100 * (1 - 128/255) + 255 * 128/255 = 177.8
    assert tuple(out.data[110, 200]) == (178, 50, 50) and tuple(out.data[0, 0]) == (100, 100, 100)
    assert h.control("list")["marks"][0] | {"path": ""} == {
        "id": "logo", "path": "", "kind": "static", "state": "shown", "x": 0.5, "y": 0.5, "width": 0.25, "opacity": 1.0,
        "frames": 1, "loop_s": 0.0, "size": [40, 20]}


def test_add_move_remove_live_and_refusals_leave_the_stream_unchanged(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        save(tmp_path / f"{name}.png", [solid((0, 0, 255), 20, 20)])
    save(tmp_path / "anim.gif", [solid((255, 0, 0)), solid((0, 255, 0))], [100, 100])
    h = harness(tmp_path)
    for i, name in enumerate("abc"):
        assert h.control("add", id=name, path=f"{name}.png", x=0.1 * i, y=0.0, width=0.05)["kind"] == "static"
    for i in range(5):
        assert h.control("add", id=f"anim{i}", path="anim.gif", x=0.1 * i, y=0.5, width=0.1)["kind"] == "animated"
    h.frame("in", grey_frame(0))
    before = h.emitted("out")[-1].data.copy()
    refusals = [
        (MarkLimitError, "already 3 static", dict(id="d", path="d.png", x=0.5, y=0.2, width=0.05)),
        (MarkLimitError, "already 5 animated", dict(id="anim5", path="anim.gif", x=0.5, y=0.2, width=0.05)),
        (MarkError, "leaves the 320x180 frame", dict(id="e", path="d.png", x=0.98, y=0.2, width=0.05)),
        (MarkError, "in use", dict(id="a", path="d.png", x=0.5, y=0.2, width=0.05)),
        (FileError, "not found", dict(id="e", path="none.png", x=0.5, y=0.2, width=0.05)),
        (InputPathError, "`..`", dict(id="e", path="../d.png", x=0.5, y=0.2, width=0.05)),
    ]
    for exc, why, args in refusals:
        with pytest.raises(exc, match=why):
            h.control("add", **args)
    with pytest.raises(MarkError, match="no mark 'zz'"):
        h.control("move", id="zz", x=0.5, y=0.5)
    with pytest.raises(MarkError, match="leaves"):
        h.control("move", id="a", x=0.99, y=0.5)
    h.frame("in", grey_frame(10_000_000))  # same animation frame (10 ms later): the same picture
    assert (h.emitted("out")[-1].data == before).all()
    assert h.control("move", id="a", x=0.5, y=0.5, opacity=0.5)["x"] == 0.5
    assert h.control("remove", id="b") == {"removed": "b"}
    assert h.control("add", id="d", path="d.png", x=0.8, y=0.8, width=0.05)["id"] == "d"
    assert [m["id"] for m in h.control("list")["marks"]] == ["a", "c", *(f"anim{i}" for i in range(5)), "d"]
    assert h.metrics() == {"frames": 2, "marks": 8, "static": 3, "animated": 5, "loading": 0}
    assert [e.name for e in h.events()][-3:] == ["mark_moved", "mark_removed", "mark_added"]


def test_an_animated_mark_advances_with_its_loop_duration(tmp_path: Path) -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    save(tmp_path / "anim.png", [solid(c, 32, 18) for c in colors], [50, 50, 50, 50])  # APNG, 0.2 s by its timing
    h = harness(tmp_path)
    h.control("add", id="s", path="anim.png", x=0.0, y=0.0, width=0.1, loop_s=2.0)  # 0.5 s per frame
    seen = []
    for k in range(60):  # 2 s at 30 fps, pts start at 7 s: the animation starts at its first frame
        h.frame("in", grey_frame(7_000_000_000 + k * 33_333_333))
        seen.append(tuple(int(v) for v in h.emitted("out")[-1].data[5, 5]))
    assert seen[0] == colors[0] and seen[14] == colors[0] and seen[16] == colors[1]  # 467 ms, 533 ms
    assert seen[31] == colors[2] and seen[46] == colors[3] and seen[59] == colors[3]


def test_bad_topology_marks_fail_at_load(tmp_path: Path) -> None:
    save(tmp_path / "a.png", [solid((1, 2, 3))])
    with pytest.raises(MarkError, match=r"marks\[0\].*leaves"):
        harness(tmp_path, [{"id": "a", "path": str(tmp_path / "a.png"), "x": 0.9, "y": 0, "width": 0.5}])
    with pytest.raises(MarkError, match="unknown keys"):
        harness(tmp_path, [{"id": "a", "path": str(tmp_path / "a.png"), "x": 0, "y": 0, "width": 0.1, "w": 1}])
    with pytest.raises(FileError, match="not found"):
        harness(tmp_path, [{"id": "a", "path": str(tmp_path / "no.png"), "x": 0, "y": 0, "width": 0.1}])


def test_a_new_frame_size_rescales_the_marks_once(tmp_path: Path) -> None:
    save(tmp_path / "logo.png", [solid((255, 0, 0), 40, 20)])
    h = harness(tmp_path, [{"id": "logo", "path": str(tmp_path / "logo.png"), "x": 0.5, "y": 0.5, "width": 0.25}])
    big = VideoFormat(640, 360, 30.0)
    h.format_changed("in", big)
    h.frame("in", Frame(np.zeros((360, 640, 3), np.uint8), pts_ns=0))
    out = h.emitted("out")[-1].data
    assert out.shape == (360, 640, 3)
    red = np.argwhere((out == (255, 0, 0)).all(axis=2))
    assert red.min(axis=0).tolist() == [180, 320] and red.max(axis=0).tolist() == [259, 479]  # 160x80 at (320, 180)


def test_a_slow_decode_answers_loading_then_shows_or_drops_the_mark(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's loop never waits long for a client's picture: past ADD_WAIT_S the reply says `loading`,
    frames go on, and the mark appears (`mark_added`) or is dropped with its code (`mark_failed`)."""
    save(tmp_path / "anim.gif", [solid((255, 0, 0)), solid((0, 255, 0))], [100, 100])
    gate = threading.Event()
    real = _images.load

    def slow(*args: object, **kw: object) -> _images.MarkImage:
        assert gate.wait(10)
        if args[2] == "bad.gif":
            raise ImageDecodeError("cannot decode image 'bad.gif': truncated")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(_images, "load", slow)
    monkeypatch.setattr(watermark, "ADD_WAIT_S", 0.25)
    (tmp_path / "bad.gif").write_bytes((tmp_path / "anim.gif").read_bytes())
    h = harness(tmp_path)
    t0 = time.monotonic()
    assert h.control("add", id="a", path="anim.gif", x=0.0, y=0.0, width=0.2)["state"] == "loading"
    assert h.control("add", id="b", path="bad.gif", x=0.5, y=0.0, width=0.2)["state"] == "loading"
    assert time.monotonic() - t0 < 2.0  # two waits of ADD_WAIT_S, not the decoding
    h.frame("in", grey_frame(0))
    assert tuple(h.emitted("out")[-1].data[5, 5]) == (100, 100, 100)  # not shown yet; the frames go on
    assert h.metrics()["loading"] == 2
    gate.set()

    def done() -> bool:
        h.frame("in", grey_frame(1))
        return {e.name for e in h.events()} >= {"mark_added", "mark_failed"}

    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, [e.name for e in h.events()]
    (failed,) = h.events("mark_failed")
    assert failed.data["id"] == "b" and failed.data["code"] == 1330
    h.frame("in", grey_frame(2))
    assert tuple(h.emitted("out")[-1].data[5, 5]) == (255, 0, 0)
    assert [(m["id"], m["state"]) for m in h.control("list")["marks"]] == [("a", "shown")]


def test_a_folder_with_too_many_frames_is_refused_before_reading_them(tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(_images.MAX_FRAMES + 1):
        (folder / f"f{i}.png").write_bytes(b"")  # never read: the names alone are too many
    with pytest.raises(ImageTooLargeError, match=f"{_images.MAX_FRAMES + 1} frames; at most {_images.MAX_FRAMES}"):
        _images.read_trusted(str(folder))
    with pytest.raises(ImageTooLargeError, match="frames; at most"):
        _images.ConfinedReader.of(str(tmp_path)).read("many")
