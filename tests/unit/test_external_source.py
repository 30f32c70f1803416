"""external_source without processes: the caller-side checks (every malformed input has its typed
error), every accepted pixel and sample format converted and compared with the original, the pacing
clock, the overflow policies and their counters, and malformed messages that the node skips."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
import zmq
from mediaengine.actors.external_source import ExternalSource, PushClock, SampleQueue
from mediaengine.sdk.actor import Emit
from mediaengine.sdk.errors import (
    FormatError,
    PushAudioError,
    PushDtypeError,
    PushPixelFormatError,
    PushShapeError,
    ResourceError,
)
from mediaengine.sdk.formats import Frame
from mediaengine.sdk.ingress import Header, PcmConverter, check_audio, pack_header, unpack_header
from mediaengine.sdk.pixels import PUSH_PIX_FMTS, check_video, convert_video, push_shape
from mediaengine.testing import ActorHarness, ManualClock

W, H = 64, 48
MS = 1_000_000


def picture() -> np.ndarray[Any, np.dtype[np.uint8]]:
    """A smooth rgb24 picture (chroma subsampling keeps smooth pictures within a few levels)."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 2 % 256], axis=2).astype(np.uint8)


def as_format(rgb: np.ndarray[Any, np.dtype[np.uint8]], pix_fmt: str) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """The picture as a caller would hand it over in `pix_fmt` (built independently with OpenCV/numpy)."""
    if pix_fmt == "rgb24":
        return rgb.copy()
    if pix_fmt == "nv12":
        i420 = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        u = i420[H:H + H // 4].reshape(H // 2, W // 2)
        v = i420[H + H // 4:].reshape(H // 2, W // 2)
        uv = np.stack([u, v], axis=2).reshape(H // 2, W)
        return np.concatenate([i420[:H], uv])
    code = {"bgr24": cv2.COLOR_RGB2BGR, "rgba": cv2.COLOR_RGB2RGBA, "bgra": cv2.COLOR_RGB2BGRA,
            "yuv420p": cv2.COLOR_RGB2YUV_I420}[pix_fmt]
    return np.ascontiguousarray(cv2.cvtColor(rgb, code))


# ---- pictures ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pix_fmt", list(PUSH_PIX_FMTS))
@pytest.mark.parametrize("to", ["rgb24", "yuv420p"])
def test_every_pixel_format_round_trips_into_both_ring_formats(pix_fmt: str, to: str) -> None:
    rgb = picture()
    pushed = check_video(as_format(rgb, pix_fmt), pix_fmt, W, H)
    ring = np.empty((H, W, 3) if to == "rgb24" else (H * 3 // 2, W), np.uint8)
    convert_video(pushed, pix_fmt, to, ring)
    back = ring if to == "rgb24" else cv2.cvtColor(ring, cv2.COLOR_YUV2RGB_I420)
    err = np.abs(back.astype(np.int16) - rgb.astype(np.int16))
    exact = pix_fmt in ("rgb24", "bgr24", "rgba", "bgra") and to == "rgb24"
    assert (err.max() == 0) if exact else (err.mean() < 3.0 and err.max() < 40), (pix_fmt, to, err.mean(), err.max())


def test_nv12_and_i420_carry_the_same_picture() -> None:
    rgb = picture()
    a = np.empty((H * 3 // 2, W), np.uint8)
    b = np.empty_like(a)
    convert_video(as_format(rgb, "nv12"), "nv12", "yuv420p", a)
    convert_video(as_format(rgb, "yuv420p"), "yuv420p", "yuv420p", b)
    assert np.array_equal(a, b)


@pytest.mark.parametrize(("array", "pix_fmt", "error", "fragment"), [
    (np.zeros((H, W, 3), np.uint8), "yuv444p", PushPixelFormatError, "not one the engine takes"),
    (np.zeros((H, W, 3), np.float32), "rgb24", PushDtypeError, "uint8"),
    (np.zeros((H, W, 3), np.uint16), "bgr24", PushDtypeError, "uint8"),
    ([[0] * W] * H, "rgb24", PushDtypeError, "numpy array"),
    (np.zeros((W, H, 3), np.uint8), "rgb24", PushShapeError, "(48, 64, 3)"),  # transposed
    (np.zeros((H, W, 4), np.uint8), "rgb24", PushShapeError, "H x W x C"),  # rgba sent as rgb24
    (np.zeros((H, W, 3), np.uint8), "rgba", PushShapeError, "(48, 64, 4)"),
    (np.zeros((H, W), np.uint8), "yuv420p", PushShapeError, "(H*3/2) x W"),  # Y plane only
    (np.zeros((H * 3 // 2, W + 2), np.uint8), "nv12", PushShapeError, "the node's size"),
    (np.zeros((H * 2, W * 2, 3), np.uint8), "rgb24", PushShapeError, "the node's size"),
])
def test_every_malformed_picture_is_a_typed_error(array: Any, pix_fmt: str, error: type[FormatError],
                                                  fragment: str) -> None:
    with pytest.raises(error) as info:
        check_video(array, pix_fmt, W, H, node="app")
    assert fragment in info.value.message and "'app'" in info.value.message
    assert info.value.code in range(1212, 1217)


def test_push_shapes() -> None:
    assert push_shape("rgb24", 1280, 720) == (720, 1280, 3)
    assert push_shape("bgra", 1280, 720) == (720, 1280, 4)
    assert push_shape("nv12", 1280, 720) == push_shape("yuv420p", 1280, 720) == (1080, 1280)


# ---- PCM -----------------------------------------------------------------------------------------

def sine(rate: int, channels: int, seconds: float, dtype: type[Any]) -> np.ndarray[Any, Any]:
    t = np.arange(round(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t)
    data = np.repeat(mono[:, None], channels, axis=1)
    return (data * 32767).astype(np.int16) if dtype is np.int16 else data.astype(np.float32)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (44100, 1), (22050, 2), (96000, 6), (8000, 1)])
def test_every_sample_format_rate_and_layout_round_trips_to_the_node_format(dtype: type[Any], rate: int,
                                                                            channels: int) -> None:
    conv = PcmConverter(48000, 2)
    pcm = sine(rate, channels, 1.0, dtype)
    out = []
    for chunk in np.array_split(pcm, 7):  # in uneven chunks: the waveform must join across them
        checked, fmt = check_audio(np.ascontiguousarray(chunk), rate)
        assert fmt == ("s16" if dtype is np.int16 else "flt")
        out.append(conv.convert(checked, fmt, rate))
    got = np.concatenate(out)
    assert got.dtype == np.int16 and got.shape[1] == 2
    assert abs(len(got) - 48000) < 200, len(got)  # the resampler holds back a few samples
    left = got[200:40000, 0].astype(np.float64) / 32767
    expected_rms = 0.5 / np.sqrt(2) * (1 if channels <= 2 else np.sqrt(2) / 2 * 0 + 1)
    rms = float(np.sqrt(np.mean(left ** 2)))
    assert rms > 0.1, rms  # the tone is there (a downmix of 5.1 lowers it, never to silence)
    # one waveform: 440 Hz, no jumps at chunk joins (the largest step of a 440 Hz sine at 48 kHz is small)
    assert np.max(np.abs(np.diff(left))) < 0.06 * max(1.0, rms / expected_rms)
    spectrum = np.abs(np.fft.rfft(left))
    peak_hz = np.argmax(spectrum) * 48000 / len(left)
    assert abs(peak_hz - 440) < 3, peak_hz


@pytest.mark.parametrize(("array", "rate", "fmt", "error", "fragment"), [
    (np.zeros((100, 2), np.float64), 48000, None, PushDtypeError, "int16 (s16) or float32"),
    (np.zeros((100, 2), np.int16), 48000, "flt", PushDtypeError, "flt PCM is float32"),
    (np.zeros((100, 2), np.int16), 48000, "s32", PushPixelFormatError, "s16 or flt"),
    (np.zeros((0, 2), np.int16), 48000, None, PushShapeError, "at least one"),
    (np.zeros((10, 2, 2), np.int16), 48000, None, PushShapeError, "(samples, channels)"),
    (np.zeros((2, 4800), np.int16), 48000, None, PushAudioError, "transposed"),
    (np.zeros((100, 2), np.int16), 4000, None, PushAudioError, "8000..192000"),
    (np.zeros((100, 2), np.int16), 48000.0, None, PushAudioError, "an int"),
    ("pcm", 48000, None, PushDtypeError, "numpy array"),
])
def test_every_malformed_pcm_chunk_is_a_typed_error(array: Any, rate: Any, fmt: str | None,
                                                     error: type[FormatError], fragment: str) -> None:
    with pytest.raises(error) as info:
        check_audio(array, rate, fmt, node="app")
    assert fragment in info.value.message


def test_mono_given_as_a_vector_is_one_channel() -> None:
    pcm, fmt = check_audio(np.zeros(480, np.float32), 48000)
    assert pcm.shape == (480, 1) and fmt == "flt"


# ---- the wire ------------------------------------------------------------------------------------

def test_headers_round_trip_and_garbage_is_a_format_error() -> None:
    h = Header("nv12", (72, 64), pts_ns=123, dropped=4)
    assert unpack_header(pack_header(h)) == h
    for raw in (b"\xc1", b"x" * 600, b"\x93\x01\x02\x03", pack_header(Header("rgb24", (1 << 21, 2)))):
        with pytest.raises(FormatError):
            unpack_header(raw)


# ---- time ----------------------------------------------------------------------------------------

def test_pictures_without_pts_leave_no_faster_than_fps() -> None:
    clock = PushClock(33 * MS)
    assert [clock.stamp(None, 1000 * MS) for _ in range(3)] == [1000 * MS, 1033 * MS, 1066 * MS]
    assert clock.stamp(None, 2000 * MS) == 2000 * MS  # after a pause: its arrival


def test_caller_pts_keep_their_spacing_and_going_back_is_late() -> None:
    clock = PushClock(33 * MS)
    assert clock.stamp(5_000 * MS, 100 * MS) == 100 * MS
    assert clock.stamp(5_040 * MS, 101 * MS) == 140 * MS
    assert clock.stamp(5_020 * MS, 102 * MS) is None  # back in time
    assert clock.stamp(9_000 * MS, 3_000 * MS) == 4_100 * MS  # ahead: kept (the queue and policy bound it)
    assert clock.stamp(9_010 * MS, 9_000 * MS) == 9_000 * MS and clock.resyncs == 1  # fell > 1 s behind


def test_sample_queue_takes_across_chunks_and_drops_oldest() -> None:
    q = SampleQueue(1)
    q.push(np.arange(5, dtype=np.int16).reshape(-1, 1))
    q.push(np.arange(5, 10, dtype=np.int16).reshape(-1, 1))
    assert q.take(3).ravel().tolist() == [0, 1, 2]
    q.drop(4)
    assert q.available == 3 and q.take(3).ravel().tolist() == [7, 8, 9]


# ---- the actor (in-process harness; the socket is replaced by direct calls) ----------------------

def harness(**options: Any) -> ActorHarness:
    opts = {"width": W, "height": H, "fps": 25, "rate": 48000, "channels": 2, "samples_per_frame": 480,
            "latency_ms": 0, **options}
    return ActorHarness(ExternalSource, opts, clock=ManualClock(), pix_fmts={"video": "yuv420p"})


def video_msg(pix_fmt: str = "rgb24", pts_ns: int | None = None) -> tuple[bytes, bytes]:
    arr = as_format(picture(), pix_fmt)
    return pack_header(Header(pix_fmt, arr.shape, pts_ns=pts_ns)), arr.tobytes()


def emitted(actions: Any, pad: str) -> list[Frame]:
    return [a.media for a in actions or [] if isinstance(a, Emit) and a.pad == pad and isinstance(a.media, Frame)]


def test_a_pushed_picture_leaves_on_its_pts_in_the_edge_format() -> None:
    h = harness()
    actor = h.actor
    assert isinstance(actor, ExternalSource)
    for _ in range(3):
        assert actor.take_video(*video_msg("bgr24"), now_ns=0)
    out = emitted(h.tick(0), "video")
    assert len(out) == 1 and out[0].data.shape == (H * 3 // 2, W) and out[0].pts_ns == 0
    assert emitted(h.tick(20 * MS), "video") == []  # the second is due at 40 ms
    assert [f.pts_ns for f in emitted(h.tick(40 * MS), "video")] == [40 * MS]
    back = cv2.cvtColor(np.ascontiguousarray(out[0].data), cv2.COLOR_YUV2RGB_I420)
    assert np.abs(back.astype(int) - picture().astype(int)).mean() < 3


@pytest.mark.parametrize(("policy", "kept"), [("drop_newest", [0, 1]), ("drop_oldest", [2, 3])])
def test_a_caller_faster_than_real_time_is_dropped_by_policy_and_counted(policy: str, kept: list[int]) -> None:
    h = harness(policy=policy, depth=2)
    actor = h.actor
    assert isinstance(actor, ExternalSource)
    results = []
    for k in range(4):
        header, payload = video_msg(pts_ns=k * 40 * MS)
        results.append(actor.take_video(header, payload, now_ns=0))
    assert actor.metrics()["dropped"] == 2 and actor.metrics()["frames_in"] == 4
    assert [p // (40 * MS) for p, _, _ in actor._pictures] == kept


def test_malformed_messages_are_counted_and_skipped() -> None:
    h = harness()
    actor = h.actor
    assert isinstance(actor, ExternalSource)
    header, payload = video_msg()
    assert not actor.take_video(b"\xc1garbage", payload, 0)
    assert not actor.take_video(header, payload[:-1], 0)  # truncated
    assert not actor.take_video(pack_header(Header("rgb24", (H, W, 4))), payload, 0)  # lies about its shape
    assert not actor.take_audio(pack_header(Header("s16", (10, 2), rate=48000)), b"\x00" * 3, 0)
    assert actor.metrics()["bad_messages"] == 4 and actor.metrics()["frames_in"] == 0


def test_pcm_is_cut_into_frames_on_the_sample_clock_and_a_pause_re_anchors() -> None:
    h = harness()
    actor = h.actor
    assert isinstance(actor, ExternalSource)
    pcm = sine(44100, 1, 0.1, np.float32)
    assert actor.take_audio(pack_header(Header("flt", pcm.shape, rate=44100)), pcm.tobytes(), 0)
    frames = emitted(h.tick(100 * MS), "audio")
    assert len(frames) >= 8 and [f.pts_ns for f in frames] == [k * 10 * MS for k in range(len(frames))]
    assert all(f.data.shape == (480, 2) and f.data.dtype == np.int16 for f in frames)
    assert emitted(h.tick(2000 * MS), "audio") == []  # the caller paused: nothing to emit
    assert actor.take_audio(pack_header(Header("flt", pcm.shape, rate=44100)), pcm.tobytes(), 2000 * MS)
    assert actor.metrics()["audio_resyncs"] == 1
    assert emitted(h.tick(2000 * MS), "audio")[0].pts_ns == 2000 * MS


def test_the_ingress_command_tells_the_caller_what_to_push() -> None:
    h = harness(policy="drop_oldest", depth=3)
    reply = h.control("ingress")
    assert reply["video_format"]["pix_fmt"] == "yuv420p" and reply["video_format"]["width"] == W
    assert reply["policy"] == "drop_oldest" and reply["depth"] == 3


def test_the_jitter_buffer_delays_pictures_and_sound_alike() -> None:
    h = harness(latency_ms=100)
    actor = h.actor
    assert isinstance(actor, ExternalSource)
    pcm = sine(48000, 2, 0.05, np.int16)
    assert actor.take_video(*video_msg(), now_ns=1000 * MS)
    assert actor.take_audio(pack_header(Header("s16", pcm.shape, rate=48000)), pcm.tobytes(), 1000 * MS)
    waiting = h.tick(1050 * MS)
    assert emitted(waiting, "video") == emitted(waiting, "audio") == []  # both wait in the buffer
    out = h.tick(1100 * MS)
    assert emitted(out, "video")[0].pts_ns == emitted(out, "audio")[0].pts_ns == 1100 * MS


def test_block_never_drops_pcm_it_has_received() -> None:
    h = harness(policy="block", audio_queue_ms=50)
    actor = h.actor
    assert isinstance(actor, ExternalSource)
    pcm = sine(48000, 2, 0.2, np.int16)  # more than the queue: received, so kept
    assert actor.take_audio(pack_header(Header("s16", pcm.shape, rate=48000)), pcm.tobytes(), 0)
    assert actor.metrics()["audio_dropped_ms"] == 0 and actor.metrics()["audio_queued_ms"] >= 190


def test_a_late_node_catches_up_on_queued_pcm_instead_of_starting_again() -> None:
    h = harness()
    actor = h.actor
    assert isinstance(actor, ExternalSource)
    pcm = sine(48000, 2, 0.1, np.int16)
    header = pack_header(Header("s16", pcm.shape, rate=48000))
    assert actor.take_audio(header, pcm.tobytes(), 0)
    assert actor.take_audio(header, pcm.tobytes(), 500 * MS)  # the node had no tick for 0.5 s
    frames = emitted(h.tick(500 * MS), "audio")
    assert actor.metrics()["audio_resyncs"] == 0
    assert [f.pts_ns for f in frames] == [k * 10 * MS for k in range(len(frames))] and len(frames) >= 19


def test_an_ingress_path_too_long_for_a_unix_socket_is_a_resource_error_naming_the_fix() -> None:
    actor = harness().actor
    assert isinstance(actor, ExternalSource)
    actor._zmq = zmq.Context()
    try:
        with pytest.raises(ResourceError) as info:
            actor._bind("video", "ipc:///tmp/" + "x" * 120 + ".sock")
        assert "MEDIAENGINE_RUNTIME_DIR" in info.value.message and "107 bytes" in info.value.message
    finally:
        actor.stop()
