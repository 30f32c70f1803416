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
