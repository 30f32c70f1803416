"""Noise reduction on the voice: RNNoise (the `pyrnnoise` package, weights bundled) before the mix.

```yaml
- {id: mic, kind: microphone, options: {device: default}}
- {id: dn,  kind: denoise,    inputs: {in: mic}, options: {strength: 100}}
- {id: mix, kind: mixer,      inputs: {in_voice: dn, in_music: music}}
```

RNNoise works on 48 kHz mono frames of 10 ms (480 samples): the input is resampled to 48 kHz (PyAV's
resampler) when it has another rate, each channel has its own RNNoise state, and the result is resampled
back, so the output has the input's format.  `strength` (0..100, live) mixes the denoised signal with
the original (wet/dry); `enabled` (live) turns it off (the original goes through, on the same timeline).
Changes ramp over one frame: no click.  Output frames are contiguous on the input's timeline, starting at
its first frame's pts; the framing and RNNoise itself add about 10-20 ms (in the `audio` benchmark).
Without pyrnnoise the node fails with 1340 `AudioBackendError`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from mediaengine.actors._audio import Framer, Resampler
from mediaengine.sdk.actor import Actions, Actor, Context, Emit, InPort, OutPort, option
from mediaengine.sdk.errors import AudioBackendError, FormatError, OptionError
from mediaengine.sdk.formats import NS, AudioFormat, Format, Frame, Packet
from numpy.typing import NDArray

__all__ = ["RNNOISE_FRAME", "RNNOISE_RATE", "Denoise", "DenoiseOptions", "Denoiser", "rnnoise_module"]

RNNOISE_RATE = 48000
RNNOISE_FRAME = 480  # 10 ms at 48 kHz


@dataclass(frozen=True)
class DenoiseOptions:
    enabled: bool = option(True, live=True, doc="denoise (true) or pass the original through (live)")
    strength: float = option(100.0, range=(0.0, 100.0), live=True, doc="0..100: share of the denoised "
                                                                       "signal in the output (wet/dry, live)")


def rnnoise_module() -> ModuleType:
    """pyrnnoise's `rnnoise` module (ctypes binding of the bundled library), or AudioBackendError."""
    try:
        from pyrnnoise import rnnoise
    except (ImportError, OSError) as exc:
        raise AudioBackendError(f"noise reduction needs pyrnnoise ({exc}): pip install 'mediaengine[audio]'") from exc
    return rnnoise


class Denoiser:
    """Streaming RNNoise for int16 (samples, channels) at any rate: `process(pcm)` returns what is ready
    (possibly fewer or more samples than given: 480-sample framing at 48 kHz), always in order and without
    gaps.  `mix` is the wet share (0..1) reached at the end of the next call (ramped per frame)."""

    def __init__(self, rate: int, channels: int, rnnoise: ModuleType | None = None) -> None:
        self.rn = rnnoise or rnnoise_module()
        self.rate, self.channels = rate, channels
        self.states = [self.rn.create() for _ in range(channels)]
        self.to48 = Resampler(rate, channels, RNNOISE_RATE, channels)
        self.back = Resampler(RNNOISE_RATE, channels, rate, channels)
        self.framer = Framer(RNNOISE_FRAME, channels, np.float32)
        self.mix = 1.0
        self._applied = 1.0
        self.frames = 0
        self.speech_prob = 0.0

    def _frame(self, frame: NDArray[np.float32]) -> NDArray[np.float32]:
        """One 480-sample frame (float32 in int16 units), denoised and mixed wet/dry."""
        target = self.mix
        if target == 0.0 and self._applied == 0.0:
            return frame
        wet = np.empty_like(frame)
        for ch, state in enumerate(self.states):
            buf = np.ascontiguousarray(frame[:, ch], np.float32)
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            self.speech_prob = float(self.rn.lib.rnnoise_process_frame(state, ptr, ptr))
            wet[:, ch] = buf
        ramp = np.linspace(self._applied, target, RNNOISE_FRAME + 1, dtype=np.float32)[1:, None]
        self._applied = target
        self.frames += 1
        out: NDArray[np.float32] = wet * ramp + frame * (1.0 - ramp)
        return out

    def process(self, pcm: NDArray[np.int16]) -> NDArray[np.int16]:
        at48 = self.to48(pcm)
        outs = [self._frame(f) for f in self.framer.push(at48.astype(np.float32))]
        if not outs:
            return np.zeros((0, self.channels), np.int16)
        den = np.clip(np.rint(np.concatenate(outs)), -32768, 32767).astype(np.int16)
        return self.back(den)

    def close(self) -> None:
        for state in self.states:
            self.rn.destroy(state)
        self.states = []


class Denoise(Actor[DenoiseOptions]):
    """RNNoise on an audio stream; the output has the input's format."""

    inputs = {"in": InPort("audio", policy="block")}
    outputs = {"out": OutPort("audio", default=True)}
    Options = DenoiseOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        fmt = input_formats.get("in")
        if fmt is not None and (not isinstance(fmt, AudioFormat) or fmt.sample_fmt != "s16"):
            raise OptionError(f"denoise takes s16 audio, got {fmt.describe()}")

    def setup(self, ctx: Context) -> Actions:
        self.ctx = ctx
        fmt = ctx.input_formats.get("in")
        if not isinstance(fmt, AudioFormat):
            raise FormatError(f"denoise needs an audio input, got {fmt!r}", where=ctx.node_id)
        self.fmt = fmt
        self.den = Denoiser(fmt.rate, fmt.channels)
        self._update_mix()
        self.fifo = np.zeros((0, fmt.channels), np.int16)
        self.out_index: int | None = None  # sample index of fifo[0] on the timeline
        self.seq = 0
        return None

    def _update_mix(self) -> None:
        o = self.options
        self.den.mix = o.strength / 100.0 if o.enabled else 0.0

    def on_option_changed(self, name: str, value: Any) -> Actions:
        self._update_mix()
        return None

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame) or media.data.dtype != np.int16:
            raise FormatError(f"denoise expects s16 audio frames on {pad!r}", where=self.ctx.node_id)
        rate, spf = self.fmt.rate, self.fmt.samples_per_frame
        if self.out_index is None:
            self.out_index = (media.pts_ns * rate * 2 + NS) // (2 * NS)
        self.fifo = np.concatenate([self.fifo, self.den.process(media.data)])
        actions: Actions = []
        while self.fifo.shape[0] >= spf:
            data = self.fifo[:spf].copy()
            self.fifo = self.fifo[spf:]
            actions.append(Emit("out", Frame(data, pts_ns=self.out_index * NS // rate, seq=self.seq)))
            self.out_index += spf
            self.seq += 1
        return actions

    def metrics(self) -> dict[str, Any]:
        return {"frames": self.den.frames, "speech_prob": round(self.den.speech_prob, 3),
                "mix": self.den.mix}

    def stop(self) -> Actions:
        self.den.close()
        return None
