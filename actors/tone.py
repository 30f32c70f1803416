"""Audio test source: a continuous sine tone, s16 PCM, on the engine's media clock.

The waveform is a pure function of the absolute sample index (sample n of the engine timeline is
`sin(2*pi*freq*n/rate)`), so consecutive frames join without a click and a restarted tone continues
the same waveform.  Frame i holds samples `[i*spf, (i+1)*spf)` and has
`pts_ns = i*spf * 1e9 // rate`; every frame whose first sample is due by the tick's engine time is
emitted (up to 0.5 s of catch-up after a late tick; beyond that the source jumps to the current
frame).  `volume` and `mute` can be changed while running; a muted tone still emits (silent) frames
so the timeline never has holes.  With `beep_every_s`, the tone sounds only for `beep_ms` from every
multiple of that period of engine time: a beep whose instant is known exactly (lip-sync checks pair it
with the video frame of the same engine time).

    nodes:
      - {id: beep, kind: tone, options: {freq_hz: 1000, channels: 2, volume: 20}}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from mediaengine.sdk.actor import Action, Actor, Context, Emit, OutPort, option
from mediaengine.sdk.errors import OptionError
from mediaengine.sdk.formats import NS, Format, Frame, checked_audio_format
from mediaengine.sdk.pacing import audio_frames_due
from numpy.typing import NDArray

__all__ = ["Tone", "ToneOptions", "beep_gate", "tone_samples"]

#: how far behind an audio source may fall and still emit every missed frame


@dataclass(frozen=True)
class ToneOptions:
    freq_hz: float = option(440.0, doc="tone frequency (below rate / 2)")
    rate: int = option(48000, range=(8000, 192000), doc="sample rate in Hz")
    channels: int = option(1, choices=(1, 2), doc="1 (mono) or 2 (stereo, same signal on both)")
    samples_per_frame: int = option(1024, doc="samples per emitted frame")
    volume: float = option(30.0, range=(0.0, 100.0), live=True, doc="0..100, linear share of full scale (live)")
    mute: bool = option(False, live=True, doc="emit silence instead of the tone (live)")
    beep_every_s: float = option(0.0, range=(0.0, 60.0), doc="0: a continuous tone; else a beep of `beep_ms` "
                                                             "at every multiple of this on the engine clock")
    beep_ms: float = option(50.0, range=(1.0, 1000.0), doc="length of each beep (with beep_every_s)")


# ---- pure functions -------------------------------------------------------------------------------

def tone_samples(first_sample: int, count: int, freq_hz: float, rate: int, channels: int,
                 amplitude: float) -> NDArray[np.int16]:
    """`count` samples of the tone starting at absolute sample `first_sample`, shape (count, channels).

    `amplitude` is a share of full scale (0..1).  The start phase is computed exactly (rational
    arithmetic), so frame boundaries join seamlessly however large `first_sample` gets.
    """
    phase0 = float((Fraction(freq_hz) * first_sample / rate) % 1)
    cycles = phase0 + np.arange(count, dtype=np.float64) * (freq_hz / rate)
    mono = np.rint(np.sin(2.0 * np.pi * cycles) * (amplitude * 32767.0)).astype(np.int16)
    out: NDArray[np.int16] = mono.reshape(count, 1) if channels == 1 else np.repeat(
        mono[:, None], channels, axis=1)
    return out


def beep_gate(first_sample: int, count: int, rate: int, every_s: float, on_ms: float) -> NDArray[np.bool_]:
    """Which of `count` samples from absolute sample `first_sample` sound when beeping: those within
    `on_ms` after a multiple of `every_s` seconds of the engine timeline (sample 0 = engine time 0), so
    a beep starts exactly at 0, every_s, 2*every_s, ... on every source that shares the clock."""
    period = round(every_s * rate)
    on = round(on_ms * rate / 1000)
    gate: NDArray[np.bool_] = ((first_sample + np.arange(count, dtype=np.int64)) % period) < on
    return gate


# ---- the actor ------------------------------------------------------------------------------------

class Tone(Actor[ToneOptions]):
    """Sine tone source."""

    outputs = {"out": OutPort("audio", default=True)}
    Options = ToneOptions
    is_source = True

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        o: ToneOptions = options
        checked_audio_format(o.rate, o.channels, o.samples_per_frame)
        if not 0.0 < o.freq_hz < o.rate / 2:
            raise OptionError(f"freq_hz {o.freq_hz:g} must be between 0 and rate/2 ({o.rate / 2:g})")

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: ToneOptions = options
        return {"out": checked_audio_format(o.rate, o.channels, o.samples_per_frame)}

    def setup(self, ctx: Context) -> None:
        o = self.options
        # ceil: a tick at k * interval is never before frame k's start time
        self.tick_interval_ns = -(-o.samples_per_frame * NS // o.rate)
        self._next: int | None = None

    def on_tick(self, now_ns: int) -> list[Action]:
        o = self.options
        spf = o.samples_per_frame
        amplitude = 0.0 if o.mute else o.volume / 100.0
        actions: list[Action] = []
        for i in audio_frames_due(self._next, now_ns, o.rate, spf):
            first = i * spf
            data = tone_samples(first, spf, o.freq_hz, o.rate, o.channels, amplitude)
            if o.beep_every_s > 0:
                data[~beep_gate(first, spf, o.rate, o.beep_every_s, o.beep_ms)] = 0
            actions.append(Emit("out", Frame(data, pts_ns=first * NS // o.rate, seq=i)))
            self._next = i + 1
        return actions
