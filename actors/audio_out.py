"""In-ear monitoring: plays an audio stream (the voice, and the music as chosen) to an output device, low latency.

```yaml
- {id: ear, kind: audio_out, inputs: {in: dn}, options: {device: default}}          # the voice only
- {id: ear, kind: audio_out, inputs: {in: mix}, options: {device: "pulse:headphones"}}  # voice + music
```

`device`: `default`, an index, `pulse:NAME` (a PulseAudio sink) or part of a device name (see
`actors/_sound.py`; `mediaengine ctl ear devices` lists the output devices).  `pulse:NAME` plays through
PulseAudio's own client (`pacat`): PortAudio's route to PulseAudio, the ALSA `pulse` plugin, was measured
to play far slower than real time into a null sink.  Frames are written to the
device as they come, without waiting (PortAudio's non-blocking `write_available`); at most
`max_latency_ms` is kept queued (half in the device's buffer, half here), older audio is dropped
(counted), so the monitor stays close to live.

A monitor must never disturb the push: the input edge drops the oldest frames when the monitor is
slow (never blocks the mixer), and a device that is missing, busy or gone is reported as an event
`audio_out_error` (with the code: 1320, 1321, 1322, or 1340 without PortAudio) instead of failing the
node; it is opened again every `retry_s` (event `audio_out_opened`).

Metrics `latency_ms_p50` / `latency_ms_max` (last 200 frames): from a sample's capture (the frame's pts,
the microphone's capture time) to when it leaves the device (now + what is queued here + the device's
reported output latency).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mediaengine.actors._sound import PacatSink, PortAudioSink, list_devices, parse_device, sounddevice
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Event, InPort, Reply, option
from mediaengine.sdk.errors import DeviceLostError, DeviceNotFoundError, EngineError, FormatError
from mediaengine.sdk.formats import NS, AudioFormat, Format, Frame, Packet
from numpy.typing import NDArray

__all__ = ["AudioOut", "AudioOutOptions", "trim_backlog"]


@dataclass(frozen=True)
class AudioOutOptions:
    device: str = option("default", doc="default, an index, pulse:NAME (a PulseAudio sink) or part of a device "
                                        "name; `ctl <node> devices` lists them")
    max_latency_ms: float = option(60.0, range=(10.0, 1000.0), doc="audio queued beyond this is dropped (ms)")
    retry_s: float = option(2.0, range=(0.2, 60.0), doc="a missing or lost device is opened again this often")
    volume: float = option(100.0, range=(0.0, 100.0), live=True, doc="0..100 (live)")
    mute: bool = option(False, live=True, doc="play silence (live)")


def trim_backlog(fifo: NDArray[np.int16], max_samples: int) -> tuple[NDArray[np.int16], int]:
    """Keep at most the newest `max_samples` of the queue; returns (queue, samples dropped)."""
    extra = fifo.shape[0] - max_samples
    if extra <= 0:
        return fifo, 0
    return fifo[extra:], extra


class AudioOut(Actor[AudioOutOptions]):
    """Plays its input to a sound device; device trouble is reported, never fatal."""

    inputs = {"in": InPort("audio", policy="drop_oldest")}
    Options = AudioOutOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        parse_device(options.device)

    def setup(self, ctx: Context) -> Actions:
        self.ctx = ctx
        fmt = ctx.input_formats.get("in")
        if not isinstance(fmt, AudioFormat):
            raise FormatError(f"audio_out needs an audio input, got {fmt!r}", where=ctx.node_id)
        self.fmt = fmt
        self.name = parse_device(self.options.device)
        self.stream: PacatSink | PortAudioSink | None = None
        self.fifo = np.zeros((0, fmt.channels), np.int16)
        self.next_try = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: dict[str, Any] | None = None
        self.latency_ms: list[float] = []  # capture (the frame's pts) to the device's output, recent frames
        self.tick_interval_ns = 5_000_000
        return self._open(ctx.clock())

    def _open(self, now: int) -> list[Action]:
        self.next_try = now + round(self.options.retry_s * NS)
        latency_s = self.options.max_latency_ms / 2000  # half in the device, half queued here
        try:
            if self.name.kind == "pulse":
                stream: PacatSink | PortAudioSink = PacatSink(self.name, self.fmt.rate, self.fmt.channels, latency_s)
            else:
                stream = PortAudioSink(sounddevice(), self.name, self.fmt.rate, self.fmt.channels, latency_s)
        except EngineError as exc:
            return self._error(exc)
        self.stream = stream
        self.fifo = self.fifo[:0]
        return [Event("audio_out_opened", {"device": self.name.describe(), "index": stream.index,
                                           "latency_ms": round(stream.latency_s * 1000, 2)})]

    def _error(self, exc: EngineError) -> list[Action]:
        self.errors += 1
        self.last_error = {"code": exc.code, "name": exc.name, "message": exc.message}
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        return [Event("audio_out_error", {"device": self.name.describe(), **self.last_error,
                                          "retry_s": self.options.retry_s})]

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame) or media.data.dtype != np.int16:
            raise FormatError(f"audio_out expects s16 audio frames on {pad!r}", where=self.ctx.node_id)
        if self.stream is None:
            return None  # no device: the frame is not played (reported when the device went)
        o = self.options
        pcm = media.data
        if o.mute:
            pcm = np.zeros_like(pcm)
        elif o.volume < 100.0:
            pcm = np.rint(pcm.astype(np.float32) * np.float32(o.volume / 100.0)).astype(np.int16)
        self.fifo = np.concatenate([self.fifo, pcm])
        actions = self._write()
        if self.stream is not None:  # when this frame's last sample leaves the speaker, against its pts
            out_ns = (self.ctx.clock() + round(self.stream.latency_s * NS)
                      + self.fifo.shape[0] * NS // self.fmt.rate)
            self.latency_ms = [*self.latency_ms[-199:], (out_ns - media.pts_ns) / 1e6 - 1000 * pcm.shape[0]
                               / self.fmt.rate]
        return actions

    def _write(self) -> list[Action]:
        assert self.stream is not None
        problem = self.stream.problem()
        if problem is not None:
            missing = "no such entity" in problem.lower() or "no such" in problem.lower()
            err = (DeviceNotFoundError if missing else DeviceLostError)(
                f"output sound device {self.name.describe()}: {problem}", where=self.ctx.node_id)
            return self._error(err)
        try:
            n = self.stream.write(np.ascontiguousarray(self.fifo)) if self.fifo.shape[0] else 0
        except EngineError as exc:
            return self._error(exc)
        self.fifo = self.fifo[n:]
        self.written += n
        # what the device could not take yet waits here, up to half the latency budget (the device's own
        # buffer holds the other half)
        max_samples = round(self.options.max_latency_ms * self.fmt.rate / 2000)
        self.fifo, dropped = trim_backlog(self.fifo, max_samples)
        self.dropped += dropped
        return []

    def on_tick(self, now_ns: int) -> Actions:
        if self.stream is None:
            return self._open(now_ns) if now_ns >= self.next_try else None
        return self._write()

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "devices":
            return [Reply(list_devices(sounddevice(), "output"))]
        return super().on_control(command, args)

    def metrics(self) -> dict[str, Any]:
        lat = sorted(self.latency_ms)
        return {"open": self.stream is not None, "written": self.written, "dropped_samples": self.dropped,
                "errors": self.errors, "last_error": self.last_error,
                "latency_ms_p50": round(lat[len(lat) // 2], 1) if lat else None,
                "latency_ms_max": round(lat[-1], 1) if lat else None}

    def stop(self) -> Actions:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        return None
