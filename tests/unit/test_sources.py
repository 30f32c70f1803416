"""Source actors (test_pattern, tone, image_source, file_source): hooks called directly, no processes.

The engine clock is simulated: `now_ns` values are made up, ticks are called at whatever times a test
needs (on time, late, after a gap, in a new instance after a "restart").
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from mediaengine.actors import file_source, image_source, test_pattern, tone
from mediaengine.sdk import stamp
from mediaengine.sdk.actor import Action, Context, Emit, EndOfStream, Finish
from mediaengine.sdk.errors import ConnectError, FileError, MalformedMediaError, OptionError
from mediaengine.sdk.formats import NS, AudioFormat, Frame, VideoFormat
from mediaengine.testing import ActorHarness
from numpy.typing import NDArray

WALL_MS = 1_760_000_123_456


def counters(frames: list[Frame]) -> list[int]:
    """The stamp counter of each frame (fails if one has no readable stamp)."""
    out = []
    for f in frames:
        st = stamp.read(f.data)
        assert st is not None, f"frame seq {f.seq} has no readable stamp"
        out.append(st.counter)
    return out


def emitted(actions: list[Action] | None, pad: str | None = None) -> list[Frame]:
    out = []
    for a in actions or []:
        if isinstance(a, Emit) and (pad is None or a.pad == pad):
            assert isinstance(a.media, Frame)
            out.append(a.media)
    return out


# ---- test_pattern ---------------------------------------------------------------------------------

def make_pattern(**options: Any) -> test_pattern.TestPattern:
    src = test_pattern.TestPattern(test_pattern.TestPatternOptions(**options))
    src.wall_clock_ns = lambda: WALL_MS * 1_000_000
    src.setup(Context())
    return src


def test_pattern_declares_its_format() -> None:
    opts = test_pattern.TestPatternOptions(width=1280, height=720, fps=25.0)
    assert test_pattern.TestPattern.output_formats(opts, {}) == {"out": VideoFormat(1280, 720, 25.0)}
    with pytest.raises(OptionError, match=r"out of range 64\.\.7680"):  # declared with option(range=...)
        ActorHarness(test_pattern.TestPattern, dataclasses.replace(opts, width=16))


def test_pattern_frames_follow_the_engine_clock() -> None:
    src = make_pattern(width=640, height=360, fps=30.0, text="cam A")
    iv = src.tick_interval_ns
    assert iv == 33_333_333
    k0 = 5_000
    frames = []
    for k in range(k0, k0 + 10):
        frames += emitted(src.on_tick(k * iv + 1_000))  # ticks arrive slightly late, as in real life
    assert [f.seq for f in frames] == list(range(k0, k0 + 10))
    assert [f.pts_ns for f in frames] == [k * iv for k in range(k0, k0 + 10)]
    for f in frames:
        assert f.data.shape == (360, 640, 3) and f.data.dtype == np.uint8 and f.data.flags.c_contiguous
    assert emitted(src.on_tick((k0 + 9) * iv + 5_000)) == []  # a second tick in the same interval


def test_pattern_burns_a_readable_stamp_and_moves_every_frame() -> None:
    src = make_pattern(width=640, height=360)
    iv = src.tick_interval_ns
    assert iv is not None
    prev: NDArray[Any] | None = None
    for k in range(100, 110):
        (f,) = emitted(src.on_tick(k * iv))
        assert stamp.read(f.data) == (k, WALL_MS)
        below_text = f.data[200:340]  # well away from the stamp and the captions
        if prev is not None:
            assert not np.array_equal(below_text, prev), f"frame {k} looks like frame {k - 1}"
        prev = below_text.copy()


@pytest.mark.parametrize("pattern", ["bars", "gradient", "noise"])
def test_every_pattern_renders_with_a_stamp(pattern: test_pattern.Pattern) -> None:
    src = make_pattern(width=320, height=180, fps=15.0, pattern=pattern)
    iv = src.tick_interval_ns
    assert iv is not None
    (f,) = emitted(src.on_tick(77 * iv))
    assert stamp.read(f.data) == (77, WALL_MS)
    assert f.data.std() > 20  # there is a picture, not a flat field


def test_pattern_catches_up_a_few_missed_frames_in_distinct_buffers() -> None:
    src = make_pattern()
    iv = src.tick_interval_ns
    assert iv is not None
    emitted(src.on_tick(1_000 * iv))
    late = emitted(src.on_tick(1_004 * iv + iv // 2))  # 3 frames missed
    assert [f.seq for f in late] == [1_001, 1_002, 1_003, 1_004]
    # the runtime copies each frame when it performs the actions: each must be its own picture
    assert [stamp.read(f.data) for f in late] == [(k, WALL_MS) for k in range(1_001, 1_005)]


def test_pattern_jumps_after_a_long_gap() -> None:
    src = make_pattern()
    iv = src.tick_interval_ns
    assert iv is not None
    emitted(src.on_tick(1_000 * iv))
    assert [f.seq for f in emitted(src.on_tick(1_006 * iv))] == list(range(1_001, 1_007))  # 5 missed: ok
    assert [f.seq for f in emitted(src.on_tick(1_100 * iv))] == [1_100]  # too far behind: jump


def test_a_restarted_pattern_continues_the_timeline() -> None:
    first = make_pattern()
    iv = first.tick_interval_ns
    assert iv is not None
    before = [f.seq for k in range(10, 13) for f in emitted(first.on_tick(k * iv))]
    again = make_pattern()  # a new process after a crash: same engine epoch, later time
    after = emitted(again.on_tick(40 * iv + 7))
    assert before == [10, 11, 12]
    assert [(f.seq, f.pts_ns) for f in after] == [(40, 40 * iv)]
    assert stamp.read(after[0].data) == (40, WALL_MS)


# ---- tone -----------------------------------------------------------------------------------------

def make_tone(**options: Any) -> tone.Tone:
    src = tone.Tone(tone.ToneOptions(**options))
    src.setup(Context())
    return src


def test_tone_declares_its_format() -> None:
    assert tone.Tone.output_formats(tone.ToneOptions(channels=2), {}) == {"out": AudioFormat(48000, 2, 1024)}
    with pytest.raises(OptionError, match="channels: 3 is not one of 1, 2"):
        ActorHarness(tone.Tone, {"channels": 3})


def test_tone_frames_have_contiguous_samples_and_exact_pts() -> None:
    src = make_tone(channels=2)
    iv = src.tick_interval_ns
    assert iv is not None
    t0 = 1234 * NS
    frames = [f for m in range(50) for f in emitted(src.on_tick(t0 + m * iv))]
    assert len(frames) == 50
    first = frames[0].seq
    assert [f.seq for f in frames] == list(range(first, first + 50))
    assert [f.pts_ns for f in frames] == [i * 1024 * NS // 48000 for i in range(first, first + 50)]
    for f in frames:
        assert f.data.shape == (1024, 2) and f.data.dtype == np.int16
        assert f.pts_ns <= t0 + 50 * iv  # never emitted before it is due
        np.testing.assert_array_equal(f.data[:, 0], f.data[:, 1])


def test_tone_has_no_discontinuity_at_frame_boundaries() -> None:
    src = make_tone(freq_hz=997.0, volume=80.0)
    iv = src.tick_interval_ns
    assert iv is not None
    frames = [f for m in range(20) for f in emitted(src.on_tick(10**12 + m * iv))]
    pcm = np.concatenate([f.data[:, 0] for f in frames]).astype(np.float64)
    # the same span computed in one go is identical, sample for sample
    whole = tone.tone_samples(frames[0].seq * 1024, len(pcm), 997.0, 48000, 1, 0.8)[:, 0]
    np.testing.assert_array_equal(pcm, whole)
    # and the largest step between neighbours is what a sine of that frequency allows, boundaries included
    max_step = 2 * np.pi * 997.0 / 48000 * 0.8 * 32767 + 1
    assert np.abs(np.diff(pcm)).max() <= max_step
    assert np.abs(pcm).max() == pytest.approx(0.8 * 32767, abs=2)


@pytest.mark.parametrize("first", [0, 48_000 * 3600 * 24 * 365, 2**50])
def test_tone_phase_is_exact_at_huge_sample_indices(first: int) -> None:
    got = tone.tone_samples(first, 64, 440.5, 48000, 1, 1.0)[:, 0]
    # reference: the phase reduced exactly with rationals, sample by sample
    expected = [round(math.sin(2 * math.pi * float((Fraction(440.5) * (first + j) / 48000) % 1)) * 32767)
                for j in range(64)]
    assert np.abs(got.astype(int) - np.array(expected)).max() <= 1


def test_a_restarted_tone_continues_the_waveform() -> None:
    iv = make_tone().tick_interval_ns
    assert iv is not None
    ref = make_tone()
    ref_frames = {f.seq: f.data for m in range(30) for f in emitted(ref.on_tick(5 * NS + m * iv))}
    again = make_tone()  # new instance, later in the same timeline
    (f,) = emitted(again.on_tick(5 * NS + 20 * iv))
    assert f.seq in ref_frames
    np.testing.assert_array_equal(f.data, ref_frames[f.seq])


def test_tone_catches_up_half_a_second_then_jumps() -> None:
    src = make_tone()
    t0 = 3 * NS
    (first,) = emitted(src.on_tick(t0))
    late = emitted(src.on_tick(t0 + 400_000_000))
    assert [f.seq for f in late] == list(range(first.seq + 1, late[-1].seq + 1))
    assert late[-1].pts_ns <= t0 + 400_000_000 < late[-1].pts_ns + 1024 * NS // 48000 + 1
    gap = emitted(src.on_tick(t0 + 5 * NS))
    assert len(gap) == 1 and gap[0].seq == (t0 + 5 * NS) * 48000 // NS // 1024


def test_tone_volume_and_mute_are_live() -> None:
    h = ActorHarness(tone.Tone, {"volume": 30.0})
    iv = h.actor.tick_interval_ns
    assert iv is not None
    (f,) = emitted(h.tick(NS))
    assert np.abs(f.data).max() == pytest.approx(0.3 * 32767, abs=2)
    assert h.set(volume=100) == {"volume": 100.0}  # through the runtime's own `set`
    (f,) = emitted(h.tick(NS + iv))
    assert np.abs(f.data).max() == pytest.approx(32767, abs=2)
    h.set(mute=True)
    (f,) = emitted(h.tick(NS + 2 * iv))
    assert f.data.shape == (1024, 1) and not f.data.any()  # silence, but the frame still comes
    with pytest.raises(OptionError, match=r"node.volume: 101 is out of range 0..100") as info:
        h.set(volume=101)
    assert info.value.code == 1108
    with pytest.raises(OptionError, match="option 'rate' cannot change while running; live options: volume, mute"):
        h.set(rate=44100)


# ---- image_source ---------------------------------------------------------------------------------

@pytest.fixture
def picture(tmp_path: Path) -> tuple[str, NDArray[Any]]:
    """A 100x60 PNG with four coloured quadrants; returns (path, rgb array)."""
    rgb = np.zeros((60, 100, 3), dtype=np.uint8)
    rgb[:30, :50] = (255, 0, 0)
    rgb[:30, 50:] = (0, 255, 0)
    rgb[30:, :50] = (0, 0, 255)
    rgb[30:, 50:] = (250, 200, 10)
    path = tmp_path / "card.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path), rgb


def test_image_source_reads_its_size_at_load_time(picture: tuple[str, NDArray[Any]]) -> None:
    path, _ = picture
    fmts = image_source.ImageSource.output_formats
    assert fmts(image_source.ImageSourceOptions(path=path), {}) == {"out": VideoFormat(100, 60, 15.0)}
    assert fmts(image_source.ImageSourceOptions(path=path, width=50), {}) == {"out": VideoFormat(50, 30, 15.0)}
    assert fmts(image_source.ImageSourceOptions(path=path, width=64, height=64, fps=5.0), {}) == {
        "out": VideoFormat(64, 64, 5.0)}


def test_image_source_emits_the_picture_in_rgb_on_the_clock(picture: tuple[str, NDArray[Any]]) -> None:
    path, rgb = picture
    opts = image_source.ImageSourceOptions(path=path, fps=10.0)
    src = image_source.ImageSource(opts)
    src.setup(Context(output_formats=image_source.ImageSource.output_formats(opts, {})))
    iv = src.tick_interval_ns
    assert iv == 100_000_000
    frames = emitted(src.on_tick(70 * iv)) + emitted(src.on_tick(71 * iv)) + emitted(src.on_tick(74 * iv))
    assert [(f.seq, f.pts_ns) for f in frames] == [(k, k * iv) for k in (70, 71, 72, 73, 74)]
    for f in frames:
        np.testing.assert_array_equal(f.data, rgb)
        assert f.data.flags.c_contiguous and not f.data.flags.writeable


def test_image_source_resizes(picture: tuple[str, NDArray[Any]]) -> None:
    path, _ = picture
    src = image_source.ImageSource(image_source.ImageSourceOptions(path=path, width=200, height=120))
    src.setup(Context())
    (f,) = emitted(src.on_tick(0))
    assert f.data.shape == (120, 200, 3)
    assert tuple(f.data[10, 10]) == (255, 0, 0) and tuple(f.data[110, 190]) == (250, 200, 10)


def test_image_source_missing_file_is_a_file_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope" / "slate.png")
    opts = image_source.ImageSourceOptions(path=missing)
    with pytest.raises(FileError, match=re.escape("slate.png")) as info:
        image_source.ImageSource.output_formats(opts, {})
    assert "fix" in str(info.value)
    sized = dataclasses.replace(opts, width=64, height=64)  # the size is known, the file still checked
    with pytest.raises(FileError, match=re.escape("slate.png")):
        image_source.ImageSource.output_formats(sized, {})
    with pytest.raises(FileError, match=re.escape("slate.png")):
        image_source.ImageSource(sized).setup(Context())


def test_image_source_undecodable_file_is_a_file_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("this is not a picture")
    with pytest.raises(FileError, match="cannot decode"):
        image_source.ImageSource.output_formats(image_source.ImageSourceOptions(path=str(bad)), {})


# ---- file_source ----------------------------------------------------------------------------------

CLIP_FRAMES = 60  # 2 s at 30 fps
CLIP_RATE = 48000
CLIP_SECONDS = 2.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, NDArray[Any]]:
    """A 2 s Matroska file: 320x180 H.264 at 30 fps, frame k stamped with counter k, and a 440 Hz stereo
    PCM tone.  Returns (path, the PCM that went in)."""
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    pcm = tone.tone_samples(0, round(CLIP_SECONDS * CLIP_RATE), 440.0, CLIP_RATE, 2, 0.5)
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = 320, 180, "yuv420p"
        aus = c.add_stream("pcm_s16le", rate=CLIP_RATE, layout="stereo")
        for k in range(CLIP_FRAMES):
            img = np.full((180, 320, 3), 60, dtype=np.uint8)
            img[:, (k * 5) % 300: (k * 5) % 300 + 20] = 200
            stamp.burn(img, k, k)
            vf = av.VideoFrame.from_ndarray(img, "rgb24")
            vf.pts = k
            for p in vs.encode(vf):
                c.mux(p)
        for s in range(0, len(pcm), 1000):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[s: s + 1000]).reshape(1, -1),
                                            format="s16", layout="stereo")
            af.sample_rate, af.pts = CLIP_RATE, s
            for p in aus.encode(af):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        for p in aus.encode(None):
            c.mux(p)
    return str(path), pcm


@pytest.fixture
def open_sources() -> Iterator[list[file_source.FileSource]]:
    """Sources created by a test, stopped (files closed) even if it fails."""
    sources: list[file_source.FileSource] = []
    yield sources
    for s in sources:
        s.stop()


def make_file_source(sources: list[file_source.FileSource], url: str, **options: Any) -> file_source.FileSource:
    src = file_source.FileSource(file_source.FileSourceOptions(url=url, **options))
    src.setup(Context())
    sources.append(src)
    return src


def play(src: file_source.FileSource, start_ns: int, seconds: float) -> list[tuple[int, list[Action]]]:
    """Tick `src` on every tick boundary from `start_ns` for `seconds`; stops after Finish."""
    iv = src.tick_interval_ns
    assert iv is not None
    out = []
    now = start_ns
    while now < start_ns + seconds * NS:
        actions = list(src.on_tick(now) or [])
        out.append((now, actions))
        if any(isinstance(a, Finish) for a in actions):
            break
        now = (now // iv + 1) * iv
    return out


def test_file_source_declares_both_pads() -> None:
    fmts = file_source.FileSource.output_formats(file_source.FileSourceOptions(url="x.mp4"), {})
    assert fmts == {"video": VideoFormat(640, 360, 30.0), "audio": AudioFormat(48000, 2, 1024)}
    with pytest.raises(OptionError, match="nothing to play"):
        file_source.FileSource.validate(
            file_source.FileSourceOptions(url="x.mp4", video=False, audio=False), {})


def test_file_source_plays_in_real_time_then_ends(clip: tuple[str, NDArray[Any]],
                                                   open_sources: list[file_source.FileSource]) -> None:
    url, pcm = clip
    src = make_file_source(open_sources, url)
    vint = round(NS / 30.0)
    start = 1_000 * vint + 12_345
    ticks = play(src, start, 5.0)
    video = [f for _, acts in ticks for f in emitted(acts, "video")]
    audio = [f for _, acts in ticks for f in emitted(acts, "audio")]

    # pacing: nothing before its time, and each video frame exactly when due
    for now, acts in ticks:
        assert all(f.pts_ns <= now for f in emitted(acts))
        v = emitted(acts, "video")
        if v and now < start + CLIP_SECONDS * NS:
            assert v[-1].pts_ns == now // vint * vint

    # video: every file frame once, in order, on the engine timeline, scaled to the declared size
    assert [f.seq for f in video] == list(range(1_000, 1_000 + CLIP_FRAMES))
    assert [f.pts_ns for f in video] == [k * vint for k in range(1_000, 1_000 + CLIP_FRAMES)]
    assert [stamp.read(f.data) for f in video] == [(k, k) for k in range(CLIP_FRAMES)]
    assert all(f.data.shape == (360, 640, 3) and f.data.dtype == np.uint8 and f.data.flags.c_contiguous
               for f in video)

    # audio: fixed-size chunks with contiguous samples holding exactly the file's PCM
    assert all(f.data.shape == (1024, 2) and f.data.dtype == np.int16 for f in audio)
    first = audio[0].seq
    assert [f.seq for f in audio] == list(range(first, first + len(audio)))
    assert [f.pts_ns for f in audio] == [i * 1024 * NS // CLIP_RATE for i in range(first, first + len(audio))]
    samples = np.concatenate([f.data for f in audio])
    lead = -(-1_000 * vint * CLIP_RATE // NS) - first * 1024  # file sample 0 sits at the first video frame
    assert 0 <= lead < 1024 and not samples[:lead].any()
    np.testing.assert_array_equal(samples[lead: lead + len(pcm)], pcm)
    assert not samples[lead + len(pcm):].any() and len(samples) - lead - len(pcm) < 1024

    # the end: end of stream then finish, once, after the 2 s have played
    end_now, end_actions = ticks[-1]
    assert end_actions[-2:] == [EndOfStream(), Finish("end of file")]
    assert start + CLIP_SECONDS * NS <= end_now < start + CLIP_SECONDS * NS + 0.1 * NS
    assert sum(isinstance(a, Finish) for _, acts in ticks for a in acts) == 1
    assert src.on_tick(end_now + 10 * vint) == []


@pytest.mark.parametrize(("fps", "expected"), [
    (15.0, [2 * j for j in range(30)]),                    # every other file frame
    (60.0, [j // 2 for j in range(2 * CLIP_FRAMES)]),       # every file frame twice
])
def test_file_source_holds_the_declared_frame_rate(clip: tuple[str, NDArray[Any]],
                                                    open_sources: list[file_source.FileSource],
                                                    fps: float, expected: list[int]) -> None:
    src = make_file_source(open_sources, clip[0], fps=fps, audio=False, width=320, height=180)
    video = [f for _, acts in play(src, 10 * NS, 4.0) for f in emitted(acts, "video")]
    assert counters(video) == expected
    iv = round(NS / fps)
    assert [f.pts_ns for f in video] == [(10 * NS // iv + j) * iv for j in range(len(expected))]


def test_file_source_loops_seamlessly(clip: tuple[str, NDArray[Any]],
                                      open_sources: list[file_source.FileSource]) -> None:
    url, pcm = clip
    src = make_file_source(open_sources, url, loop=True)
    vint = round(NS / 30.0)
    ticks = play(src, 300 * vint, 5.0)
    actions = [a for _, acts in ticks for a in acts]
    assert not any(isinstance(a, EndOfStream | Finish) for a in actions)
    video = emitted(actions, "video")
    assert len(video) >= 145 and src.loops == 2
    assert [f.seq for f in video] == list(range(300, 300 + len(video)))
    assert counters(video) == [j % CLIP_FRAMES for j in range(len(video))]
    audio = emitted(actions, "audio")
    assert [f.seq for f in audio] == list(range(audio[0].seq, audio[0].seq + len(audio)))
    samples = np.concatenate([f.data for f in audio])
    lead = -(-300 * vint * CLIP_RATE // NS) - audio[0].seq * 1024
    for n in range(2):  # each pass starts exactly one clip length after the previous one
        at = lead + n * len(pcm)
        np.testing.assert_array_equal(samples[at: at + len(pcm)], pcm)


def test_file_source_catches_up_then_jumps(clip: tuple[str, NDArray[Any]],
                                           open_sources: list[file_source.FileSource]) -> None:
    src = make_file_source(open_sources, clip[0], audio=False)
    vint = round(NS / 30.0)
    k0 = 50
    assert [f.seq for f in emitted(src.on_tick(k0 * vint))] == [k0]
    late = emitted(src.on_tick((k0 + 4) * vint))  # 3 frames late: all of them come
    assert [f.seq for f in late] == [k0 + 1, k0 + 2, k0 + 3, k0 + 4]
    assert counters(late) == [1, 2, 3, 4]
    jump = emitted(src.on_tick((k0 + 30) * vint))  # 25 late: only the current frame (file time too)
    assert [f.seq for f in jump] == [k0 + 30]
    assert counters(jump) == [30]


def test_a_restarted_file_source_stays_on_the_engine_timeline(
        clip: tuple[str, NDArray[Any]], open_sources: list[file_source.FileSource]) -> None:
    vint = round(NS / 30.0)
    first = make_file_source(open_sources, clip[0], audio=False)
    assert [f.seq for f in emitted(first.on_tick(100 * vint))] == [100]
    again = make_file_source(open_sources, clip[0], audio=False)  # restarted later: file from the top
    (f,) = emitted(again.on_tick(700 * vint + 5))
    assert (f.seq, f.pts_ns) == (700, 700 * vint)
    assert counters([f]) == [0]


def test_file_source_audio_only_ends_its_video_pad_at_once(
        clip: tuple[str, NDArray[Any]], open_sources: list[file_source.FileSource]) -> None:
    url, _ = clip
    src = make_file_source(open_sources, url, video=False, channels=1, rate=16000, samples_per_frame=320)
    assert src.tick_interval_ns == 20_000_000
    ticks = play(src, 7 * NS, 4.0)
    assert ticks[0][1][0] == EndOfStream("video")
    actions = [a for _, acts in ticks for a in acts]
    assert emitted(actions, "video") == []
    audio = emitted(actions, "audio")
    assert all(f.data.shape == (320, 1) for f in audio)
    assert audio[0].pts_ns == 7 * NS  # audio only: file time 0 is the first frame's start
    total = sum(len(f.data) for f in audio)
    assert CLIP_SECONDS * 16000 <= total < CLIP_SECONDS * 16000 + 320
    mono = np.concatenate([f.data[:, 0] for f in audio]).astype(float)
    spectrum = np.abs(np.fft.rfft(mono[:16000]))
    assert np.argmax(spectrum) == pytest.approx(440, abs=1)  # resampled, still the 440 Hz tone (1 Hz bins)
    assert actions[-2:] == [EndOfStream(), Finish("end of file")]


def test_file_source_missing_file_names_the_url(tmp_path: Path) -> None:
    url = str(tmp_path / "missing-clip.mp4")
    src = file_source.FileSource(file_source.FileSourceOptions(url=url))
    with pytest.raises(FileError, match=re.escape("missing-clip.mp4")) as info:
        src.setup(Context())
    assert isinstance(info.value, FileNotFoundError)


def test_file_source_unreachable_server_is_a_connect_error() -> None:
    src = file_source.FileSource(file_source.FileSourceOptions(url="tcp://127.0.0.1:1"))  # nothing listens
    with pytest.raises(ConnectError, match=re.escape("tcp://127.0.0.1:1")):
        src.setup(Context())


def test_file_source_garbage_file_is_a_malformed_media_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(MalformedMediaError, match=re.escape("junk.mp4") + ".*not valid media"):
        file_source.FileSource(file_source.FileSourceOptions(url=str(junk))).setup(Context())


def test_file_source_without_the_asked_stream_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "silent.mkv"
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        for k in range(3):
            vf = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), dtype=np.uint8), "rgb24")
            vf.pts = k
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
    with pytest.raises(MalformedMediaError, match="audio: false"):
        file_source.FileSource(file_source.FileSourceOptions(url=str(path))).setup(Context())


def test_sample_fifo_reads_with_silence_around_the_data() -> None:
    fifo = file_source.SampleFifo(1)
    fifo.push(np.arange(1, 11, dtype=np.int16).reshape(-1, 1))
    fifo.push(np.arange(11, 21, dtype=np.int16).reshape(-1, 1))
    assert fifo.read(-3, 5)[:, 0].tolist() == [0, 0, 0, 1, 2]
    assert fifo.read(4, 4)[:, 0].tolist() == [5, 6, 7, 8]  # samples 2..3 are dropped
    assert fifo.read(12, 10)[:, 0].tolist() == [13, 14, 15, 16, 17, 18, 19, 20, 0, 0]
    assert fifo.available == 0 and fifo.pos == 20
