"""Audio mixer: any number of inputs (request pads `in_<name>`), one output on the mixer's own clock.

```yaml
- {id: mix, kind: mixer, inputs: {in_mic: mic, in_music: music},
   options: {rate: 48000, channels: 2, pads: {in_music: {volume: 30}, in_mic: {pan: 0}}}}
```

- Inputs of any rate and channel count are resampled and re-channelled with PyAV's resampler to the
  mixer's `rate` and `channels`.  Each input's samples are placed on the engine timeline by their pts
  (`_audio.Timeline`: small jitter is absorbed, a gap or overlap resyncs).
- The mixer runs on its own clock: every `frame_ms` it emits frame k (samples `[k*spf, (k+1)*spf)`,
  `pts_ns = k*spf*1e9/rate`) once that window is `latency_ms` in the past, so inputs have that long to
  arrive.  An input that has nothing for a window (stalled, restarting, never started) contributes
  silence there: the output timeline never stops and has no gap.  A running input whose audio comes
  after its window was mixed (a loaded machine) raises the latency by that much (event
  `latency_raised`, up to `max_latency_ms`): later frames leave later, the timeline stays contiguous.
- Per input: `volume` 0..100 (linear share), `gain_db`, `mute`, `pan` (-1 left .. 1 right), set in the
  `pads` option (live, with `set`) or one pad at a time with the command `input pad=in_mic volume=50`.
  Master: `volume`, `mute` (digital silence, the stream goes on), both live.  Every gain change ramps
  linearly over one frame: it takes effect within `frame_ms`, without a click.
- When a change is in the audio (`change_timing`): a change applies from the mixer's output position
  when the command arrives (the first frame not yet mixed: nothing leaves the mixer at the old gain
  after that), ramps over that frame and holds from its end.  The `input` reply and the
  `input_changed` / `mix_changed` events carry `at_ns` (engine time the mixer took the change),
  `applies_from_ns` (pts of the first output sample on the ramp), `ramp_ns` and `leaves_by_ns` (engine
  time that frame is due out of the mixer: `applies_from_ns + ramp_ns + latency`).  So the new level
  leaves the mixer at most one frame (`frame_ms`, 10 or 20 ms) after the command arrives, and the
  stream's new level sits at most `ramp_ns` after the audio that was leaving when it arrived; all
  audio, old gain or new, then waits the same `latency_ms` in the mixer (see docs/audio.md, "Live
  changes").
- A peak limiter (`limiter`, ceiling `limit_db` dBFS) keeps the sum from clipping.
- A restarted mixer starts its output 1.5 s back in time (event `mixer_resumed`): silence covers its own
  restart, and the AAC encoder after it cuts what overlaps the audio it already has, so the stream's
  timeline has no gap (a restart longer than that leaves a gap, and the encoder resyncs).
- Events: `input_stalled` / `input_resumed` per pad (once per episode).  Metrics per pad: frames in,
  silent (stalled) output frames, resyncs; the limiter's lowest gain and clipped samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mediaengine.actors._audio import (
    Resampler,
    Timeline,
    db_gain,
    float_to_s16,
    limit,
    pan_gains,
    ramp_gain,
    s16_to_float,
    volume_gain,
)
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Emit, Event, InPort, OutPort, Reply, option
from mediaengine.sdk.errors import FieldError, FormatError, OptionError
from mediaengine.sdk.formats import NS, AudioFormat, Format, Frame, Packet, checked_audio_format
from mediaengine.sdk.pacing import audio_frames_due
from numpy.typing import NDArray

__all__ = ["Mixer", "MixerOptions", "PadSettings", "change_timing", "mix", "mix_frames_due", "pad_settings"]

#: what a pad's settings may hold, with their defaults
PAD_DEFAULTS: dict[str, Any] = {"volume": 100.0, "gain_db": 0.0, "mute": False, "pan": 0.0}
#: an input whose next chunk starts within this of where the last ended counts as contiguous
TOLERANCE_MS = 20.0
#: a mixer held up by less than this mixes every window it missed; beyond it (it was stopped), it jumps
MAX_CATCHUP_NS = 5 * NS
#: a restarted mixer starts this far back in time, to cover its own restart (see `Mixer._resume_at`)
RESUME_BACK_NS = 1_500_000_000


@dataclass(frozen=True)
class MixerOptions:
    rate: int = option(48000, choices=(16000, 32000, 44100, 48000), doc="output sample rate (Hz)")
    channels: int = option(2, choices=(1, 2), doc="output channels: 1 (mono) or 2 (stereo)")
    frame_ms: int = option(10, choices=(10, 20), doc="output frame length: the mixer's clock tick (ms)")
    latency_ms: float = option(40.0, range=(0.0, 1000.0), doc="how long inputs have to arrive before a window "
                                                               "is mixed without them (ms)")
    max_latency_ms: float = option(300.0, range=(0.0, 1000.0), doc="an input arriving late raises the latency, "
                                                                   "up to this (ms)")
    volume: float = option(100.0, range=(0.0, 100.0), live=True, doc="master volume 0..100 (live)")
    mute: bool = option(False, live=True, doc="master mute: digital silence, the stream goes on (live)")
    pads: dict = option(factory=dict, live=True,
                        doc="per input pad: {in_x: {volume: 0..100, gain_db: -60..12, mute: bool, pan: -1..1}} "
                            "(live)")
    limiter: bool = option(True, live=True, doc="peak limiter on the sum (live)")
    limit_db: float = option(-1.0, range=(-20.0, 0.0), doc="limiter ceiling (dBFS)")
    release_ms: float = option(200.0, range=(1.0, 5000.0), doc="limiter release: time to recover from gain 0 "
                                                                "to unity (ms)")


@dataclass(frozen=True)
class PadSettings:
    volume: float = 100.0
    gain_db: float = 0.0
    mute: bool = False
    pan: float = 0.0

    def gains(self, channels: int) -> NDArray[np.float32]:
        """The linear gain per output channel."""
        if self.mute:
            return np.zeros(channels, np.float32)
        g = volume_gain(self.volume) * db_gain(self.gain_db)
        return (pan_gains(self.pan, channels) * np.float32(g)).astype(np.float32)


def pad_settings(values: Any, where: str) -> PadSettings:
    """Check one pad's settings map (`{volume: 50, pan: -1}`); OptionError naming `where` and the field."""
    if not isinstance(values, Mapping):
        raise OptionError(f"pad settings must be a map like {{volume: 80, mute: false}}, got {values!r}", where=where)
    unknown = set(values) - set(PAD_DEFAULTS)
    if unknown:
        raise OptionError(f"unknown pad setting {sorted(unknown)[0]!r} (known: {', '.join(PAD_DEFAULTS)})",
                          where=where)
    merged = {**PAD_DEFAULTS, **values}
    bounds = {"volume": (0.0, 100.0), "gain_db": (-60.0, 12.0), "pan": (-1.0, 1.0)}
    for name, (lo, hi) in bounds.items():
        v = merged[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise OptionError(f"{name} must be a number in {lo:g}..{hi:g}, got {v!r}", where=f"{where}.{name}")
    if not isinstance(merged["mute"], bool):
        raise OptionError(f"mute must be true or false, got {merged['mute']!r}", where=f"{where}.mute")
    return PadSettings(float(merged["volume"]), float(merged["gain_db"]), merged["mute"], float(merged["pan"]))


# ---- pure functions -------------------------------------------------------------------------------

def mix(windows: list[NDArray[np.float32]], gains_from: list[NDArray[np.float32]],
        gains_to: list[NDArray[np.float32]], master_from: float, master_to: float) -> NDArray[np.float32]:
    """Sum float32 windows (samples, channels), each with its per-channel gain ramping from `gains_from`
    to `gains_to` over the window, then the master gain ramping likewise.  All windows have one shape."""
    n, c = windows[0].shape if windows else (0, 0)
    acc = np.zeros((n, c), np.float32)
    for w, g0, g1 in zip(windows, gains_from, gains_to, strict=True):
        if np.any(g0) or np.any(g1):
            acc += w * ramp_gain(g0, g1, n)
    if master_from != master_to or master_to != 1.0:
        acc *= ramp_gain(np.full(c, master_from, np.float32), np.full(c, master_to, np.float32), n)
    return acc


def change_timing(next_frame: int | None, now_ns: int, latency_ns: int, rate: int, spf: int) -> dict[str, Any]:
    """Where a gain change taken at engine time `now_ns` lands in the output, when the next frame to mix is
    `next_frame` (None: no frame mixed yet, the change is in the first one from its start).

    `applies_from_ns`: pts of the first output sample the change is applied to (it ramps over that frame,
    `ramp_ns`, and holds from its end); `leaves_by_ns`: engine time that frame is due out of the mixer
    (once its window ended `latency_ns` ago, `mix_frames_due`); `at_ns`: when the change was taken."""
    ramp_ns = spf * NS // rate
    if next_frame is None:
        return {"at_ns": now_ns, "applies_from_ns": None, "ramp_ns": ramp_ns, "leaves_by_ns": None}
    start = next_frame * spf * NS // rate
    return {"at_ns": now_ns, "applies_from_ns": start, "ramp_ns": ramp_ns,
            "leaves_by_ns": (next_frame + 1) * spf * NS // rate + latency_ns}


def mix_frames_due(next_frame: int | None, now_ns: int, latency_ns: int, rate: int, spf: int) -> list[int]:
    """Output frames to mix at engine time `now_ns`: frame k once its whole window ended `latency_ns` ago
    (none before the engine's first frame could complete).  A mixer held up (a loaded machine) mixes every
    window it missed, up to `MAX_CATCHUP_NS`: the output timeline has no gap."""
    t = now_ns - latency_ns - spf * NS // rate
    if t < 0:
        return []
    return audio_frames_due(next_frame, t, rate, spf, max_catchup_ns=MAX_CATCHUP_NS)


# ---- the actor ------------------------------------------------------------------------------------

class _Input:
    """One linked pad: its format conversion and its timeline."""

    def __init__(self, fmt: AudioFormat, rate: int, channels: int) -> None:
        self.fmt = fmt
        self.resampler = Resampler(fmt.rate, fmt.channels, rate, channels)
        self.timeline = Timeline(channels, tolerance=round(TOLERANCE_MS * rate / 1000))
        self.frames_in = 0
        self.silent_frames = 0
        self.stalled = True  # until the first samples arrive
        self.started = False
        self.gains = np.zeros(channels, np.float32)  # gains applied at the end of the last window


class Mixer(Actor[MixerOptions]):
    """Mixes any number of audio inputs on its own clock, with per-input and master gain and a limiter."""

    inputs = {"in_%s": InPort("audio", policy="block", required=True)}
    outputs = {"out": OutPort("audio", default=True)}
    Options = MixerOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        o: MixerOptions = options
        for pad, values in o.pads.items():
            pad_settings(values, f"pads.{pad}")
        for pad, fmt in input_formats.items():
            if not isinstance(fmt, AudioFormat) or fmt.sample_fmt != "s16" or fmt.channels not in (1, 2):
                raise OptionError(f"mixer input {pad} must be s16 mono or stereo audio, got "
                                  f"{fmt.describe() if fmt else fmt!r}")

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: MixerOptions = options
        return {"out": checked_audio_format(o.rate, o.channels, o.rate * o.frame_ms // 1000)}

    def setup(self, ctx: Context) -> Actions:
        o = self.options
        self.ctx = ctx
        self.node_id = ctx.node_id
        self.spf = o.rate * o.frame_ms // 1000
        self.frame_ns = self.spf * NS // o.rate
        self.tick_interval_ns = self.frame_ns
        self.latency_ns = round(o.latency_ms * 1e6)
        self.settings = {pad: pad_settings(v, f"pads.{pad}") for pad, v in o.pads.items()}
        self.pads: dict[str, _Input] = {}
        for pad, fmt in ctx.input_formats.items():
            self._add(pad, fmt)
        self._next: int | None = None
        self.resuming = ctx.restart_count > 0  # restarted: start back in time (see `_resume_at`)
        self.master = 0.0 if o.mute else volume_gain(o.volume)
        self.limiter_gain = 1.0
        self.min_limiter_gain = 1.0
        self.clipped = 0
        self.frames_out = 0
        self.ceiling = db_gain(o.limit_db)
        self.release = 1.0 / (o.release_ms * o.rate / 1000.0)
        return None

    def _add(self, pad: str, fmt: Format) -> None:
        if not isinstance(fmt, AudioFormat):
            raise FormatError(f"mixer input {pad} takes raw audio, got {fmt.describe()}", where=self.node_id)
        self.pads[pad] = _Input(fmt, self.options.rate, self.options.channels)

    def _settings(self, pad: str) -> PadSettings:
        return self.settings.get(pad) or PadSettings()

    # ---- inputs ------------------------------------------------------------------------------
    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame):
            raise FormatError(f"mixer got a packet on {pad!r}, expected raw audio", where=self.node_id)
        inp = self.pads[pad]
        pcm = media.data
        if pcm.ndim != 2 or pcm.shape[1] != inp.fmt.channels or pcm.dtype != np.int16:
            raise FormatError(f"audio frame {pcm.dtype}{pcm.shape} on {pad} ({inp.fmt.describe()})",
                              where=self.node_id)
        inp.frames_in += 1
        out = inp.resampler(pcm)
        if out.shape[0]:
            rate = self.options.rate
            start = (media.pts_ns * rate * 2 + NS) // (2 * NS)  # nearest sample
            late = inp.timeline.push(start, s16_to_float(out))
            if late and inp.started:
                return self._raise_latency(pad, late)
        return None

    def _raise_latency(self, pad: str, late: int) -> Actions:
        """An input that was running delivered audio after its window was mixed (a loaded machine, a slow
        device): wait that much longer for every window from now on (the output's pts stay contiguous;
        frames leave later), up to `max_latency_ms`."""
        late_ns = late * NS // self.options.rate
        new = min(round(self.options.max_latency_ms * 1e6), self.latency_ns + late_ns + self.frame_ns)
        if new <= self.latency_ns:
            return None
        self.latency_ns = new
        return [Event("latency_raised", {"pad": pad, "late_ms": round(late_ns / 1e6, 1),
                                         "latency_ms": round(new / 1e6, 1)})]

    def on_format_changed(self, pad: str, fmt: Format) -> Actions:
        old = self.pads.get(pad)
        self._add(pad, fmt)
        if old is not None:  # keep its counters and the gains it had, so the change does not click
            self.pads[pad].gains, self.pads[pad].frames_in = old.gains, old.frames_in
        return None

    def on_eos(self, pad: str) -> Actions:
        return None  # an ended input is silence; the mixer's clock goes on until the engine stops

    # ---- the clock ---------------------------------------------------------------------------
    def _resume_at(self, now_ns: int) -> int:
        """After a restart, the first frame to mix: `RESUME_BACK_NS` before what the clock says.  The previous
        instance stopped when it died; starting this far back (silence where the inputs have nothing) covers
        the restart, and the encoder after the mixer cuts what overlaps the audio it already has, so the
        stream's timeline has no gap."""
        o = self.options
        t = max(0, now_ns - self.latency_ns - self.frame_ns - RESUME_BACK_NS)
        return int(t * o.rate // NS // self.spf)

    def on_tick(self, now_ns: int) -> Actions:
        o = self.options
        actions: list[Action] = []
        if self._next is None and self.resuming:
            self.resuming = False
            self._next = self._resume_at(now_ns)
            actions.append(Event("mixer_resumed", {"at_ns": self._next * self.spf * NS // o.rate}))
        for k in mix_frames_due(self._next, now_ns, self.latency_ns, o.rate, self.spf):
            actions.extend(self._mix_frame(k))
            self._next = k + 1
        return actions

    def _mix_frame(self, k: int) -> list[Action]:
        o = self.options
        start = k * self.spf
        actions: list[Action] = []
        windows, g0, g1 = [], [], []
        for pad, inp in self.pads.items():
            inp.timeline.drop_before(start)
            window, filled = inp.timeline.take(start, self.spf)
            if filled == 0:
                inp.silent_frames += 1
                if not inp.stalled and inp.started:
                    inp.stalled = True
                    actions.append(Event("input_stalled", {"pad": pad, "at_ns": start * NS // o.rate}))
            elif inp.stalled:
                inp.stalled = False
                actions.append(Event("input_resumed" if inp.started else "input_started", {"pad": pad}))
                inp.started = True
            target = self._settings(pad).gains(o.channels)
            windows.append(window)
            g0.append(inp.gains)
            g1.append(target)
            inp.gains = target
        master = 0.0 if o.mute else volume_gain(o.volume)
        acc = mix(windows, g0, g1, self.master, master) if windows else np.zeros((self.spf, o.channels),
                                                                                  np.float32)
        self.master = master
        if o.limiter:
            acc, self.limiter_gain = limit(acc, self.limiter_gain, self.ceiling, self.release)
            self.min_limiter_gain = min(self.min_limiter_gain, self.limiter_gain)
        pcm, clipped = float_to_s16(acc)
        self.clipped += clipped
        buf = self.ctx.output_buffer("out")
        if buf is not None:
            buf[...] = pcm
            pcm = buf
        self.frames_out += 1
        actions.append(Emit("out", Frame(pcm, pts_ns=start * NS // o.rate, seq=k)))
        return actions

    # ---- control -----------------------------------------------------------------------------
    def on_option_changed(self, name: str, value: Any) -> Actions:
        if name == "pads":
            self.settings = {pad: pad_settings(v, f"pads.{pad}") for pad, v in value.items()}
        return [Event("mix_changed", {name: value, **self._timing()})]

    def _timing(self) -> dict[str, Any]:
        """Where a change taken now lands in the output (`change_timing`)."""
        return change_timing(self._next, self.ctx.clock(), self.latency_ns, self.options.rate, self.spf)

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "input":
            pad = args.get("pad")
            if pad not in self.pads:
                raise FieldError(f"input needs pad= one of {', '.join(sorted(self.pads)) or 'none'}, got {pad!r}",
                                 where=self.node_id)
            current = self._settings(pad)
            changes = {k: v for k, v in args.items() if k != "pad"}
            try:
                new = pad_settings({**current.__dict__, **changes}, pad)
            except OptionError as exc:
                raise FieldError(exc.message, where=f"{self.node_id}.{exc.where}") from exc
            self.settings[pad] = new
            timing = self._timing()
            return [Reply({**new.__dict__, **timing}), Event("input_changed", {"pad": pad, **new.__dict__, **timing})]
        if command == "inputs":
            return [Reply({pad: {**self._settings(pad).__dict__, "stalled": inp.stalled}
                           for pad, inp in self.pads.items()})]
        return super().on_control(command, args)

    def metrics(self) -> dict[str, Any]:
        return {
            "frames_out": self.frames_out, "clipped_samples": self.clipped,
            "latency_ms": round(self.latency_ns / 1e6, 1),
            "limiter_min_gain": round(self.min_limiter_gain, 4),
            "inputs": {pad: {"frames_in": inp.frames_in, "silent_frames": inp.silent_frames,
                             "resyncs": inp.timeline.resyncs, "late_samples": inp.timeline.late_samples,
                             "stalled": inp.stalled} for pad, inp in self.pads.items()},
        }
