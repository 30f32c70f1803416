"""Microphone: captures a sound device through PortAudio (`sounddevice`) as s16 PCM on the engine's media clock.

```yaml
- {id: mic, kind: microphone, options: {device: default, rate: 48000, channels: 1}}
- {id: mic, kind: microphone, options: {device: "pulse:mic.monitor"}}      # a PulseAudio source by name
```

`device` is `default`, an index, `pulse:NAME` (a PulseAudio/PipeWire source) or part of a device name;
`mediaengine ctl mic devices` lists the input devices (see `actors/_sound.py`).  `rate` 16000, 32000,
44100 or 48000 Hz, mono or stereo, frames of `block_ms`.

Timestamps: the device's samples are counted contiguously (its own clock), and that count is placed on
the engine's timeline: the newest sample read at engine time `now` was captured at `now - input latency`.
The offset between the count and that estimate (the largest over 2 s: a late read, on a loaded machine, only
makes it look smaller) is the drift; it is corrected by dropping or repeating one sample per 50 ms while
it exceeds `drift_tolerance_ms` (about 400 ppm, beyond any real clock's error and inaudible), and by a
jump (an event `mic_resync`) when it exceeds 100 ms (a stall of the sound server).
So the lag never grows: the drift stays within the tolerance.

A device that does not exist, is busy or stops delivering (no sample for a second) is a typed error
naming it (1320, 1321, 1322); the supervisor restarts the node with its backoff while the mixer carries
silence in its place.  Without PortAudio the error is 1340.  `volume` and `mute` are live; a muted
microphone still emits (silent) frames.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mediaengine.actors._audio import volume_gain
from mediaengine.actors._sound import list_devices, open_error, parse_device, resolve, sounddevice
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Emit, Event, OutPort, Reply, option
from mediaengine.sdk.errors import DeviceLostError
from mediaengine.sdk.formats import NS, Format, Frame, checked_audio_format
from numpy.typing import NDArray

__all__ = ["DriftCorrector", "Microphone", "MicrophoneOptions", "apply_volume"]

#: no sample for this long = the device is gone
LOST_AFTER_NS = NS
#: ... except before its first samples: a PulseAudio monitor source was measured to start after 1.8 s
FIRST_DATA_NS = 5 * NS
#: an offset beyond this is corrected by a jump instead of sample by sample
JUMP_MS = 100.0


@dataclass(frozen=True)
class MicrophoneOptions:
    device: str = option("default", doc="default, an index, pulse:NAME (a PulseAudio source) or part of a "
                                        "device name; `ctl <node> devices` lists them")
    rate: int = option(48000, choices=(16000, 32000, 44100, 48000), doc="sample rate (Hz)")
    channels: int = option(1, choices=(1, 2), doc="1 (mono) or 2 (stereo)")
    block_ms: int = option(10, choices=(5, 10, 20), doc="samples per frame, as milliseconds")
    drift_tolerance_ms: float = option(5.0, range=(0.5, 50.0), doc="drift against the engine clock corrected "
                                                                   "beyond this (ms)")
    volume: float = option(100.0, range=(0.0, 100.0), live=True, doc="0..100 (live)")
    mute: bool = option(False, live=True, doc="emit silence instead of the capture (live)")


# ---- pure functions -------------------------------------------------------------------------------

def apply_volume(pcm: NDArray[np.int16], volume: float, mute: bool) -> NDArray[np.int16]:
    """PCM at `volume` (0..100, linear); zeros when muted; unchanged (same array) at 100."""
    if mute:
        return np.zeros_like(pcm)
    if volume >= 100.0:
        return pcm
    out: NDArray[np.int16] = np.rint(pcm.astype(np.float32) * np.float32(volume_gain(volume))).astype(np.int16)
    return out


class DriftCorrector:
    """Places a device's contiguous samples on the engine timeline and keeps them there.

    `place(count, now_ns, latency_ns)` is called with each chunk read at engine time `now_ns`; it returns
    (engine sample index of the chunk's first sample, correction) where correction < 0 means "drop that
    many samples of this chunk" (the device runs fast) and > 0 "repeat the last sample that many times"
    (it runs slow, or samples were lost).  No clock is read here: the caller passes the times.

    Each read gives a raw offset (our index minus the clock's estimate).  A read that happens late (the
    process was not scheduled) only makes the offset look more negative, never more positive, so the
    offset is the largest raw value over the last `window_s`: load does not pass for a slow device.
    Corrections are at most one sample per `min_interval_ms` (about 400 ppm at 50 ms: far beyond a real
    clock's error, inaudible as a pitch change), and a jump beyond `jump_ms`.
    """

    def __init__(self, rate: int, tolerance_ms: float, jump_ms: float = JUMP_MS, window_s: float = 2.0,
                 min_interval_ms: float = 50.0) -> None:
        self.rate = rate
        self.tolerance = tolerance_ms * rate / 1000
        self.jump = jump_ms * rate / 1000
        self.window_samples = round(window_s * rate)
        self.min_interval = round(min_interval_ms * rate / 1000)
        self.next: int | None = None  # engine sample index of the next sample
        self.raw: deque[tuple[int, int]] = deque()  # (sample index, raw offset) of recent reads
        self.offset = 0.0  # the estimate: the largest raw offset in the window, samples
        self.since = 0  # samples since the last correction
        self.dropped = 0
        self.repeated = 0
        self.resyncs = 0

    def place(self, count: int, now_ns: int, latency_ns: int) -> tuple[int, int]:
        expected_end = (now_ns - latency_ns) * self.rate // NS + 1  # index after the newest sample
        if self.next is None:
            self.next = expected_end - count
        start = self.next
        end = start + count
        self.raw.append((end, end - expected_end))
        while self.raw and self.raw[0][0] < end - self.window_samples:
            self.raw.popleft()
        self.offset = float(max(r for _, r in self.raw))
        self.since += count
        correction = 0
        if abs(self.offset) > self.jump:
            self.resyncs += 1
            start = expected_end - count
            self.raw.clear()
            self.offset = 0.0
        elif self.since >= self.min_interval and abs(self.offset) > self.tolerance:
            correction = -1 if self.offset > 0 and count > 1 else 1 if self.offset < 0 else 0
        if correction:
            self.since = 0
            self.raw = deque((i, r + correction) for i, r in self.raw)
            self.offset += correction
        self.dropped += max(0, -correction)
        self.repeated += max(0, correction)
        self.next = start + count + correction
        return start, correction

    @property
    def drift_ms(self) -> float:
        return self.offset * 1000 / self.rate


# ---- the actor ------------------------------------------------------------------------------------

class Microphone(Actor[MicrophoneOptions]):
    """Captures a sound device in real time on `out`."""

    outputs = {"out": OutPort("audio", default=True)}
    Options = MicrophoneOptions
    is_source = True

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        parse_device(options.device)

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: MicrophoneOptions = options
        return {"out": checked_audio_format(o.rate, o.channels, o.rate * o.block_ms // 1000)}

    def setup(self, ctx: Context) -> Actions:
        o = self.options
        self.ctx = ctx
        self.spf = o.rate * o.block_ms // 1000
        self.tick_interval_ns = self.spf * NS // o.rate // 2  # read twice per block: a frame leaves promptly
        self.name = parse_device(o.device)
        self.sd = sounddevice()
        device = resolve(self.sd, self.name, "input")
        try:
            stream = self.sd.InputStream(device=device, samplerate=o.rate, channels=o.channels, dtype="int16",
                                         blocksize=self.spf, latency="low")
            stream.start()
        except (self.sd.PortAudioError, ValueError) as exc:
            raise open_error(self.sd, exc, self.name, "input") from exc
        self.stream = stream
        self.latency_ns = round(float(stream.latency) * NS)
        self.sync = DriftCorrector(o.rate, o.drift_tolerance_ms)
        self.fifo = np.zeros((0, o.channels), np.int16)
        self.fifo_start = 0  # engine sample index of fifo[0]
        self.last_data_ns = ctx.clock()
        self.frames = 0
        self.overflows = 0
        return [Event("mic_opened", {"device": self.name.describe(), "index": device, "rate": o.rate,
                                     "channels": o.channels, "latency_ms": round(self.latency_ns / 1e6, 2)})]

    def on_tick(self, now_ns: int) -> Actions:
        actions: list[Action] = []
        try:
            avail = self.stream.read_available
            data, overflowed = self.stream.read(avail) if avail else (None, False)
        except self.sd.PortAudioError as exc:
            raise DeviceLostError(f"sound device {self.name.describe()} failed while reading: {exc}",
                                  where=self.ctx.node_id) from exc
        now = self.ctx.clock()
        if overflowed:
            self.overflows += 1
        if data is None or not len(data):
            if now - self.last_data_ns > (LOST_AFTER_NS if self.frames else FIRST_DATA_NS):
                raise DeviceLostError(f"sound device {self.name.describe()} delivered nothing for "
                                      f"{(now - self.last_data_ns) / 1e9:.1f}s (unplugged, or the sound server "
                                      "stopped)", where=self.ctx.node_id)
            return None
        self.last_data_ns = now
        pcm = np.asarray(data, np.int16)
        resyncs = self.sync.resyncs
        start, corr = self.sync.place(pcm.shape[0], now, self.latency_ns)
        if corr < 0:
            pcm = pcm[:corr]
        elif corr > 0:
            pcm = np.concatenate([pcm, np.repeat(pcm[-1:], corr, axis=0)])
        if self.sync.resyncs != resyncs or not self.fifo.shape[0]:
            if self.sync.resyncs != resyncs:
                actions.append(Event("mic_resync", {"at_ns": start * NS // self.options.rate}))
            self.fifo = pcm
            self.fifo_start = start
        else:
            self.fifo = np.concatenate([self.fifo, pcm])
        actions.extend(self._emit_frames())
        return actions

    def _emit_frames(self) -> list[Action]:
        o = self.options
        actions: list[Action] = []
        while self.fifo.shape[0] >= self.spf:
            chunk = apply_volume(self.fifo[:self.spf], o.volume, o.mute)
            buf = self.ctx.output_buffer("out")
            if buf is not None:
                buf[...] = chunk
                chunk = buf
            elif chunk.base is not None:
                chunk = chunk.copy()
            actions.append(Emit("out", Frame(chunk, pts_ns=self.fifo_start * NS // o.rate, seq=self.frames)))
            self.frames += 1
            self.fifo = self.fifo[self.spf:]
            self.fifo_start += self.spf
        return actions

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "devices":
            return [Reply(list_devices(self.sd, "input"))]
        return super().on_control(command, args)

    def metrics(self) -> dict[str, Any]:
        return {"frames": self.frames, "overflows": self.overflows, "drift_ms": round(self.sync.drift_ms, 3),
                "dropped_samples": self.sync.dropped, "repeated_samples": self.sync.repeated,
                "resyncs": self.sync.resyncs, "latency_ms": round(self.latency_ns / 1e6, 2)}

    def stop(self) -> Actions:
        stream = getattr(self, "stream", None)
        if stream is not None:
            stream.close()
            self.stream = None
        return None
