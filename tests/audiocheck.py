"""Measuring audio in the tests: a tone's frequency and level, gaps, clicks, decoding what a server relays.

The checks are independent of the engine's own code: numpy on decoded PCM, and Debian's `ffmpeg` to
decode a stream or file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def tone_frequency(x: np.ndarray, rate: int) -> float:
    """The strongest frequency of mono float audio, refined between FFT bins (parabolic on log magnitude)."""
    w = np.hanning(len(x))
    mag = np.abs(np.fft.rfft(x * w)) + 1e-12
    k = int(np.argmax(mag[1:])) + 1
    if 1 <= k < len(mag) - 1:
        a, b, c = np.log(mag[k - 1:k + 2])
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return float(k * rate / len(x))


def tone_level(x: np.ndarray, freq: float, rate: int) -> float:
    """Amplitude (full-scale units) of the `freq` sinusoid in mono float audio (least squares fit)."""
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    return float(np.hypot(coef[0], coef[1]))


def db(ratio: float) -> float:
    return float(20 * np.log10(ratio))


def decode_audio(source: str | Path, rate: int, channels: int, *, duration_s: float | None = None,
                 timeout_s: float = 60.0, extra: tuple[str, ...] = ()) -> np.ndarray:
    """Decode the first audio stream of a file or URL with Debian's ffmpeg to float (samples, channels)."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", *extra, "-i", str(source), "-map", "0:a:0"]
    if duration_s is not None:
        cmd += ["-t", f"{duration_s:g}"]
    cmd += ["-ac", str(channels), "-ar", str(rate), "-f", "s16le", "pipe:1"]
    res = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    assert res.returncode == 0, f"ffmpeg could not decode {source}: {res.stderr.decode(errors='replace')[-500:]}"
    pcm = np.frombuffer(res.stdout, "<i2").reshape(-1, channels)
    return pcm.astype(np.float32) / 32768.0


def longest_silence_s(x: np.ndarray, rate: int, floor: float = 1e-3, block: int = 240) -> float:
    """The longest run of blocks whose peak stays below `floor`, in seconds (dropouts in a steady tone)."""
    n = len(x) // block
    quiet = np.abs(x[:n * block]).reshape(n, block).max(axis=1) < floor
    best = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        best = max(best, run)
    return best * block / rate


def max_step(x: np.ndarray) -> float:
    """The largest jump between consecutive samples (a click shows as a step above the signal's slope)."""
    return float(np.abs(np.diff(x)).max()) if len(x) > 1 else 0.0


# ---- numbered beeps ---------------------------------------------------------------------------------------
BEEP_ON_S, BEEP_PERIOD_S = 0.2, 0.5


def beep_freq(i: int) -> float:
    """The frequency of beep number i (0-based): 600, 800, 1000, ... Hz."""
    return 600.0 + 200.0 * i


def write_beeps(path: Path, count: int, rate: int = 48000, amp: float = 0.5, lead_s: float = 0.0) -> float:
    """A mono 16-bit WAV of `lead_s` of silence then `count` numbered beeps (beep i: `beep_freq(i)`, 0.2 s on,
    every 0.5 s); returns its duration in seconds."""
    import wave

    lead = round(lead_s * rate)
    n = lead + round(count * BEEP_PERIOD_S * rate)
    x = np.zeros(n, np.float32)
    on = round(BEEP_ON_S * rate)
    for i in range(count):
        s = lead + round(i * BEEP_PERIOD_S * rate)
        t = np.arange(on) / rate
        x[s:s + on] = amp * np.sin(2 * np.pi * beep_freq(i) * t)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return n / rate


def beeps_heard(x: np.ndarray, rate: int, count: int, block_s: float = 0.02,
                min_blocks: int = 3) -> list[tuple[float, int]]:
    """(start time in s, beep number) of every beep in mono float audio, in order (a beep = a run of at
    least `min_blocks` blocks whose strongest frequency is one of the beeps' and which are loud).

    A beep lasts 0.2 s (10 blocks); a single loud block at a beep's edge (AAC's pre-echo, a block
    straddling the end) must not count as another beep, so a run shorter than `min_blocks` is ignored."""
    block = round(block_s * rate)
    n = len(x) // block
    found: list[tuple[float, int]] = []
    current, start, run = -1, 0, 0
    for b in range(n + 1):
        i = -1
        if b < n:
            seg = x[b * block:(b + 1) * block]
            if np.abs(seg).max() >= 0.05:
                f = float(np.argmax(np.abs(np.fft.rfft(seg * np.hanning(block))))) * rate / block
                k = round((f - 600.0) / 200.0)
                if 0 <= k < count and abs(f - beep_freq(k)) < 80:
                    i = k
        if i == current and i >= 0:
            run += 1
            continue
        if current >= 0 and run >= min_blocks and (not found or found[-1][1] != current or
                                                   start * block / rate - found[-1][0] > 0.3):
            found.append((start * block / rate, current))
        current, start, run = i, b, 1
    return found


# ---- placing decoded audio on the engine timeline --------------------------------------------------------

def engine_offset(x: np.ndarray, timeline: np.ndarray, lo: int = 0, hi: int | None = None) -> int:
    """The engine sample that decoded mono audio `x` starts at: the offset k in [lo, hi) that best matches
    `x` against `timeline` (what the engine timeline is known to hold from sample 0 on, e.g. beeps that
    sound on exact engine instants), by cross-correlation (FFT).  `timeline` must cover hi + len(x).

    A container's start offset, an encoder's priming samples and the server's join point all drop out:
    only the audio itself is used."""
    hi = len(timeline) - len(x) if hi is None else hi
    assert 0 <= lo < hi and hi + len(x) <= len(timeline), (lo, hi, len(x), len(timeline))
    seg = timeline[lo:hi + len(x)].astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(seg) + len(x))))
    corr = np.fft.irfft(np.fft.rfft(seg, n) * np.conj(np.fft.rfft(x.astype(np.float64), n)), n)[:hi - lo]
    return lo + int(np.argmax(corr))


def fit_amplitudes(x: np.ndarray, start: int, regressors: dict[str, tuple[float, np.ndarray | None]],
                   rate: int) -> dict[str, float]:
    """Amplitude of each named sinusoid in `x` (audio whose first sample is engine sample `start`), fitted
    jointly: name -> (frequency, gate or None), the gate being 0/1 per sample where that tone sounds
    (beeps), so a beep inside the window does not leak into the level of a continuous tone."""
    n = start + np.arange(len(x))
    cols: list[np.ndarray] = [np.ones(len(x))]
    for freq, gate in regressors.values():
        g = np.ones(len(x)) if gate is None else gate.astype(np.float64)
        cols += [g * np.sin(2 * np.pi * freq * n / rate), g * np.cos(2 * np.pi * freq * n / rate)]
    basis = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    return {name: float(np.hypot(coef[1 + 2 * i], coef[2 + 2 * i])) for i, name in enumerate(regressors)}
