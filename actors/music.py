"""Background music: plays a file or URL (anything FFmpeg decodes: mp3, aac/m4a, wav, flac, ogg/opus) at
real-time pace, driven live.

```yaml
- {id: music, kind: music, options: {path: media/song.mp3, volume: 30, loop: true}}
- {id: mix,   kind: mixer, inputs: {in_mic: mic, in_music: music}}
```

Commands: `start path=...` (or the `path` option), `stop`, `pause`, `resume`, `seek s=12.5`; live
options `loop` and `volume` (0..100).  The output never stops: frame k (samples `[k*spf, (k+1)*spf)` of
the engine timeline) is emitted when its time comes, with the music while playing and digital silence
while idle, paused, stopped or finished, so a mixer or encoder downstream sees one contiguous stream.

Events: `music_started` (path, duration), `music_progress` (position and duration, about every
second while playing), `music_paused`, `music_resumed`, `music_seeked`, `music_looped`,
`music_stopped`, `music_completed`, `music_error`.  A missing or unreadable file (1301 `FileError`)
or a corrupt one (1210 `MalformedMediaError`) is a `music_error` event with its code and message, and
the actor goes on (silent); it never crashes for a bad file.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np
from mediaengine.actors._audio import layout_name, volume_gain
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Emit, Event, OutPort, Reply, option
from mediaengine.sdk.errors import EngineError, FieldError, FileError, MalformedMediaError
from mediaengine.sdk.formats import NS, Format, Frame, checked_audio_format
from mediaengine.sdk.pacing import audio_frames_due
from numpy.typing import NDArray

__all__ = ["Music", "MusicOptions", "MusicState", "Track", "scale"]

#: seconds between `music_progress` events
PROGRESS_EVERY_S = 1.0


class MusicState(enum.Enum):
    IDLE = "idle"  # nothing loaded (never started, stopped, failed or completed)
    PLAYING = "playing"
    PAUSED = "paused"


@dataclass(frozen=True)
class MusicOptions:
    path: str = option("", doc="file or URL to play at start; empty: idle until `start path=...`")
    rate: int = option(48000, choices=(16000, 32000, 44100, 48000), doc="output sample rate (Hz)")
    channels: int = option(2, choices=(1, 2), doc="output channels")
    frame_ms: int = option(20, choices=(10, 20, 40), doc="output frame length (ms)")
    loop: bool = option(False, live=True, doc="start again at the end instead of completing (live)")
    volume: float = option(100.0, range=(0.0, 100.0), live=True, doc="0..100 (live)")


def scale(pcm: NDArray[np.int16], volume: float) -> NDArray[np.int16]:
    """PCM at `volume` 0..100 (linear share); the same array at 100."""
    if volume >= 100.0:
        return pcm
    out: NDArray[np.int16] = np.rint(pcm.astype(np.float32) * np.float32(volume_gain(volume))).astype(np.int16)
    return out


def _error_event(path: str, exc: EngineError) -> Event:
    return Event("music_error", {"path": path, "code": exc.code, "name": exc.name, "message": exc.message})


class Track:
    """One opened file: decodes on demand to s16 at the output rate and channels, seeks, knows its duration."""

    def __init__(self, path: str, rate: int, channels: int) -> None:
        self.path = path
        self.rate, self.channels = rate, channels
        try:
            self.container = av.open(path, "r", timeout=(5.0, 1.0))
        except FileNotFoundError as exc:
            raise FileError(f"music file {path!r} does not exist; check `path`") from exc
        except (av.error.InvalidDataError, av.error.EOFError) as exc:
            raise MalformedMediaError(f"{path!r} is not a media file FFmpeg can read ({exc})") from exc
        except (av.FFmpegError, OSError) as exc:
            raise FileError(f"cannot open music {path!r}: {exc}") from exc
        if not self.container.streams.audio:
            self.container.close()
            raise MalformedMediaError(f"{path!r} has no audio stream")
        self.stream = self.container.streams.audio[0]
        tb = self.stream.time_base or Fraction(1, rate)
        if self.stream.duration is not None:
            self.duration_s: float | None = float(self.stream.duration * tb)
        elif self.container.duration is not None:
            self.duration_s = self.container.duration / 1_000_000
        else:
            self.duration_s = None
        self._reset(0.0)

    def _reset(self, at_s: float) -> None:
        self.resampler = av.AudioResampler(format="s16", layout=layout_name(self.channels), rate=self.rate)
        self.frames = self.container.decode(self.stream)
        self.fifo = np.zeros((0, self.channels), np.int16)
        self.skip_to = round(at_s * self.rate)  # drop decoded samples before this (a seek lands on a packet)
        self.ended = False

    def seek(self, s: float) -> None:
        assert self.stream.time_base is not None
        self.container.seek(max(0, int(s / self.stream.time_base)), stream=self.stream, backward=True)
        self._reset(s)

    def read(self, n: int) -> NDArray[np.int16] | None:
        """The next `n` samples; fewer at the end of the file; None once it ended and nothing is left."""
        while self.fifo.shape[0] < n and not self.ended:
            try:
                frame = next(self.frames)
            except StopIteration:
                self.ended = True
                break
            except av.error.InvalidDataError as exc:
                raise MalformedMediaError(f"{self.path!r} is corrupt: {exc}") from exc
            start = None
            if frame.pts is not None and frame.time_base is not None:
                start = round(float(frame.pts * frame.time_base) * self.rate)
            for out in self.resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1, self.channels)
                if start is not None and start < self.skip_to:
                    cut = min(pcm.shape[0], self.skip_to - start)
                    pcm, start = pcm[cut:], start + cut
                self.fifo = np.concatenate([self.fifo, pcm])
            if start is not None and start >= self.skip_to:
                self.skip_to = 0
        if not self.fifo.shape[0]:
            return None
        out_pcm, self.fifo = self.fifo[:n], self.fifo[n:]
        return out_pcm

    def close(self) -> None:
        self.container.close()


class Music(Actor[MusicOptions]):
    """Background music player on the engine's media clock."""

    outputs = {"out": OutPort("audio", default=True)}
    Options = MusicOptions
    is_source = True
    own_commands = frozenset({"stop", "pause", "resume"})  # of the music, not of the node

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: MusicOptions = options
        return {"out": checked_audio_format(o.rate, o.channels, o.rate * o.frame_ms // 1000)}

    def setup(self, ctx: Context) -> Actions:
        o = self.options
        self.ctx = ctx
        self.spf = o.rate * o.frame_ms // 1000
        self.tick_interval_ns = self.spf * NS // o.rate
        self.state = MusicState.IDLE
        self.track: Track | None = None
        self.position = 0  # samples of the track played
        self.next_progress = 0
        self._next: int | None = None
        self.frames = 0
        self.underruns = 0
        return self._start(o.path) if o.path else None

    # ---- playback ----------------------------------------------------------------------------
    def _start(self, path: str) -> list[Action]:
        self._close()
        try:
            self.track = Track(path, self.options.rate, self.options.channels)
        except EngineError as exc:
            self.state = MusicState.IDLE
            return [_error_event(path, exc)]
        self.state = MusicState.PLAYING
        self.position = 0
        self.next_progress = 0
        return [Event("music_started", {"path": path, "duration_s": self.track.duration_s})]

    def _close(self) -> None:
        if self.track is not None:
            self.track.close()
            self.track = None

    def _position_s(self) -> float:
        return self.position / self.options.rate

    def _progress(self) -> Event:
        return Event("music_progress", {"position_s": round(self._position_s(), 3),
                                        "duration_s": self.track.duration_s if self.track else None})

    def _music_frame(self) -> tuple[NDArray[np.int16], list[Action]]:
        """The next frame of music (padded with silence at the end), and the events it causes."""
        o = self.options
        out = np.zeros((self.spf, o.channels), np.int16)
        actions: list[Action] = []
        filled = 0
        while filled < self.spf and self.track is not None:
            try:
                pcm = self.track.read(self.spf - filled)
            except EngineError as exc:
                actions.append(_error_event(self.track.path, exc))
                self._close()
                self.state = MusicState.IDLE
                break
            if pcm is None:  # the end of the file
                if o.loop and self.position > 0:
                    self.track.seek(0.0)
                    self.position = 0
                    self.next_progress = 0
                    actions.append(Event("music_looped", {"path": self.track.path}))
                    continue
                actions.append(Event("music_completed", {"path": self.track.path,
                                                         "position_s": round(self._position_s(), 3)}))
                self._close()
                self.state = MusicState.IDLE
                break
            out[filled:filled + pcm.shape[0]] = pcm
            filled += pcm.shape[0]
            self.position += pcm.shape[0]
        if self.state is MusicState.PLAYING and self.position >= self.next_progress:
            actions.append(self._progress())
            self.next_progress = self.position + round(PROGRESS_EVERY_S * o.rate)
        return scale(out, o.volume), actions

    def on_tick(self, now_ns: int) -> Actions:
        o = self.options
        actions: list[Action] = []
        for i in audio_frames_due(self._next, now_ns, o.rate, self.spf):
            if self.state is MusicState.PLAYING:
                data, events = self._music_frame()
                actions.extend(events)
            else:
                data = np.zeros((self.spf, o.channels), np.int16)
            buf = self.ctx.output_buffer("out")
            if buf is not None:
                buf[...] = data
                data = buf
            actions.append(Emit("out", Frame(data, pts_ns=i * self.spf * NS // o.rate, seq=i)))
            self.frames += 1
            self._next = i + 1
        return actions

    # ---- control -----------------------------------------------------------------------------
    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        node = self.ctx.node_id
        if command == "start":
            path = args.get("path", self.options.path)
            if not isinstance(path, str) or not path:
                raise FieldError("start needs path=FILE_OR_URL (or the `path` option)", where=node)
            actions = self._start(path)
            return [Reply(self._status()), *actions]
        if command == "stop":
            was = self.state
            self._close()
            self.state = MusicState.IDLE
            return [Reply(self._status())] + ([Event("music_stopped", {})] if was is not MusicState.IDLE else [])
        if command in ("pause", "resume"):
            if self.track is None:
                raise FieldError(f"{command}: no music is loaded (start path=... first)", where=node)
            want = MusicState.PAUSED if command == "pause" else MusicState.PLAYING
            changed = self.state is not want
            self.state = want
            event = Event(f"music_{command}d", {"position_s": round(self._position_s(), 3)})
            return [Reply(self._status())] + ([event] if changed else [])
        if command == "seek":
            s = args.get("s")
            if self.track is None:
                raise FieldError("seek: no music is loaded (start path=... first)", where=node)
            dur = self.track.duration_s
            if isinstance(s, bool) or not isinstance(s, int | float) or s < 0 or (dur is not None and s > dur):
                raise FieldError(f"seek needs s= seconds within 0..{dur if dur is not None else 'the end'}, "
                                 f"got {s!r}", where=node)
            try:
                self.track.seek(float(s))
            except av.FFmpegError as exc:
                return [Reply(self._status()), _error_event(self.track.path, MalformedMediaError(
                    f"cannot seek {self.track.path!r} to {s}s: {exc}"))]
            self.position = round(float(s) * self.options.rate)
            self.next_progress = self.position
            return [Reply(self._status()), Event("music_seeked", {"position_s": float(s)})]
        if command == "status":
            return [Reply(self._status())]
        return super().on_control(command, args)

    def _status(self) -> dict[str, Any]:
        return {"state": self.state.value, "path": self.track.path if self.track else None,
                "position_s": round(self._position_s(), 3),
                "duration_s": self.track.duration_s if self.track else None, "loop": self.options.loop}

    def metrics(self) -> dict[str, Any]:
        return {"frames": self.frames, **self._status()}

    def stop(self) -> Actions:
        self._close()
        return None
