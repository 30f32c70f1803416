"""The pure audio functions beside the audio actors (actors/_audio.py and the mixer's), with numpy alone."""

from __future__ import annotations

import numpy as np
import pytest
from mediaengine.actors._audio import (
    Framer,
    Resampler,
    Timeline,
    db_gain,
    float_to_s16,
    gain_db,
    limit,
    pan_gains,
    ramp_gain,
    rms_db,
    s16_to_float,
    to_channels,
    volume_gain,
)
from mediaengine.actors.mixer import mix, mix_frames_due, pad_settings
from mediaengine.sdk.errors import OptionError
from mediaengine.sdk.formats import NS

from tests.audiocheck import tone_frequency, tone_level

RATE = 48000


def sine(freq: float, n: int, amp: float, rate: int = RATE, first: int = 0) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * (first + np.arange(n)) / rate)).astype(np.float32)


def level_at(x: np.ndarray, freq: float, rate: int = RATE) -> float:
    return tone_level(x, freq, rate)


def test_gains() -> None:
    assert volume_gain(100) == 1.0 and volume_gain(30) == pytest.approx(0.3) and volume_gain(0) == 0.0
    assert db_gain(0) == 1.0 and db_gain(-6.0206) == pytest.approx(0.5, rel=1e-4)
    assert gain_db(0.5) == pytest.approx(-6.0206, abs=1e-3) and gain_db(0) == float("-inf")
    assert pan_gains(0, 2).tolist() == [1.0, 1.0]  # the centre keeps the level on both sides
    assert pan_gains(-1, 2).tolist() == [1.0, 0.0] and pan_gains(1, 2).tolist() == [0.0, 1.0]
    assert pan_gains(0.5, 2).tolist() == [0.5, 1.0] and pan_gains(0.7, 1).tolist() == [1.0]


def test_ramp_reaches_the_target_on_the_last_sample_without_a_step() -> None:
    r = ramp_gain(np.array([0.2, 1.0], np.float32), np.array([1.0, 0.0], np.float32), 480)
    assert r.shape == (480, 2) and r[-1].tolist() == [1.0, 0.0]
    assert np.abs(np.diff(r, axis=0)).max() <= 1.0 / 480 + 1e-6  # linear: no jump anywhere
    flat = ramp_gain(np.ones(2, np.float32), np.ones(2, np.float32), 4)
    assert flat.tolist() == [[1.0, 1.0]] * 4


def test_conversions_saturate_and_map_channels() -> None:
    pcm = np.array([[-32768], [0], [16384], [32767]], np.int16)
    assert s16_to_float(pcm)[:, 0].tolist() == [-1.0, 0.0, 0.5, pytest.approx(32767 / 32768)]
    out, clipped = float_to_s16(np.array([[1.5], [-2.0], [0.25]], np.float32))
    assert out[:, 0].tolist() == [32767, -32768, 8192] and clipped == 2
    stereo = to_channels(pcm, 2)
    assert stereo.shape == (4, 2) and (stereo[:, 0] == stereo[:, 1]).all()
    assert to_channels(np.array([[0.2, 0.4]], np.float32), 1)[0, 0] == pytest.approx(0.3)
    assert rms_db(np.full((100, 1), 0.5, np.float32)) == pytest.approx(-6.02, abs=0.01)


def test_limiter_keeps_the_sum_under_the_ceiling_and_releases_smoothly() -> None:
    ceiling = db_gain(-1.0)
    x = np.stack([sine(440, 4800, 1.6)] * 2, axis=1)  # 4 dB over full scale
    out, g = limit(x, 1.0, ceiling, 1.0 / (0.2 * RATE))
    assert np.abs(out).max() <= ceiling + 1e-6 and g < 1.0
    assert np.allclose(out[:, 0], out[:, 1])  # one gain for both channels
    quiet = np.stack([sine(440, 4800, 0.1)] * 2, axis=1)
    out2, g2 = limit(quiet, g, ceiling, 1.0 / (0.2 * RATE))
    gains = np.abs(out2[:, 0]) / np.maximum(np.abs(quiet[:, 0]), 1e-9)
    assert g2 == pytest.approx(min(1.0, g + 4800 / (0.2 * RATE)))  # linear release
    assert np.abs(np.diff(gains[np.abs(quiet[:, 0]) > 0.01])).max() < 0.01  # no step in the gain
    loud_ok, g3 = limit(quiet, 1.0, ceiling, 1e-3)
    assert np.array_equal(loud_ok, quiet) and g3 == 1.0  # below the ceiling: untouched


def test_timeline_places_samples_by_position_and_reads_silence_where_nothing_came() -> None:
    t = Timeline(1, tolerance=10)
    t.push(100, np.ones((50, 1), np.float32))
    t.push(153, np.full((50, 1), 2, np.float32))  # 3 samples late: jitter, taken as contiguous at 150
    w, filled = t.take(90, 120)
    assert filled == 100 and w[:10, 0].tolist() == [0] * 10
    assert w[10:60, 0].tolist() == [1] * 50 and w[60:110, 0].tolist() == [2] * 50 and w[110:, 0].sum() == 0
    assert t.resyncs == 0
    t.push(400, np.ones((10, 1), np.float32))  # a gap after a restart: placed where it says
    assert t.resyncs == 1
    w, filled = t.take(210, 190)
    assert filled == 0 and not w.any()
    t.drop_before(405)  # the mixer skipped ahead: the 5 unread samples are lost
    assert t.late_samples == 5
    w, filled = t.take(405, 10)
    assert filled == 5


def test_framer_regroups_any_chunk_sizes() -> None:
    f = Framer(480, 1)
    assert f.push(np.zeros((300, 1))) == []
    frames = f.push(np.arange(1000, dtype=np.float32).reshape(-1, 1))
    assert [fr.shape for fr in frames] == [(480, 1), (480, 1)] and f.pending == 340
    assert frames[0][300, 0] == 0 and frames[1][0, 0] == 180


def test_resampler_changes_rate_and_channels_keeping_frequency_and_level() -> None:
    rs = Resampler(44100, 1, 48000, 2)
    tone = (sine(1000, 44100, 0.5, rate=44100) * 32767).astype(np.int16).reshape(-1, 1)
    out = np.concatenate([rs(tone[i:i + 1024]) for i in range(0, 44100, 1024)])  # chunked: seamless
    assert out.shape[1] == 2 and abs(out.shape[0] - 48000) < 200
    x = s16_to_float(out[2000:2000 + 32768, 0])
    assert tone_frequency(x, RATE) == pytest.approx(1000, abs=0.5)
    assert np.array_equal(out[:, 0], out[:, 1])
    assert level_at(x, 1000) == pytest.approx(0.5, rel=0.02)
    same = Resampler(48000, 2, 48000, 2)
    pcm = np.ones((10, 2), np.int16)
    assert same(pcm) is pcm


def test_mix_sums_at_the_set_gains_and_ramps_a_change() -> None:
    n = 48000
    a = np.stack([sine(500, n, 0.3)] * 2, axis=1)
    b = np.stack([sine(1500, n, 0.3)] * 2, axis=1)
    one, half = np.ones(2, np.float32), np.full(2, 0.5, np.float32)
    out = mix([a, b], [one, half], [one, half], 1.0, 1.0)
    assert level_at(out[:, 0], 500) == pytest.approx(0.3, rel=0.01)
    assert level_at(out[:, 0], 1500) == pytest.approx(0.15, rel=0.01)
    ramped = mix([a[:480]], [one], [half], 1.0, 1.0)
    assert ramped[-1, 0] == pytest.approx(a[479, 0] * 0.5, abs=1e-6)
    muted = mix([a[:480]], [one], [one], 0.0, 0.0)
    assert not muted.any()


def test_mix_frames_due_waits_for_the_latency_and_the_whole_window() -> None:
    spf = 480
    assert mix_frames_due(None, 0, 40_000_000, RATE, spf) == []
    assert mix_frames_due(None, 49_999_999, 40_000_000, RATE, spf) == []
    assert mix_frames_due(None, 50_000_000, 40_000_000, RATE, spf) == [0]
    assert mix_frames_due(0, 50_000_000 + 3 * NS // 100, 40_000_000, RATE, spf) == [0, 1, 2, 3]


def test_pad_settings_are_checked_and_name_the_field() -> None:
    s = pad_settings({"volume": 50, "pan": -1}, "pads.in_a")
    assert s.gains(2).tolist() == [0.5, 0.0]
    assert pad_settings({"mute": True}, "p").gains(2).tolist() == [0.0, 0.0]
    assert pad_settings({"gain_db": -6.0206}, "p").gains(1)[0] == pytest.approx(0.5, rel=1e-4)
    with pytest.raises(OptionError, match=r"pads.in_a.volume: volume must be a number in 0..100"):
        pad_settings({"volume": 120}, "pads.in_a")
    with pytest.raises(OptionError, match="unknown pad setting 'gain'"):
        pad_settings({"gain": 1}, "pads.in_a")


def test_tone_beeps_start_exactly_on_the_engine_seconds() -> None:
    from mediaengine.actors.tone import beep_gate

    gate = beep_gate(47_000, 2_000, RATE, 1.0, 10.0)  # samples 47000..48999: the beep at 1 s is 48000..48479
    assert np.flatnonzero(gate).tolist() == list(range(1_000, 1_480))
    assert beep_gate(0, 480, RATE, 0.5, 5.0).sum() == 240
