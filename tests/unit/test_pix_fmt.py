"""yuv420p on the rings: each video edge's pixel format, chosen by the loader from what the producer can
emit and every consumer accepts; forced by `pix_fmt`; refused with both ends named; shown by
`validate`; and the pictures themselves (decoded I420 copied plane by plane, the encoder taking I420
as it is)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import av
import cv2
import numpy as np
import pytest
from mediaengine.actors.video_encoder import VideoEncoder
from mediaengine.cli.main import main
from mediaengine.sdk.actor import Actor, InPort
from mediaengine.sdk.errors import FormatMismatchError, OptionError
from mediaengine.sdk.formats import Format, Frame, Packet, VideoFormat, format_from_wire, format_to_wire
from mediaengine.sdk.pixels import frame_to_array
from mediaengine.testing import ActorHarness
from mediaengine.topology import registry
from mediaengine.topology.loader import load_topology

CAM = {"id": "cam", "kind": "camera", "options": {"device": "lavfi:testsrc2=size=640x360:rate=30",
                                                   "width": 640, "height": 360}}


def topo(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "nodes": [CAM, *nodes]}


def edge_formats(t: dict[str, Any]) -> dict[str, str]:
    return {f"{e.src}/{e.src_pad}->{e.dst}/{e.dst_pad}": getattr(e.format, "pix_fmt", "")
            for e in load_topology(t).edges if isinstance(e.format, VideoFormat)}


ENC = {"id": "venc", "kind": "video_encoder", "inputs": {"in": "cam"}}
OVL = {"id": "ovl", "kind": "overlay", "inputs": {"in": "cam"}, "options": {"text": "x"}}


def test_a_source_feeding_the_encoder_hands_on_yuv420p() -> None:
    assert edge_formats(topo(ENC)) == {"cam/out->venc/in": "yuv420p"}


def test_an_rgb_filter_gets_rgb24_and_the_encoder_after_it_too() -> None:
    enc = {"id": "venc", "kind": "video_encoder", "inputs": {"in": "ovl"}}
    assert edge_formats(topo(OVL, enc)) == {"cam/out->ovl/in": "rgb24", "ovl/out->venc/in": "rgb24"}


def test_one_ring_for_an_encoder_and_a_filter_carries_what_both_take() -> None:
    assert edge_formats(topo(ENC, OVL)) == {"cam/out->venc/in": "rgb24", "cam/out->ovl/in": "rgb24"}


def test_pix_fmt_forces_the_edge_and_an_impossible_force_names_the_option() -> None:
    forced = {**CAM, "options": {**CAM["options"], "pix_fmt": "rgb24"}}
    assert edge_formats({"version": 1, "nodes": [forced, ENC]}) == {"cam/out->venc/in": "rgb24"}
    forced = {**CAM, "options": {**CAM["options"], "pix_fmt": "yuv420p"}}
    with pytest.raises(FormatMismatchError) as info:
        load_topology({"version": 1, "nodes": [forced, OVL]})
    assert info.value.where == "nodes[1].inputs.in"
    assert "cam/out emits pixel format yuv420p" in info.value.message and "'ovl' (kind overlay)" in info.value.message
    assert "hint: set cam's pix_fmt to auto" in info.value.message


def test_an_odd_size_never_travels_as_i420() -> None:
    odd = {**CAM, "options": {**CAM["options"], "width": 639}}
    snap = {"id": "snap", "kind": "snapshot", "inputs": {"in": "cam"}}
    assert edge_formats({"version": 1, "nodes": [odd, snap]}) == {"cam/out->snap/in": "rgb24"}
    odd["options"]["pix_fmt"] = "yuv420p"
    with pytest.raises(OptionError) as info:
        load_topology({"version": 1, "nodes": [odd, snap]})
    assert info.value.where == "nodes[0].options.pix_fmt" and "even frame size" in info.value.message


@dataclass(frozen=True)
class _NoOptions:
    pass


class GrayOnly(Actor[_NoOptions]):
    """A consumer that takes only grey pictures (no producer here emits them)."""

    inputs = {"in": InPort("video", pix_fmts=("gray",))}
    Options = _NoOptions

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        return {}


class YuvOnly(GrayOnly):
    inputs = {"in": InPort("video", pix_fmts=("yuv420p",))}


@pytest.fixture
def strict_kinds() -> Iterator[None]:
    registry.register("t_gray", GrayOnly)
    registry.register("t_yuv", YuvOnly)
    try:
        yield
    finally:
        registry.unregister("t_gray")
        registry.unregister("t_yuv")


@pytest.mark.usefixtures("strict_kinds")
def test_a_link_with_no_common_format_names_both_ends_with_a_hint() -> None:
    with pytest.raises(FormatMismatchError) as info:
        load_topology(topo({"id": "g", "kind": "t_gray", "inputs": {"in": "cam"}}))
    msg = info.value.message
    assert info.value.where == "nodes[1].inputs.in"
    assert "cam/out emits pixel format yuv420p/rgb24" in msg and "input pad 'in' of 'g' (kind t_gray)" in msg
    assert "expects pixel format gray" in msg and "hint:" in msg


@pytest.mark.usefixtures("strict_kinds")
def test_consumers_that_each_fit_but_not_together_are_refused() -> None:
    with pytest.raises(FormatMismatchError) as info:
        load_topology(topo(OVL, {"id": "y", "kind": "t_yuv", "inputs": {"in": "cam"}}))
    msg = info.value.message
    assert "'ovl' (kind overlay) (accepts rgb24)" in msg and "'y' (kind t_yuv) (accepts yuv420p)" in msg
    assert "one ring carries one pixel format" in msg


def test_validate_shows_each_edges_format(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(json.dumps(topo(ENC)))
    assert main(["validate", str(path)]) == 0
    assert "cam/out -> venc/in: video yuv420p 640x360@30 (block)" in capsys.readouterr().out
    assert main(["validate", str(path), "--json"]) == 0
    (edge,) = json.loads(capsys.readouterr().out)["edges"]
    assert edge["from"] == "cam/out" and edge["to"] == "venc/in" and edge["format"]["pix_fmt"] == "yuv420p"


# ---- the pictures --------------------------------------------------------------------------------

def test_i420_ring_frames_are_sized_for_the_planes() -> None:
    fmt = VideoFormat(1920, 1080, 30, "yuv420p")
    assert fmt.shape == (1620, 1920) and fmt.frame_bytes == fmt.slot_bytes == 1920 * 1080 * 3 // 2
    assert VideoFormat(1920, 1080, 30).frame_bytes == 2 * fmt.frame_bytes
    assert format_from_wire(format_to_wire(fmt)) == fmt


def test_a_decoded_i420_picture_is_copied_without_conversion_even_with_padded_lines() -> None:
    rgb = (np.random.default_rng(1).random((360, 638, 3)) * 255).astype(np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")  # 638: padded lines
    assert frame.planes[0].line_size > 638
    out = frame_to_array(frame, 638, 360, "yuv420p")
    assert np.array_equal(out, frame.to_ndarray())
    scaled = frame_to_array(frame, 320, 180, "yuv420p")  # another size: swscale
    assert scaled.shape == (270, 320)


def _bgr0_frame(bgrx: np.ndarray[Any, Any]) -> av.VideoFrame:
    """A bgr0 frame (x11grab's format; PyAV cannot build one from an array) holding `bgrx`."""
    h, w, _ = bgrx.shape
    frame = av.VideoFrame(w, h, "bgr0")
    line = frame.planes[0].line_size
    rows = np.frombuffer(frame.planes[0], np.uint8).reshape(h, line)
    rows[:, :w * 4] = bgrx.reshape(h, w * 4)
    rows[:, w * 4:] = 77  # the padding at the end of each row must not leak into the picture
    return frame


@pytest.mark.parametrize("width", [64, 638])  # 638: rows padded beyond the picture
def test_a_bgr0_picture_converts_with_opencv_to_the_pixels_the_encoder_makes_from_rgb24(width: int) -> None:
    bgrx = np.random.default_rng(5).integers(0, 256, (360, width, 4), dtype=np.uint8)
    bgrx[..., 3] = 0
    frame = _bgr0_frame(bgrx)
    assert (frame.planes[0].line_size > width * 4) == (width == 638)
    rgb = frame_to_array(frame, width, 360, "rgb24")
    assert np.array_equal(rgb, bgrx[..., 2::-1])
    assert np.array_equal(rgb, frame.reformat(format="rgb24").to_ndarray())  # swscale's pixels, too
    out = np.empty((540, width), np.uint8)  # the ring slot: written in place
    i420 = frame_to_array(frame, width, 360, "yuv420p", out)
    assert i420 is out
    # BT.601 limited range, exactly what an rgb24 edge into the encoder (rgb_to_i420) would give
    assert np.array_equal(i420, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420))


def test_a_bgr0_picture_of_another_size_is_scaled_by_swscale() -> None:
    frame = _bgr0_frame(np.full((48, 64, 4), (10, 200, 30, 0), np.uint8))
    assert frame_to_array(frame, 32, 24, "yuv420p").shape == (36, 32)
    assert (frame_to_array(frame, 32, 24, "rgb24") == (30, 200, 10)).all()


def _encode(frames: list[np.ndarray[Any, Any]], pix_fmt: str) -> list[Packet]:
    h = ActorHarness(VideoEncoder, {"keepalive_ms": 0}, input_formats={"in": VideoFormat(64, 48, 30, pix_fmt)})
    for k, data in enumerate(frames):
        h.frame("in", Frame(data, pts_ns=k * 33_333_333))
    h.stop()
    return [p for p in h.emitted("out") if isinstance(p, Packet)]


def test_the_encoder_takes_i420_as_it_is_and_rgb24_converted_to_the_same_picture() -> None:
    rgb = [np.full((48, 64, 3), (40 + 20 * k, 90, 200 - 10 * k), np.uint8) for k in range(5)]
    i420 = [cv2.cvtColor(p, cv2.COLOR_RGB2YUV_I420) for p in rgb]
    a, b = _encode(i420, "yuv420p"), _encode(rgb, "rgb24")
    assert len(a) == len(b) == 5
    assert [p.data for p in a] == [p.data for p in b]  # the same conversion, done upstream or in the encoder
