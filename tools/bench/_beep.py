"""Beeps on the wall clock: how the `latency` benchmark measures audio latency and the A/V offset.

The audio source (`bench_beep` in the engine, the feeder for the ffmpeg CLI) plays the usual test tone
only during the first `BURST_S` of every `PERIOD_S` of *wall-clock* time on its own sample timeline
(sample n stands for wall time `wall0 + n / rate`), and silence otherwise.  A puller that finds a
beep's first sample in the decoded audio knows when that sample was due: the multiple of `PERIOD_S`
just before it decoded it (the latency is far below `PERIOD_S`).  So, per beep:

- audio latency = wall clock when the decoded audio holding the beep's onset was available - its due time;
- audio stream offset = the onset's presentation time (pts) - its due time; the same for the video
  (pts - the stamp's wall time), and A/V offset = audio stream offset - video stream offset: how much
  later than the picture of the same instant a player that follows the timestamps plays the sound
  (positive: audio late).

All of it is pure and unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

PERIOD_S = 0.5
BURST_S = 0.03
#: an onset is the first sample above this share of full scale after at least QUIET_S of quiet
THRESHOLD = 0.05
QUIET_S = 0.2


def beep_mask(first_sample: int, count: int, rate: int, wall0: float) -> NDArray[np.bool_]:
    """True for the samples of `[first_sample, first_sample + count)` that fall inside a beep."""
    t = wall0 + (first_sample + np.arange(count, dtype=np.float64)) / rate
    mask: NDArray[np.bool_] = np.mod(t, PERIOD_S) < BURST_S
    return mask


def gate(pcm: NDArray[np.int16], first_sample: int, rate: int, wall0: float) -> NDArray[np.int16]:
    """The tone `pcm` (samples, channels) with everything outside the beeps silenced."""
    mask = beep_mask(first_sample, pcm.shape[0], rate, wall0)
    out: NDArray[np.int16] = np.where(mask[:, None], pcm, np.int16(0)).astype(np.int16)
    return out


class OnsetFinder:
    """Finds beep onsets in decoded audio fed frame by frame (mono float, full scale 1.0)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._quiet = 0  # samples below the threshold since the last loud one

    def feed(self, mono: NDArray[Any]) -> list[int]:
        """Indexes into `mono` where a beep starts."""
        loud = np.flatnonzero(np.abs(mono) >= THRESHOLD)
        need = round(QUIET_S * self.rate)
        onsets: list[int] = []
        prev = -1 - self._quiet  # index of the last loud sample (negative: in earlier frames)
        for i in loud:
            if i - prev - 1 >= need:
                onsets.append(int(i))
            prev = int(i)
        self._quiet = len(mono) - 1 - prev if len(loud) else self._quiet + len(mono)
        return onsets


def due_time(decoded_wall_s: float) -> float:
    """The wall time a beep decoded at `decoded_wall_s` was due: the multiple of PERIOD_S just before."""
    return math.floor(decoded_wall_s / PERIOD_S) * PERIOD_S


def av_figures(beeps: Sequence[Sequence[float]], frames: Sequence[Sequence[float]]) -> dict[str, list[float]]:
    """Per beep the audio latency (s) and per beep the A/V offset (s), from the puller's records.

    `beeps`: [onset pts s, decoded wall s, decoded monotonic s]; `frames`: video records
    [counter, stamp ms, decoded wall ms, decoded monotonic s, pts s], both already cut to the window.
    """
    video = sorted(f[4] - f[1] / 1000.0 for f in frames if len(f) > 4)
    latency = [wall - due_time(wall) for _pts, wall, _mono in beeps]
    if not video:
        return {"audio_latency_s": latency, "av_offset_s": []}
    v_off = video[len(video) // 2]
    return {"audio_latency_s": latency,
            "av_offset_s": [(pts - due_time(wall)) - v_off for pts, wall, _mono in beeps]}
