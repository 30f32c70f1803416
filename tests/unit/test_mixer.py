"""The `mixer` actor in-process (ActorHarness): levels, live changes without a click, stalls, mute, limiter."""

from __future__ import annotations

import numpy as np
import pytest
from mediaengine.actors.mixer import Mixer
from mediaengine.actors.tone import tone_samples
from mediaengine.sdk.actor import Emit
from mediaengine.sdk.errors import FieldError, OptionError
from mediaengine.sdk.formats import NS, AudioFormat, Frame
from mediaengine.testing import ActorHarness

from tests.audiocheck import db, max_step, tone_level

RATE = 48000
SPF = 480  # the mixer's 10 ms frame
LAT = 40_000_000


def feed(h: ActorHarness, pad: str, fmt: AudioFormat, freq: float, amp: float, frames: range) -> None:
    for i in frames:
        first = i * fmt.samples_per_frame
        h.frame(pad, Frame(tone_samples(first, fmt.samples_per_frame, freq, fmt.rate, fmt.channels, amp),
                           pts_ns=first * NS // fmt.rate, seq=i))


def run_until(h: ActorHarness, t_ns: int) -> None:
    """Tick every 10 ms from 0 to `t_ns` (ticks already past emit nothing again), as the runtime would."""
    for t in range(0, t_ns + 1, 10_000_000):
        h.tick(t)


def out_audio(h: ActorHarness) -> np.ndarray:
    frames = h.emitted("out")
    assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + len(frames)))  # no gap
    return np.concatenate([f.data for f in frames]).astype(np.float32) / 32768.0


def harness(**options: object) -> ActorHarness:
    fmts = {"in_a": AudioFormat(48000, 1, 1024), "in_b": AudioFormat(44100, 2, 1024)}
    return ActorHarness(Mixer, {"rate": RATE, "channels": 2, **options}, input_formats=fmts, node_id="mix")


def test_two_tones_at_their_set_levels_whatever_their_rate_and_channels() -> None:
    h = harness(pads={"in_a": {"volume": 50}, "in_b": {"gain_db": -6}})
    feed(h, "in_a", AudioFormat(48000, 1, 1024), 500, 0.4, range(0, 47))  # ~1 s
    feed(h, "in_b", AudioFormat(44100, 2, 1024), 1500, 0.4, range(0, 44))
    run_until(h, NS + LAT)
    x = out_audio(h)[4800:]  # skip the resampler's start
    assert h.emitted("out")[0].pts_ns == 0 and h.emitted("out")[1].pts_ns == 10_000_000
    for ch in (0, 1):
        assert db(tone_level(x[:, ch], 500, RATE) / 0.4) == pytest.approx(-6.02, abs=0.2)
        assert db(tone_level(x[:, ch], 1500, RATE) / 0.4) == pytest.approx(-6.0, abs=0.2)
    assert h.metrics()["clipped_samples"] == 0


FREQ = 1033.0  # not a whole number of cycles per frame: a step at a frame boundary would show


def test_a_live_volume_change_ramps_within_one_frame_without_a_click() -> None:
    h = harness()
    assert pytest.approx(0.9) == (FREQ * 30 * SPF / RATE) % 1  # the change lands on a steep part of the wave
    fmt = AudioFormat(48000, 1, 1024)
    feed(h, "in_a", fmt, FREQ, 0.5, range(0, 30))
    run_until(h, 300_000_000 + LAT)
    n_before = len(h.emitted("out"))
    assert h.control("input", pad="in_a", volume=20.0)["volume"] == 20.0
    feed(h, "in_a", fmt, FREQ, 0.5, range(30, 60))
    run_until(h, 1_200_000_000 + LAT)
    x = out_audio(h)[:, 0]
    cut = n_before * SPF
    after = x[cut + SPF: cut + SPF + 4800]  # one frame after the command: fully at the new volume
    assert db(tone_level(after, FREQ, RATE) / 0.5) == pytest.approx(db(0.2), abs=0.1)
    slope = 2 * np.pi * FREQ / RATE * 0.5  # the tone's own steepest step
    assert max_step(x[cut - 4800:cut + 4800]) <= slope * 1.01
    assert [e.name for e in h.events("input_changed")] == ["input_changed"]


def emitted_by(h: ActorHarness, t_ns: int) -> list[int]:
    """Tick at `t_ns` (between the runtime's 10 ms ticks is fine) and return the pts of the frames it mixed."""
    return [a.media.pts_ns for a in h.tick(t_ns) if isinstance(a, Emit)]


def test_a_live_change_applies_from_the_next_frame_out_and_the_reply_says_where() -> None:
    """`input` (reply and event) and `set` (event) say where a change lands: from the first frame not yet
    mixed when it arrived (nothing leaves at the old gain after the command), ramped over that frame, and
    that frame leaves the mixer at most one frame after the command: the change is in the audio within
    10 ms, well inside the issue's 50 ms."""
    h = harness()
    fmt = AudioFormat(48000, 1, 1024)
    feed(h, "in_a", fmt, FREQ, 0.5, range(0, 60))  # ~1.3 s
    run_until(h, 300_000_000 + LAT)
    last_out = h.emitted("out")[-1].pts_ns
    h.clock.now_ns += 4_000_000  # the command arrives between two ticks
    reply = h.control("input", pad="in_a", volume=20.0)
    frame_ns = SPF * NS // RATE
    assert reply["at_ns"] == h.clock.now_ns and reply["ramp_ns"] == frame_ns
    assert reply["applies_from_ns"] == last_out + frame_ns  # the mixer's output position: the next frame out
    assert reply["leaves_by_ns"] == reply["applies_from_ns"] + frame_ns + LAT
    assert 0 < reply["leaves_by_ns"] - reply["at_ns"] <= frame_ns
    (event,) = h.events("input_changed")
    assert {k: event.data[k] for k in ("at_ns", "applies_from_ns", "ramp_ns", "leaves_by_ns")} == {
        k: reply[k] for k in ("at_ns", "applies_from_ns", "ramp_ns", "leaves_by_ns")}
    # the frame at applies_from_ns leaves with the tick due at leaves_by_ns, not one tick earlier
    assert emitted_by(h, reply["leaves_by_ns"] - frame_ns) == []
    assert emitted_by(h, reply["leaves_by_ns"]) == [reply["applies_from_ns"]]
    # `set` reports the same way, in its `mix_changed` event (the runtime's reply to `set` is the options)
    h.clock.now_ns += 2_000_000
    assert h.set(volume=50.0) == {"volume": 50.0}
    changed = h.events("mix_changed")[-1].data
    assert changed["volume"] == 50.0 and changed["applies_from_ns"] == reply["applies_from_ns"] + frame_ns
    assert changed["leaves_by_ns"] - changed["at_ns"] <= frame_ns
    run_until(h, 1_200_000_000)
    frames = {f.pts_ns: f.data[:, 0].astype(np.float32) / 32768.0 for f in h.emitted("out")}
    p1, p2 = reply["applies_from_ns"], changed["applies_from_ns"]
    x_before = np.concatenate([frames[p1 - k * frame_ns] for k in (3, 2, 1)])
    assert db(tone_level(x_before, FREQ, RATE) / 0.5) == pytest.approx(0.0, abs=0.05)  # the old gain up to p1

    def ramped(pts: int, start: float, end: float) -> np.ndarray:
        wave = tone_samples(pts * RATE // NS, SPF, FREQ, RATE, 1, 0.5)[:, 0] / 32767
        return wave * np.linspace(start, end, SPF + 1, dtype=np.float32)[1:]

    # the pad's ramp over the frame at p1 (from the old gain, no step at its start), then the master's at p2
    assert np.abs(frames[p1] - ramped(p1, 1.0, 0.2)).max() < 1e-3
    assert np.abs(frames[p2] - ramped(p2, 0.2, 0.1)).max() < 1e-3
    assert frames[p2 + frame_ns].any() and db(tone_level(frames[p2 + frame_ns], FREQ, RATE) / 0.5) == pytest.approx(
        db(0.1), abs=0.05)  # master 50 % on top of the pad's 20 %


def test_a_stalled_input_is_silence_and_the_output_never_stops() -> None:
    h = harness()
    fmt = AudioFormat(48000, 1, 1024)
    feed(h, "in_a", fmt, 1000, 0.5, range(0, 10))  # then nothing: the input stalls
    run_until(h, NS)
    feed(h, "in_a", fmt, 1000, 0.5, range(47, 60))  # back (a restarted source on the same timeline)
    run_until(h, 1_300_000_000)
    frames = h.emitted("out")
    x = out_audio(h)[:, 0]
    assert frames[-1].pts_ns >= 1_200_000_000 and len(frames) == frames[-1].seq + 1
    stalled = x[int(0.3 * RATE):int(0.9 * RATE)]
    assert not stalled.any()  # digital silence where the input had nothing
    assert tone_level(x[int(1.01 * RATE):int(1.2 * RATE)], 1000, RATE) == pytest.approx(0.5, rel=0.01)
    assert [e.name for e in h.events() if e.name.startswith("input_")] == [
        "input_started", "input_stalled", "input_resumed"]
    assert h.metrics()["inputs"]["in_b"]["silent_frames"] == len(frames)  # never linked to anything live


def test_master_mute_is_digital_silence_and_frames_go_on() -> None:
    h = harness()
    fmt = AudioFormat(48000, 1, 1024)
    feed(h, "in_a", fmt, 1000, 0.5, range(0, 50))
    run_until(h, 200_000_000 + LAT)
    assert h.set(mute=True) == {"mute": True}
    run_until(h, NS)
    frames = h.emitted("out")
    muted_from = next(i for i, f in enumerate(frames) if f.pts_ns >= 200_000_000) + 1  # after the ramp frame
    assert all(not f.data.any() for f in frames[muted_from:]) and len(frames) == frames[-1].seq + 1
    assert frames[muted_from - 2].data.any()


def test_the_limiter_keeps_a_loud_sum_from_clipping() -> None:
    h = harness(pads={"in_a": {"volume": 100}, "in_b": {"volume": 100}})
    feed(h, "in_a", AudioFormat(48000, 1, 1024), 440, 0.9, range(0, 47))
    feed(h, "in_b", AudioFormat(44100, 2, 1024), 440, 0.9, range(0, 44))
    run_until(h, NS)
    x = out_audio(h)
    assert np.abs(x).max() <= 10 ** (-1 / 20) + 1e-4 and h.metrics()["clipped_samples"] == 0
    assert h.metrics()["limiter_min_gain"] < 0.7


def test_options_and_commands_are_checked() -> None:
    with pytest.raises(OptionError, match=r"pads\.in_a\.pan"):
        harness(pads={"in_a": {"pan": 3}})
    h = harness()
    with pytest.raises(FieldError, match="input needs pad= one of in_a, in_b"):
        h.control("input", pad="in_c", volume=3)
    with pytest.raises(FieldError, match="volume must be a number"):
        h.control("input", pad="in_a", volume=300)
    assert h.set(pads={"in_b": {"mute": True}}) == {"pads": {"in_b": {"mute": True}}}
    assert h.control("inputs")["in_b"]["mute"] is True
