"""Noise reduction (actors/denoise.py) on real speech: espeak-ng's voice plus white noise at 9 dB SNR."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from mediaengine.actors._audio import Resampler
from mediaengine.actors.denoise import Denoise, Denoiser
from mediaengine.sdk.formats import NS, AudioFormat, Frame
from mediaengine.testing import ActorHarness

RATE = 48000
TEXT = "The quick brown fox jumps over the lazy dog, in a noisy room."


def speech(tmp_path: Path, rate: int = RATE) -> np.ndarray:
    """espeak-ng saying TEXT, as float64 mono at `rate` (int16 units)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs `apt-get install espeak-ng` (scripts/bootstrap.sh)")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "-s", "150", TEXT], check=True, capture_output=True, timeout=60)
    with wave.open(str(wav)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 1)
        src_rate = w.getframerate()
    return Resampler(src_rate, 1, rate, 1)(pcm)[:, 0].astype(np.float64)


def noisy(s: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, np.sqrt(np.mean(s ** 2) / 10 ** (snr_db / 10)), len(s))
    return np.clip(s + noise, -32768, 32767)


def snr_db(y: np.ndarray, clean: np.ndarray, max_lag: int = 2400) -> tuple[float, int]:
    """SNR of `y` against the clean reference, after the best lag (the processing delay) and gain."""
    size = 1 << int(np.ceil(np.log2(len(y) + len(clean))))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(clean, size)), size)  # corr[lag]
    lag = int(np.argmax(corr[:max_lag]))
    n = min(len(y) - lag, len(clean))
    a, b = y[lag:lag + n], clean[:n]
    gain = np.dot(a, b) / np.dot(b, b)
    return float(10 * np.log10(np.sum((gain * b) ** 2) / np.sum((a - gain * b) ** 2))), lag


def run(den: Denoiser, x: np.ndarray, chunk: int) -> np.ndarray:
    pcm = x.astype(np.int16).reshape(-1, 1)
    return np.concatenate([den.process(pcm[i:i + chunk]) for i in range(0, len(pcm), chunk)])[:, 0].astype(float)


def test_rnnoise_improves_the_snr_of_speech_in_white_noise_by_5_db(tmp_path: Path) -> None:
    clean = speech(tmp_path)
    x = noisy(clean, 9.0)
    before, _ = snr_db(x, clean)
    assert before == pytest.approx(9.0, abs=0.3)
    after, lag = snr_db(run(Denoiser(RATE, 1), x, 480), clean)
    assert after - before >= 5.0, (before, after)
    assert lag * 1000 / RATE <= 20.0  # added delay


def test_other_rates_are_resampled_around_rnnoise_and_strength_zero_is_the_original(tmp_path: Path) -> None:
    clean = speech(tmp_path, 16000)
    x = noisy(clean, 9.0)
    after, _ = snr_db(run(Denoiser(16000, 1), x, 160), clean)
    assert after - 9.0 >= 4.0, after
    off = Denoiser(RATE, 1)
    off.mix = 0.0
    off._applied = 0.0
    x48 = noisy(speech(tmp_path), 9.0)
    y = run(off, x48, 1000)
    assert np.array_equal(y, x48.astype(np.int16)[:len(y)].astype(float))  # dry: untouched, no delay


def test_the_actor_keeps_the_timeline_and_toggles_live(tmp_path: Path) -> None:
    fmt = AudioFormat(RATE, 1, 480)
    h = ActorHarness(Denoise, {}, input_formats={"in": fmt}, node_id="dn")
    x = noisy(speech(tmp_path), 9.0).astype(np.int16)
    for i in range(100):
        h.frame("in", Frame(x[i * 480:(i + 1) * 480].reshape(-1, 1), pts_ns=(1000 + i) * 480 * NS // RATE, seq=i))
        if i == 50:
            assert h.set(enabled=False) == {"enabled": False}
    out = h.emitted("out")
    assert len(out) == 100 and out[0].pts_ns == 1000 * 480 * NS // RATE
    assert all(b.pts_ns - a.pts_ns == 10_000_000 for a, b in itertools.pairwise(out))
    assert np.array_equal(out[60].data, x[60 * 480:61 * 480].reshape(-1, 1))  # disabled: the original
    assert h.metrics()["frames"] >= 50
