"""AAC-LC audio encoder (FFmpeg's native `aac` through PyAV): s16 PCM in, raw AAC packets out.

```yaml
- {id: aenc, kind: audio_encoder, inputs: {in: mic}, options: {bitrate_kbps: 64}}
```

- Input frames may hold any number of samples; they are converted to float planar and regrouped
  into the 1024-sample frames AAC needs.
- Timestamps are in a 1/rate time base on the engine timeline: the first sample's pts comes from
  `Frame.pts_ns`, later samples simply count on, so the stream stays contiguous whatever jitter the
  capture timestamps have.  When the input drifts from that count by more than `resync_ms` (a gap
  after an upstream restart, or an overlap), the encoder resyncs: the partial frame is padded with
  silence, and the count restarts at the input's pts (an overlap is cut off the new input instead,
  so pts always increase).  Packet pts are the encoder's: 1024 samples of priming before the first
  input sample.
- AAC packets are all keyframes.  The first packet, and one about every second after it, carries the
  stream `params` (see `mediaengine.sdk.codec`) with the AudioSpecificConfig in `extradata`.
- `bitrate_kbps` is live: the AAC encoder reads it for every frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Emit, EndOfStream, Event, InPort, OutPort, option
from mediaengine.sdk.codec import audio_params, default_layout, packet_from_av
from mediaengine.sdk.errors import EncoderError, FormatError, FormatMismatchError, OptionError
from mediaengine.sdk.formats import AAC, NS, AudioFormat, Format, Frame, Packet

FRAME_SIZE = 1024  # samples per AAC-LC frame
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


@dataclass(frozen=True)
class AudioEncoderOptions:
    bitrate_kbps: int = option(64, range=(16, 320), live=True, doc="AAC bit rate; live (16..320)")
    resync_ms: float = option(20.0, doc="resync pts to the input when it drifts from the sample count by more")
    params_every_s: float = option(1.0, doc="attach stream params to a packet at least this often")


def s16_to_planar(pcm: np.ndarray[Any, np.dtype[np.int16]],
                  out: np.ndarray[Any, np.dtype[np.float32]]) -> None:
    """Interleaved int16 (samples, channels) -> planar float32 (channels, samples) in [-1, 1), into `out`."""
    np.multiply(pcm.T, np.float32(1.0 / 32768.0), out=out, casting="unsafe")


def check_options(options: AudioEncoderOptions) -> None:
    """The checks `option()` cannot declare: durations that must be > 0."""
    if options.resync_ms <= 0 or options.params_every_s <= 0:
        raise OptionError("resync_ms and params_every_s must be > 0")


class AudioEncoder(Actor[AudioEncoderOptions]):
    inputs = {"in": InPort("audio", policy="block")}
    outputs = {"out": OutPort("encoded", default=True)}
    Options = AudioEncoderOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        check_options(options)
        fmt = input_formats.get("in")
        if isinstance(fmt, AudioFormat):
            _check_format(fmt)

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        return {"out": AAC}

    def setup(self, ctx: Context) -> Actions:
        self.node_id = ctx.node_id
        fmt = ctx.input_formats.get("in")
        if not isinstance(fmt, AudioFormat):
            raise FormatMismatchError(f"audio_encoder needs an audio input format, got {fmt!r}")
        _check_format(fmt)
        self.fmt = fmt
        self.rate = fmt.rate
        self.layout = default_layout(fmt.channels)
        self.time_base = Fraction(1, fmt.rate)
        self._ctx: av.AudioCodecContext | None = None
        self._acc = np.zeros((fmt.channels, FRAME_SIZE), np.float32)  # the frame being filled
        self._fill = 0  # samples in _acc
        self._frame_pts: int | None = None  # pts of _acc[:, 0]
        self._params_due = 0  # packets until params go out again (0 = on the next one)
        self.frames_in = 0
        self.samples_in = 0
        self.resyncs = 0  # resync episodes
        self._resyncing = False
        self.dropped_samples = 0
        self.packets_out = 0
        return [self._open()]

    def _open(self) -> Event:
        """Open the AAC encoder; returns the `encoder_started` event for the hook to return."""
        try:
            ctx = av.CodecContext.create("aac", "w")
            assert isinstance(ctx, av.AudioCodecContext)
            ctx.sample_rate = self.rate
            ctx.layout = self.layout
            ctx.format = "fltp"
            ctx.bit_rate = self.options.bitrate_kbps * 1000
            ctx.time_base = self.time_base
            ctx.flags |= av.codec.context.Flags.global_header
            ctx.open()
        except (av.FFmpegError, ValueError) as e:
            raise EncoderError(f"aac failed to open at {self.rate} Hz {self.layout} "
                               f"bitrate_kbps={self.options.bitrate_kbps}: {e}",
                               where=self.node_id or None) from e
        self._ctx = ctx
        self._params_due = 0
        return Event("encoder_started", {
            "codec": "aac", "rate": self.rate, "channels": self.fmt.channels, "layout": self.layout,
            "bitrate_kbps": self.options.bitrate_kbps})

    # ---- encoding ----------------------------------------------------------------------------
    def _encode_acc(self) -> list[Action]:
        """Encode the full frame in _acc and start the next one."""
        actions: list[Action] = []
        if self._ctx is None:
            actions.append(self._open())
        assert self._ctx is not None and self._frame_pts is not None
        frame = av.AudioFrame.from_ndarray(self._acc, format="fltp", layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = self._frame_pts
        frame.time_base = self.time_base
        self._frame_pts += FRAME_SIZE
        self._fill = 0
        return actions + self._packets(self._ctx, frame)

    def _packets(self, ctx: av.AudioCodecContext, frame: av.AudioFrame | None) -> list[Action]:
        try:
            out = ctx.encode(frame)
        except av.FFmpegError as e:
            raise EncoderError(f"aac failed to encode: {e}", where=self.node_id or None) from e
        actions: list[Action] = []
        every = max(1, round(self.options.params_every_s * self.rate / FRAME_SIZE))
        for pkt in out:
            params = None
            if self._params_due <= 0:
                params = audio_params(ctx)
                self._params_due = every
            self._params_due -= 1
            packet = packet_from_av(pkt, params=params)
            packet.keyframe = True
            self.packets_out += 1
            actions.append(Emit("out", packet))
        return actions

    def _pad_partial(self) -> list[Action]:
        """Complete a partly filled frame with silence and encode it."""
        if self._fill == 0:
            return []
        self._acc[:, self._fill:] = 0.0
        return self._encode_acc()

    def _flush(self) -> list[Action]:
        actions = self._pad_partial()
        ctx, self._ctx = self._ctx, None
        if ctx is not None:
            actions.extend(self._packets(ctx, None))
        return actions

    # ---- hooks -------------------------------------------------------------------------------
    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame):
            raise FormatError(f"audio_encoder got a packet on {pad!r}, expected raw audio")
        pcm = media.data
        if pcm.ndim != 2 or pcm.shape[1] != self.fmt.channels or pcm.dtype != np.int16:
            raise FormatError(f"audio frame {pcm.dtype}{pcm.shape} on a {self.fmt.describe()} input")
        self.frames_in += 1
        self.samples_in += pcm.shape[0]
        start = (media.pts_ns * self.rate * 2 + NS) // (2 * NS)  # nearest sample
        actions: list[Action] = []
        if self._frame_pts is None:
            self._frame_pts = start
        expected = self._frame_pts + self._fill
        drift = start - expected
        if abs(drift) * 1000 <= self.options.resync_ms * self.rate:
            self._resyncing = False
        else:
            if not self._resyncing:  # one event per episode (an overlap can span many frames)
                self._resyncing = True
                self.resyncs += 1
                actions.append(Event("audio_resync", {"drift_ms": drift * 1000 / self.rate}))
            actions.extend(self._pad_partial())
            assert self._frame_pts is not None
            if start < self._frame_pts:  # overlap: cut what is already encoded off the input
                skip = self._frame_pts - start
                self.dropped_samples += min(skip, pcm.shape[0])
                pcm = pcm[skip:]
            else:
                self._frame_pts = start
        pos = 0
        n = pcm.shape[0]
        while pos < n:
            take = min(FRAME_SIZE - self._fill, n - pos)
            s16_to_planar(pcm[pos:pos + take], self._acc[:, self._fill:self._fill + take])
            self._fill += take
            pos += take
            if self._fill == FRAME_SIZE:
                actions.extend(self._encode_acc())
        return actions

    def metrics(self) -> dict[str, Any]:
        """Counters the runtime publishes with its own metrics."""
        return {"frames_in": self.frames_in, "samples_in": self.samples_in, "resyncs": self.resyncs,
                "dropped_samples": self.dropped_samples, "packets_out": self.packets_out,
                "bitrate_kbps": self.options.bitrate_kbps}

    def on_option_changed(self, name: str, value: Any) -> Actions:
        if name == "bitrate_kbps" and self._ctx is not None:
            self._ctx.bit_rate = int(value) * 1000
            self._params_due = 0  # params carry bit_rate
            return [Event("bitrate_changed", {"bitrate_kbps": int(value)})]
        return None

    def on_eos(self, pad: str) -> Actions:
        actions = self._flush()
        actions.append(EndOfStream())
        return actions

    def stop(self) -> Actions:
        return self._flush()


def _check_format(fmt: AudioFormat) -> None:
    if fmt.sample_fmt != "s16":
        raise FormatMismatchError(f"audio_encoder takes s16 PCM, got {fmt.describe()}")
    if fmt.rate not in AAC_RATES:
        raise FormatMismatchError(f"AAC cannot encode {fmt.rate} Hz ({', '.join(map(str, AAC_RATES))})")
    if not 1 <= fmt.channels <= 8:
        raise FormatMismatchError(f"AAC takes 1..8 channels, got {fmt.channels}")
