"""Pure audio work shared by the audio actors (mixer, microphone, music, denoise, audio_out).

Arrays in, arrays out, no clock and no I/O, so every function is unit-tested with numpy alone
(tests/unit/test_audio_dsp.py).  Conventions: PCM on the engine's edges is interleaved int16 of shape
(samples, channels); the work in between is float32 in full-scale units ([-1, 1)); gains are linear
factors; `volume` options are 0..100, a linear share of full scale (as `tone`'s), and `*_db` options are
decibels.

- gains: `volume_gain`, `db_gain`, `gain_db`, `pan_gains` (balance law: the centre keeps both sides at
  unity, so a centred input keeps its level), `ramp_gain` (a linear ramp over one frame: a live change
  takes effect within the frame, without a step, hence without a click);
- `limit`: a peak limiter with instant attack and linear release, the sum never exceeds the ceiling;
- `to_channels`: mono <-> stereo; `s16_to_float` / `float_to_s16` (saturating);
- `Timeline`: samples placed by their position on a timeline, read back as fixed windows with silence
  where nothing arrived (how the mixer turns a stalled input into silence, never into a gap);
- `Framer`: regroups chunks of any size into frames of a fixed size (RNNoise's 480 samples);
- `Resampler`: PyAV's resampler (FFmpeg swresample) from any rate/channels to the actor's, on arrays.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
I16 = NDArray[np.int16]

FULL_SCALE = 32768.0


# ---- gains ----------------------------------------------------------------------------------------

def volume_gain(volume: float) -> float:
    """A 0..100 volume as a linear gain (100 = unity)."""
    return max(0.0, float(volume)) / 100.0


def db_gain(db: float) -> float:
    """Decibels as a linear gain (0 dB = 1, -6 dB ~ 0.5)."""
    return float(10.0 ** (db / 20.0))


def gain_db(gain: float) -> float:
    """A linear gain in decibels (-inf for 0)."""
    return float(20.0 * np.log10(gain)) if gain > 0 else float("-inf")


def pan_gains(pan: float, channels: int) -> NDArray[np.float32]:
    """Per output channel gain for `pan` in -1 (left) .. 1 (right); the balance law: the centre is unity
    on both sides, one side fades out as the other stays at unity.  Mono output is not panned."""
    if channels == 1:
        return np.ones(1, np.float32)
    p = min(1.0, max(-1.0, float(pan)))
    return np.array([min(1.0, 1.0 - p), min(1.0, 1.0 + p)], np.float32)


def ramp_gain(start: NDArray[np.float32], end: NDArray[np.float32], n: int) -> F32:
    """Per-sample, per-channel gains (n, channels) going linearly from `start` to `end`, reaching `end` on
    the last sample.  Equal ends give a constant gain."""
    if np.array_equal(start, end):
        return np.broadcast_to(end.astype(np.float32), (n, end.shape[0]))  # type: ignore[return-value]
    t = (np.arange(1, n + 1, dtype=np.float32) / np.float32(n))[:, None]
    out: F32 = (start[None, :] + (end - start)[None, :] * t).astype(np.float32)
    return out


# ---- conversions ----------------------------------------------------------------------------------

def s16_to_float(pcm: I16) -> F32:
    """int16 PCM to float32 in [-1, 1)."""
    out: F32 = pcm.astype(np.float32) * np.float32(1.0 / FULL_SCALE)
    return out


def float_to_s16(x: F32) -> tuple[I16, int]:
    """float32 in full-scale units to int16, saturating; also returns how many samples clipped."""
    scaled = np.rint(x * np.float32(FULL_SCALE))
    clipped = int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    out: I16 = np.clip(scaled, -32768, 32767).astype(np.int16)
    return out, clipped


def to_channels(x: NDArray[Any], channels: int) -> NDArray[Any]:
    """(samples, c) to (samples, channels): mono is copied to both sides, stereo to mono is the mean."""
    have = x.shape[1]
    if have == channels:
        return x
    if channels == 1:
        return x.mean(axis=1, keepdims=True).astype(x.dtype)
    if have == 1:
        return np.repeat(x, channels, axis=1)
    raise ValueError(f"cannot map {have} channels to {channels}")


# ---- limiter --------------------------------------------------------------------------------------

def limit(x: F32, prev_gain: float, ceiling: float, release_per_sample: float) -> tuple[F32, float]:
    """Peak-limit float32 audio (samples, channels) to `ceiling` (full-scale units).

    The gain drops at once to what the loudest sample needs (instant attack: nothing passes above the
    ceiling) and recovers towards 1 by at most `release_per_sample` per sample (no pumping click).  The
    gain is the same on every channel (the stereo image stays).  Returns (limited audio, the gain at the
    last sample, to pass as `prev_gain` with the next frame).
    """
    n = x.shape[0]
    peak = np.abs(x).max(axis=1)
    with np.errstate(divide="ignore"):
        needed = np.where(peak > ceiling, ceiling / np.maximum(peak, 1e-30), 1.0)
    idx = np.arange(n, dtype=np.float64)
    # g[i] = min(needed[i], g[i-1] + r), g[-1] = prev_gain, capped at 1: a running minimum of
    # (needed[k] - r*k) shifted by r*i solves the recursion without a Python loop
    r = release_per_sample
    g = np.minimum.accumulate(np.minimum(needed - r * idx, prev_gain + r)) + r * idx
    g = np.minimum(g, 1.0)
    out: F32 = (x * g[:, None]).astype(np.float32)
    return out, float(g[-1]) if n else prev_gain


# ---- timeline of an input -------------------------------------------------------------------------

class Timeline:
    """Samples of one input placed at their position (sample index on the mixer's timeline), read back as
    fixed windows.

    A chunk that starts within `tolerance` samples of where the previous one ended is taken as
    contiguous (jitter in capture timestamps, a resampler's delay); a farther one (a gap after a
    restart, or an overlap) is placed at its own position and counted in `resyncs`.  Windows read
    silence where nothing arrived; chunks that ended before the read position are forgotten, and at
    most `max_chunks` are kept (the oldest go first).
    """

    def __init__(self, channels: int, tolerance: int, max_chunks: int = 512) -> None:
        self.channels = channels
        self.tolerance = tolerance
        self.chunks: deque[tuple[int, F32]] = deque(maxlen=max_chunks)
        self.end: int | None = None  # where the last chunk ended
        self.read_pos: int | None = None  # where the next window starts (None before the first read)
        self.resyncs = 0
        self.late_samples = 0  # samples that arrived after their window was read

    def push(self, start: int, samples: F32) -> int:
        """Place a chunk; returns how many of its samples came too late (their window was already read)."""
        if self.end is not None:
            if abs(start - self.end) <= self.tolerance:
                start = self.end
            else:
                self.resyncs += 1
        self.chunks.append((start, samples))
        self.end = start + samples.shape[0]
        if self.read_pos is None:
            return 0
        return max(0, min(self.read_pos, self.end) - start)

    def take(self, start: int, n: int) -> tuple[F32, int]:
        """The window [start, start + n): audio where it arrived, silence elsewhere; also how many of its
        samples arrived (0 = the input contributed nothing: stalled, or not started)."""
        out = np.zeros((n, self.channels), np.float32)
        stop = start + n
        filled = np.zeros(n, bool)
        for c_start, chunk in self.chunks:
            c_end = c_start + chunk.shape[0]
            lo, hi = max(start, c_start), min(stop, c_end)
            if lo < hi:
                out[lo - start:hi - start] = chunk[lo - c_start:hi - c_start]
                filled[lo - start:hi - start] = True
        while self.chunks and self.chunks[0][0] + self.chunks[0][1].shape[0] <= stop:
            self.chunks.popleft()
        self.read_pos = stop
        return out, int(filled.sum())

    def drop_before(self, start: int) -> None:
        """Forget audio before `start`; what had not been read yet (skipped) counts in `late_samples`."""
        unread_from = self.read_pos if self.read_pos is not None else start
        while self.chunks:
            c_start, chunk = self.chunks[0]
            c_end = c_start + chunk.shape[0]
            if c_start >= start:
                break
            self.late_samples += max(0, min(c_end, start) - max(c_start, unread_from))
            if c_end <= start:
                self.chunks.popleft()
            else:
                self.chunks[0] = (start, chunk[start - c_start:])
                break


# ---- framing --------------------------------------------------------------------------------------

class Framer:
    """Regroups chunks of any length (samples, channels) into frames of exactly `size` samples."""

    def __init__(self, size: int, channels: int, dtype: Any = np.float32) -> None:
        self.size = size
        self.buf = np.zeros((0, channels), dtype)

    def push(self, chunk: NDArray[Any]) -> list[NDArray[Any]]:
        """Add a chunk; returns the full frames now available, in order."""
        self.buf = np.concatenate([self.buf, chunk.astype(self.buf.dtype, copy=False)])
        n = self.buf.shape[0] // self.size
        frames = [self.buf[i * self.size:(i + 1) * self.size] for i in range(n)]
        self.buf = self.buf[n * self.size:].copy()
        return frames

    @property
    def pending(self) -> int:
        """Samples waiting for a full frame."""
        return int(self.buf.shape[0])


# ---- resampling -----------------------------------------------------------------------------------

def layout_name(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


class Resampler:
    """int16 (samples, channels) at `in_rate` -> int16 (samples, out_channels) at `out_rate`: the rate through
    PyAV's resampler (FFmpeg swresample, filter state kept across calls so chunk boundaries are seamless),
    the channels with `to_channels` (mono goes to both sides at unity: swresample's upmix would lower it
    by 3 dB).  The same rate and channel count pass through untouched."""

    def __init__(self, in_rate: int, in_channels: int, out_rate: int, out_channels: int) -> None:
        self.in_rate, self.in_channels = in_rate, in_channels
        self.out_rate, self.out_channels = out_rate, out_channels
        self.passthrough = in_rate == out_rate and in_channels == out_channels
        self._rs = None if in_rate == out_rate else av.AudioResampler(
            format="s16", layout=layout_name(in_channels), rate=out_rate)

    def __call__(self, pcm: I16) -> I16:
        if self.passthrough:
            return pcm
        if self._rs is None:
            return to_channels(pcm, self.out_channels)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, np.int16).reshape(1, -1), format="s16",
                                           layout=layout_name(self.in_channels))
        frame.sample_rate = self.in_rate
        parts = [f.to_ndarray().reshape(-1, self.in_channels) for f in self._rs.resample(frame)]
        if not parts:
            return np.zeros((0, self.out_channels), np.int16)
        out: I16 = to_channels(np.concatenate(parts).astype(np.int16, copy=False), self.out_channels)
        return out


def rms_db(x: NDArray[Any]) -> float:
    """RMS level in dBFS of float32 full-scale audio (or int16, scaled first)."""
    f = s16_to_float(x) if x.dtype == np.int16 else x.astype(np.float64)
    rms = float(np.sqrt(np.mean(np.square(f, dtype=np.float64)))) if f.size else 0.0
    return gain_db(rms) if rms > 0 else float("-inf")
