"""VideoEncoder / AudioEncoder hooks driven in-process, and the packet helpers in mediaengine.sdk.codec.

Outputs are checked by decoding them again with FFmpeg's decoders (through PyAV): what a muxer
or a viewer downstream would get.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any

import av
import cv2
import msgpack
import numpy as np
import pytest
from mediaengine.actors.audio_encoder import AudioEncoder, AudioEncoderOptions, s16_to_planar
from mediaengine.actors.video_encoder import (
    VideoEncoder,
    VideoEncoderOptions,
    ns_to_ticks,
    rgb_to_i420,
    scale_i420,
)
from mediaengine.runtime.wire import packet_from_wire, packet_to_wire
from mediaengine.sdk.actor import Emit, EndOfStream, Event
from mediaengine.sdk.errors import EncoderError, FormatError, FormatMismatchError, OptionError
from mediaengine.sdk.formats import AAC, H264, NS, AudioFormat, Frame, Packet, VideoFormat
from mediaengine.sdk.resolution import nearest_preset, scaled_size
from mediaengine.testing import ActorHarness

START_NS = 3_200_000_000  # the engine timeline does not start at 0 for an encoder


# ---- media and helpers -------------------------------------------------------------------------

U8 = np.ndarray[Any, np.dtype[np.uint8]]


def gradient(i: int, w: int = 640, h: int = 360) -> U8:
    """A moving colour gradient, read-only like a shared-memory view."""
    x = (np.arange(w, dtype=np.int32)[None, :] + 4 * i) % 256
    y = (np.arange(h, dtype=np.int32)[:, None] * 255 // h)
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = x
    img[..., 1] = y
    img[..., 2] = 255 - x
    img.flags.writeable = False
    return img


def sine(start: int, n: int, rate: int = 48000, channels: int = 2,
         freq: float = 440.0) -> np.ndarray[Any, np.dtype[np.int16]]:
    t = np.arange(start, start + n) / rate
    x = (np.sin(2 * np.pi * freq * t) * 10000).astype(np.int16)
    return np.repeat(x[:, None], channels, axis=1)


def packets(actions: Any) -> list[Packet]:
    return [a.media for a in actions or [] if isinstance(a, Emit) and isinstance(a.media, Packet)]


def events(actions: Any, name: str | None = None) -> list[Event]:
    return [a for a in actions or [] if isinstance(a, Event) and (name is None or a.name == name)]


def video_encoder(w: int = 640, h: int = 360, fps: float = 30.0, **opts: Any) -> ActorHarness:
    return ActorHarness(VideoEncoder, opts, input_formats={"in": VideoFormat(w, h, fps)}, node_id="venc")


def decode_video(pkts: list[Packet]) -> list[av.VideoFrame]:
    params = next(p.params for p in pkts if p.params)
    dec = av.CodecContext.create("h264", "r")
    dec.extradata = params["extradata"]
    frames: list[av.VideoFrame] = []
    for p in pkts:
        pkt = av.Packet(p.data)
        pkt.pts, pkt.dts = p.pts, p.dts
        frames.extend(dec.decode(pkt))
    frames.extend(dec.decode(None))
    return frames


def wire(p: Packet) -> Packet:
    return packet_from_wire(msgpack.unpackb(msgpack.packb(packet_to_wire(p))))


# ---- pure functions ----------------------------------------------------------------------------

def test_rgb_to_i420_is_bt601_limited_range() -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:, :2] = 255  # white | black
    out = np.empty((6, 4), np.uint8)
    rgb_to_i420(rgb, out)
    assert list(out[0]) == [235, 235, 16, 16]  # Y: limited range
    assert abs(int(out[4, 0]) - 128) <= 1 and abs(int(out[5, 0]) - 128) <= 1  # grey: neutral chroma
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    y = rgb_to_i420(red, np.empty((3, 2), np.uint8))[0, 0]
    assert abs(int(y) - round(16 + 219 * 0.299)) <= 1  # BT.601 luma weight of red


def test_ns_to_ticks_rounds_to_nearest() -> None:
    assert ns_to_ticks(START_NS) == 288_000
    assert ns_to_ticks(33_333_333) == 3000
    assert ns_to_ticks(5_555) == 0 and ns_to_ticks(5_556) == 1  # 1 tick = 11111.1 ns
    assert ns_to_ticks(NS, Fraction(1, 48000)) == 48000


def test_s16_to_planar() -> None:
    pcm = np.array([[0, -32768], [16384, 32767]], np.int16)
    out = np.empty((2, 2), np.float32)
    s16_to_planar(pcm, out)
    assert out.tolist() == [[0.0, 0.5], [-1.0, 32767 / 32768]]


def test_packet_wire_round_trip_through_msgpack() -> None:
    p = Packet(b"\x00\x00\x00\x01\x65abc", 288000, 287000, Fraction(1, 90000), True,
               {"codec": "h264", "extradata": b"\x00\x00\x00\x01\x67", "time_base": [1, 90000]},
               {"src_pts_ns": START_NS})
    assert wire(p) == p
    good = packet_to_wire(p)
    for bad in ({"d": "text"}, {"d": 5}, {"tb": [1]}, {"tb": [1, 0]}, {"pts": 1.5}, {"par": [1]}):
        with pytest.raises(FormatError):
            packet_from_wire({**good, **bad})
    del good["tb"]
    with pytest.raises(FormatError):
        packet_from_wire(good)


# ---- video encoder -----------------------------------------------------------------------------

def test_video_encoder_encodes_decodable_stream() -> None:
    enc = video_encoder()
    actions: list[Any] = []
    for i in range(90):
        actions += enc.frame("in", Frame(gradient(i), START_NS + i * NS // 30)) or []
    actions += enc.stop() or []
    pkts = packets(actions)
    started = enc.events("encoder_started")  # returned by setup(), which opened the encoder
    assert len(started) == 1 and started[0].data["width"] == 640 and started[0].data["gop"] == 60
    assert len(pkts) == 90
    pts = [p.pts for p in pkts]
    assert pts[0] == 288_000 and np.all(np.diff(pts) == 3000)
    assert all(p.dts == p.pts and p.time_base == Fraction(1, 90000) for p in pkts)  # bframes=0
    assert [i for i, p in enumerate(pkts) if p.keyframe] == [0, 60]  # fixed GOP, no scene cuts
    assert [i for i, p in enumerate(pkts) if p.params] == [0, 60]
    params = pkts[0].params
    assert params is not None
    assert {k: params[k] for k in ("codec", "width", "height", "pix_fmt", "fps", "time_base")} == {
        "codec": "h264", "width": 640, "height": 360, "pix_fmt": "yuv420p", "fps": 30.0,
        "time_base": [1, 90000]}
    assert params["extradata"].startswith(b"\x00\x00\x00\x01\x67")  # Annex B SPS (GLOBAL_HEADER)
    assert params["bit_rate"] == 1_200_000
    assert pkts[45].meta == {"src_pts_ns": START_NS + 45 * NS // 30}
    msgpack.packb(params)  # travels inline in messages

    frames = decode_video([wire(p) for p in pkts])
    assert len(frames) == 90 and (frames[0].width, frames[0].height) == (640, 360)
    got = frames[45].to_ndarray(format="rgb24").astype(int)
    assert np.abs(got - gradient(45).astype(int)).mean() < 6  # right colours (no R/B swap), decent quality


def test_video_encoder_drops_non_increasing_pts_and_checks_size() -> None:
    enc = video_encoder(320, 240)
    out = packets(enc.frame("in", Frame(gradient(0, 320, 240), START_NS)))
    out += packets(enc.frame("in", Frame(gradient(1, 320, 240), START_NS)))  # same pts
    out += packets(enc.frame("in", Frame(gradient(2, 320, 240), START_NS - NS)))  # older
    out += packets(enc.frame("in", Frame(gradient(3, 320, 240), START_NS + NS // 30)))
    assert [p.pts for p in out] == [288_000, 291_000] and enc.actor.dropped_frames == 2
    with pytest.raises(FormatError):
        enc.frame("in", Frame(gradient(4, 640, 360), START_NS + NS))


def test_forced_keyframe() -> None:
    enc = video_encoder(320, 240)
    pkts: list[Packet] = []
    for i in range(20):
        if i == 11:
            enc.control("keyframe")
        pkts += packets(enc.frame("in", Frame(gradient(i, 320, 240), START_NS + i * NS // 30)))
    assert [i for i, p in enumerate(pkts) if p.keyframe] == [0, 11]
    assert pkts[11].params is not None and pkts[11].data.find(b"\x00\x00\x01\x65") >= 0  # an IDR slice
    assert len(decode_video(pkts)) == 20


def test_the_keyframe_interval_stays_in_seconds_while_max_fps_skips_frames() -> None:
    """gop_s 1 at 30 fps is keyint 30 frames; at max_fps 8 those 30 frames would take 3.75 s.  The encoder
    forces a keyframe once gop_s passed since the last, so they stay about 1 s apart (and 30 frames apart
    at the full rate, as x264 places them)."""
    enc = video_encoder(320, 240, gop_s=1, keepalive_ms=0)
    pkts: list[Packet] = []
    for i in range(60):  # 2 s at the full rate
        pkts += packets(enc.frame("in", Frame(gradient(i, 320, 240), START_NS + i * NS // 30)))
    full = [p.pts for p in pkts if p.keyframe]
    assert [(b - a) / 90_000 for a, b in itertools.pairwise(full)] == [1.0], full
    enc.set(max_fps=8)
    for i in range(60, 60 + 30 * 5):  # 5 s at 8 fps
        pkts += packets(enc.frame("in", Frame(gradient(i, 320, 240), START_NS + i * NS // 30)))
    keys = [p.pts for p in pkts if p.keyframe]
    gaps = [(b - a) / 90_000 for a, b in itertools.pairwise(keys)]
    assert len(keys) >= 6 and all(0.9 <= g <= 1.2 for g in gaps), gaps
    assert len(decode_video(pkts)) == len(pkts)


def test_a_new_keyframe_request_value_makes_the_next_frame_an_idr() -> None:
    """`keyframe_request` (live): what the `keyframe` command does, for a node that steers the encoder
    with Configure (the RTMP sender after dropping stale video)."""
    enc = video_encoder(320, 240)
    pkts: list[Packet] = []
    for i in range(20):
        if i in (7, 13):
            enc.set(keyframe_request=i)
        pkts += packets(enc.frame("in", Frame(gradient(i, 320, 240), START_NS + i * NS // 30)))
    assert [i for i, p in enumerate(pkts) if p.keyframe] == [0, 7, 13]
    assert len(decode_video(pkts)) == 20


def test_bitrate_changes_live_down_in_place_and_up_and_resync_at_the_next_keyframe() -> None:
    """Down: x264 retargets in place at once, then reopens at the new rate at its next keyframe (a VBV
    buffer of the new rate, no extra IDR).  Up above the rate it opened with: at the next keyframe; more
    than 1.2x above it: at once (an IDR)."""
    fps = 15
    enc = video_encoder(320, 240, float(fps), bitrate_kbps=800, gop_s=1, keepalive_ms=0)
    rng = np.random.default_rng(1)
    base = np.zeros((240, 320, 3), np.uint8)
    base[:] = (np.arange(320) * 191 // 320).astype(np.uint8)[None, :, None]
    kbits = np.zeros(6)
    keys: list[int] = []
    opened: list[int] = []  # frame index of each reopen
    for i in range(6 * fps):
        if i == 2 * fps + 5:
            enc.set(bitrate_kbps=200)
        if i == 3 * fps + 5:
            enc.set(bitrate_kbps=230)
        if i == 4 * fps + 5:
            enc.set(bitrate_kbps=1600)
        noisy = base + rng.integers(0, 64, base.shape, dtype=np.uint8)  # hard to compress
        actions = enc.frame("in", Frame(noisy, START_NS + i * NS // fps))
        opened += [i] * len(events(actions, "encoder_started"))
        for p in packets(actions):
            kbits[i // fps] += len(p.data) * 8 / 1000
            if p.keyframe:
                keys.append(i)
    # steady seconds after each change (the second of the change is the settling one)
    assert 600 < kbits[1] < 1000, kbits
    assert 150 < kbits[3] < 250, kbits
    assert 1200 < kbits[5] < 2000, kbits
    changed = [e.data for e in enc.events("bitrate_changed")]  # returned by on_option_changed
    assert changed == [{"bitrate_kbps": 200, "reopened": False, "at_keyframe": False},
                       {"bitrate_kbps": 230, "reopened": False, "at_keyframe": True},
                       {"bitrate_kbps": 1600, "reopened": True, "at_keyframe": False}]
    # the keyframes stay one GOP apart (each reopen at a keyframe is the GOP's own), but for the big raise
    assert keys == [0, 15, 30, 45, 60, 65, 80], keys
    assert opened == [45, 60] and enc.actor.reopens == 3  # (the third: in `set`, before frame 65)
    assert [e.data["bitrate_kbps"] for e in enc.events("encoder_started")] == [800, 200, 230, 1600]


def test_a_small_raise_applies_at_the_next_keyframe_and_a_small_cut_in_place() -> None:
    """A raise of a few percent above the rate x264 opened with cannot apply in place (x264 caps it at
    its VBV maximum): it reopens at the next keyframe all the same.  A cut of a few percent stays in
    place (no reopen: the buffer is about the right size)."""
    enc = video_encoder(320, 240, 15.0, bitrate_kbps=800, gop_s=1, keepalive_ms=0)
    for i in range(45):
        if i == 5:
            enc.set(bitrate_kbps=840)
        if i == 20:
            enc.set(bitrate_kbps=780)
        enc.frame("in", Frame(gradient(i, 320, 240), START_NS + i * NS // 15))
    assert [e.data["bitrate_kbps"] for e in enc.events("encoder_started")] == [800, 840]
    assert enc.actor._ctx is not None and enc.actor._ctx.bit_rate == 780_000


@pytest.mark.parametrize("case", ["15 fps input", "max_fps 10"])
def test_the_bit_rate_is_per_second_whatever_the_frame_rate(case: str) -> None:
    """A 30 fps encoder fed 15 frames a second (a camera slowing down in the dark, a busy machine), or
    skipping to `max_fps` 10, still spends its bit rate per second of timestamps: each frame gets more
    bits.  (FFmpeg opens x264 for constant frame rate input by default, where each frame gets bit rate /
    fps: these cases gave 350 and 233 kbit/s at 700.)"""
    fps, seconds = 30, 7
    enc = video_encoder(320, 240, float(fps), bitrate_kbps=700, keepalive_ms=0)
    if case == "max_fps 10":
        enc.set(max_fps=10)
    rng = np.random.default_rng(3)
    kbits = np.zeros(seconds)
    for i in range(seconds * fps):
        if case == "15 fps input" and i % 2:
            continue  # the frame never came
        noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # hard to compress: x264 spends it all
        for p in packets(enc.frame("in", Frame(noise, START_NS + i * NS // fps))):
            kbits[i // fps] += len(p.data) * 8 / 1000
    # x264 opens at 30 fps; at the first keyframe (2 s) it reopens at the rate the frames come at
    assert [e.data["fps"] for e in enc.events("encoder_started")] == [30.0, 15.0 if case == "15 fps input" else 10.0]
    assert all(600 < k < 800 for k in kbits[3:]), kbits


def test_a_pause_of_the_source_is_no_lower_frame_rate() -> None:
    """An upstream restart leaves a gap in the input's timestamps: one long interval, not a slower
    source.  The encoder keeps the frame rate it opened with (reopening at 15 fps would spend twice the
    bit rate per frame once 30 frames a second came again)."""
    enc = video_encoder(320, 240, 30.0, bitrate_kbps=700, gop_s=1, keepalive_ms=0)
    for i in [*range(45), *range(75, 180)]:  # a second missing at 1.5 s
        enc.frame("in", Frame(gradient(i, 320, 240), START_NS + i * NS // 30))
    assert [e.data["fps"] for e in enc.events("encoder_started")] == [30.0]


def test_resolution_presets_keep_the_aspect_ratio_even_and_never_enlarge() -> None:
    sizes = [scaled_size(1920, 1080, name) for name in ("1080p", "720p", "540p", "480p", "360p", "240p", "180p")]
    assert sizes == [(1920, 1080), (1280, 720), (960, 540), (854, 480), (640, 360), (426, 240), (320, 180)]
    assert scaled_size(640, 480, "360p") == (480, 360)  # 4:3
    assert scaled_size(1280, 720, "1080p") == (1280, 720) and scaled_size(1280, 720, "source") == (1280, 720)
    assert scaled_size(720, 1280, "360p") == (202, 360)  # portrait: the height is the preset's
    assert nearest_preset(544) == "540p" and nearest_preset(200) == "180p"
    with pytest.raises(OptionError):
        scaled_size(1280, 720, "999p")


def test_scale_i420_matches_scaling_the_rgb_picture() -> None:
    rgb = gradient(3, 640, 360)
    i420 = rgb_to_i420(rgb, np.empty((540, 640), np.uint8))
    out = np.full((270, 320), 7, np.uint8)
    assert scale_i420(i420, out) is out
    want = rgb_to_i420(cv2.resize(rgb, (320, 180), interpolation=cv2.INTER_AREA), np.empty((270, 320), np.uint8))
    assert np.abs(out.astype(int) - want.astype(int)).max() <= 3  # every plane written, same picture


@pytest.mark.parametrize("pix_fmt", ["rgb24", "yuv420p"])
def test_resolution_changes_live_with_an_idr_and_new_params(pix_fmt: str) -> None:
    fps = 15
    enc = ActorHarness(VideoEncoder, {"keepalive_ms": 0, "gop_s": 10},
                       input_formats={"in": VideoFormat(640, 360, fps, pix_fmt=pix_fmt)}, node_id="venc")
    pkts: list[Packet] = []
    for i in range(3 * fps):
        if i == fps:
            enc.set(resolution="180p")
        if i == 2 * fps:
            enc.set(resolution="source")
        img = gradient(i)
        data = rgb_to_i420(img, np.empty((540, 640), np.uint8)) if pix_fmt == "yuv420p" else img
        pkts += packets(enc.frame("in", Frame(data, START_NS + i * NS // fps)))
    pkts += packets(enc.stop())
    assert len(pkts) == 3 * fps
    keys = [(i, (p.params or {}).get("width"), (p.params or {}).get("height"))
            for i, p in enumerate(pkts) if p.keyframe]
    assert keys == [(0, 640, 360), (fps, 320, 180), (2 * fps, 640, 360)]  # an IDR with new params at each change
    changed = [e.data for e in enc.events("resolution_changed")]
    assert changed == [
        {"width": 320, "height": 180, "previous": [640, 360], "resolution": "180p", "reason": "set"},
        {"width": 640, "height": 360, "previous": [320, 180], "resolution": "source", "reason": "set"}]
    assert enc.actor.reopens == 2 and enc.metrics()["height"] == 360
    enc.set(resolution="720p")  # above the input: no upscaling, nothing to do
    assert len(enc.events("resolution_changed")) == 2 and enc.actor.reopens == 2
    # each run decodes at its size and shows the right picture
    for start in (0, fps, 2 * fps):
        frames = decode_video(pkts[start:start + fps])
        assert len(frames) == fps
        w, h = frames[0].width, frames[0].height
        got = frames[3].to_ndarray(format="rgb24").astype(int)
        want = cv2.resize(gradient(start + 3), (w, h), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(got - want).mean() < 8, (start, w, h)


def test_keepalive_repeats_last_frame_while_input_stalls() -> None:
    enc = video_encoder(320, 240, keepalive_ms=500)
    tick = NS // 30
    assert enc.actor.tick_interval_ns == round(NS / 30)
    pkts: list[Packet] = []
    now = START_NS
    for i in range(10):  # real frames, arriving as the clock ticks
        pkts += packets(enc.tick(now))
        pkts += packets(enc.frame("in", Frame(gradient(i, 320, 240), now)))
        now += tick
    last_arrival = now - tick
    # stall: the clock ticks on for 2 s, no frames
    stalled: list[Packet] = []
    first_repeat_at = None
    for _ in range(60):
        got = packets(enc.tick(now))
        if got and first_repeat_at is None:
            first_repeat_at = now
        stalled += got
        now += tick
    assert first_repeat_at is not None
    assert 500_000_000 <= first_repeat_at - last_arrival < 500_000_000 + tick
    # the repeats fill the timeline up to the clock, one per frame interval, no gap, no duplicate
    steps = np.diff([pkts[-1].pts] + [p.pts for p in stalled])
    assert np.all(steps == 3000)
    assert len(stalled) == enc.actor.repeated_frames == (now - tick - last_arrival) // tick
    assert all(p.meta["src_pts_ns"] == last_arrival for p in stalled)
    frames = decode_video(pkts + stalled)  # the repeats show the last real picture
    last = frames[9].to_ndarray(format="rgb24").astype(int)
    assert np.abs(frames[-1].to_ndarray(format="rgb24").astype(int) - last).mean() < 2
    # input resumes 5 frames behind the clock: frames the repeats already covered are dropped,
    # the repeats stop at once, pts keep increasing
    resumed: list[Packet] = []
    for i in range(10):
        resumed += packets(enc.frame("in", Frame(gradient(100 + i, 320, 240), now - 5 * tick + i * tick)))
        resumed += packets(enc.tick(now + i * tick))
    all_pts = [p.pts for p in pkts + stalled + resumed]
    assert np.all(np.diff(all_pts) > 0)
    assert enc.actor.dropped_frames == 5 and len(resumed) == 5
    m = enc.metrics()
    assert (m["repeated_frames"], m["dropped_frames"], m["frames_in"]) == (len(stalled), 5, 20)
    assert m["frames_encoded"] == m["packets_out"] == len(all_pts)


def test_keepalive_off_and_after_eos() -> None:
    enc = video_encoder(320, 240, keepalive_ms=0)
    assert enc.actor.tick_interval_ns is None
    enc.frame("in", Frame(gradient(0, 320, 240), START_NS))
    assert not packets(enc.tick(START_NS + 5 * NS))
    enc2 = video_encoder(320, 240)
    enc2.tick(START_NS)
    enc2.frame("in", Frame(gradient(0, 320, 240), START_NS))
    end = enc2.eos("in") or []
    assert isinstance(end[-1], EndOfStream)
    assert not packets(enc2.tick(START_NS + 5 * NS))  # nothing to keep alive after the end


def test_video_options_are_checked_at_load_and_open() -> None:
    fmt = {"in": VideoFormat(640, 360, 30.0)}
    assert VideoEncoder.output_formats(VideoEncoderOptions(), fmt) == {"out": H264}
    with pytest.raises(OptionError, match="'quick' is not one of 'ultrafast'"):
        ActorHarness(VideoEncoder, {"preset": "quick"}, input_formats=fmt)  # the declared choices
    with pytest.raises(OptionError, match=r"50 is out of range 100\.\.20000") as info:
        ActorHarness(VideoEncoder, VideoEncoderOptions(bitrate_kbps=50), input_formats=fmt)
    assert info.value.where == "bitrate_kbps"
    with pytest.raises(OptionError, match="tune 'slow' is not an x264 tune"):
        VideoEncoder.validate(VideoEncoderOptions(tune="zerolatency,slow"), fmt)
    with pytest.raises(FormatMismatchError, match="even"):
        VideoEncoder.validate(VideoEncoderOptions(), {"in": VideoFormat(641, 360, 30.0)})
    with pytest.raises(EncoderError, match=r"libx264 failed to open 32768x16.*preset='veryfast'"):
        ActorHarness(VideoEncoder, {}, input_formats={"in": VideoFormat(32768, 16, 30.0)})  # beyond x264


# ---- audio encoder -----------------------------------------------------------------------------

def audio_encoder(rate: int = 48000, channels: int = 2, spf: int = 480, **opts: Any) -> ActorHarness:
    return ActorHarness(AudioEncoder, opts, input_formats={"in": AudioFormat(rate, channels, spf)}, node_id="aenc")


def feed_audio(enc: ActorHarness, start_sample: int, n_samples: int, sizes: list[int],
               start_ns: int, jitter_ns: int = 0, seed: int = 0) -> list[Any]:
    rng = np.random.default_rng(seed)
    actions: list[Any] = []
    pos = 0
    k = 0
    while pos < n_samples:
        n = min(sizes[k % len(sizes)], n_samples - pos)
        jitter = int(rng.integers(-jitter_ns, jitter_ns + 1)) if pos else 0
        pts = start_ns + (pos * NS) // enc.actor.rate + jitter
        pcm = sine(start_sample + pos, n, enc.actor.rate, enc.actor.fmt.channels)
        actions += enc.frame("in", Frame(pcm, pts)) or []
        pos += n
        k += 1
    return actions


def decode_audio(pkts: list[Packet]) -> np.ndarray[Any, np.dtype[np.float32]]:
    params = next(p.params for p in pkts if p.params)
    dec = av.CodecContext.create("aac", "r")
    dec.extradata = params["extradata"]
    out = []
    for p in pkts:
        for f in dec.decode(av.Packet(p.data)):
            out.append(f.to_ndarray()[0])
    return np.concatenate(out)


def test_audio_encoder_regroups_any_frame_size_with_contiguous_pts() -> None:
    enc = audio_encoder()
    # odd frame sizes and +-2 ms of timestamp jitter: pts must still just count samples
    actions = feed_audio(enc, 0, 96000, [480, 441, 1000, 7], START_NS, jitter_ns=2_000_000)
    actions += enc.stop() or []
    pkts = packets(actions)
    first = START_NS * 48000 // NS
    assert [p.pts for p in pkts] == [first - 1024 + 1024 * i for i in range(len(pkts))]  # priming first
    assert len(pkts) == -(-96000 // 1024) + 1
    assert all(p.keyframe and p.time_base == Fraction(1, 48000) for p in pkts)
    with_params = [i for i, p in enumerate(pkts) if p.params]
    assert with_params[0] == 0 and 40 <= with_params[1] <= 50  # about every second
    params = pkts[0].params
    assert params is not None and params["codec"] == "aac" and params["rate"] == 48000
    assert params["channels"] == 2 and params["layout"] == "stereo" and params["time_base"] == [1, 48000]
    assert params["extradata"][:2] == bytes.fromhex("1190")  # AudioSpecificConfig: AAC-LC, 48 kHz, 2 ch
    assert events(actions, "audio_resync") == []
    pcm = decode_audio([wire(p) for p in pkts])
    body = pcm[4096:90000]
    spectrum = np.abs(np.fft.rfft(body))
    peak_hz = np.argmax(spectrum) * 48000 / len(body)
    assert abs(peak_hz - 440) < 2
    assert 0.25 < np.abs(body).max() < 0.35  # 10000 / 32768


def test_audio_encoder_resyncs_on_gap_and_overlap() -> None:
    enc = audio_encoder(channels=1)
    start = START_NS * 48000 // NS  # in samples
    a = feed_audio(enc, 0, 48000, [480], START_NS)  # 1 s: 46 frames + 896 samples pending
    b = feed_audio(enc, 0, 48000, [480], START_NS + 1_500_000_000)  # after a 500 ms gap
    # 100 ms back (an overlap), 200 ms long: the part already encoded is cut off
    c = feed_audio(enc, 0, 9600, [480], START_NS + 2_400_000_000)
    pkts = packets(a + b + c + (enc.stop() or []))
    pts = np.array([p.pts for p in pkts])  # [0] is the encoder's priming packet, then 1 per frame
    steps = np.diff(pts)
    assert np.all(steps > 0)
    gaps = np.flatnonzero(steps != 1024)
    assert len(gaps) == 1  # one jump, at the gap; the overlap continues the count
    assert pts[gaps[0]] == start + 46 * 1024  # the partial frame before the gap, padded
    assert pts[gaps[0] + 1] == start + 72000  # resynced to the input after the gap
    b_end = start + 72000 + 47 * 1024  # b's partial frame was padded at the overlap
    # c's 480-sample frames are cut while they overlap by more than resync_ms (960 samples); the
    # rest of the overlap (608 samples) is within tolerance and just continues the count
    overlap, cut = b_end - (start + 115200), 0
    while overlap > 960:
        overlap, cut = overlap - 480, cut + 480
    assert cut == 4320 and enc.actor.dropped_samples == cut
    # what survives (5280 samples: 5 frames + a padded one) follows b's padded frame
    assert pts[-7:].tolist() == [b_end - 1024 + 1024 * i for i in range(7)]
    assert [len(events(x, "audio_resync")) for x in (a, b, c)] == [0, 1, 1]
    assert enc.actor.resyncs == 2


def test_audio_bitrate_is_live() -> None:
    enc = audio_encoder(channels=2, spf=1024, bitrate_kbps=128)
    rng = np.random.default_rng(0)
    sizes = [0, 0]
    for i in range(200):
        if i == 100:
            enc.set(bitrate_kbps=32)
        noise = (rng.standard_normal((1024, 2)) * 3000).astype(np.int16)
        for p in packets(enc.frame("in", Frame(noise, START_NS + i * 1024 * NS // 48000))):
            if 20 <= i < 100 or i >= 120:
                sizes[i >= 100] += len(p.data)
    kbps = [sizes[0] * 8 * 48000 / 1024 / 80 / 1000, sizes[1] * 8 * 48000 / 1024 / 80 / 1000]
    assert 110 < kbps[0] < 140 and 25 < kbps[1] < 40, kbps


def test_audio_options_and_formats_checked() -> None:
    assert AudioEncoder.output_formats(AudioEncoderOptions(), {"in": AudioFormat(48000, 1)}) == {"out": AAC}
    with pytest.raises(OptionError, match=r"8 is out of range 16\.\.320"):
        ActorHarness(AudioEncoder, {"bitrate_kbps": 8}, input_formats={"in": AudioFormat(48000, 1)})
    with pytest.raises(FormatMismatchError):
        AudioEncoder.validate(AudioEncoderOptions(), {"in": AudioFormat(12345, 1)})
    enc = audio_encoder(channels=1)
    with pytest.raises(FormatError):
        enc.frame("in", Frame(np.zeros((480, 2), np.int16), START_NS))
