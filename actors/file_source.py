"""External A/V ingest: decode a file (or any URL FFmpeg reads) and play it out in real time.

Video is converted to the edge's pixel format (the decoder's yuv420p when every consumer takes it, an
encoder; else rgb24; `pix_fmt` forces one) at the declared size and held to the declared frame rate (for each output
frame the newest source frame that is due is shown, so frames are duplicated or dropped as needed);
audio is resampled (`av.AudioResampler`) to s16 interleaved at the declared rate and channel count and
re-chunked to exactly `samples_per_frame`.  Output timestamps are on the engine timeline, not the
file's: the first tick maps file time 0 to the current video frame (`pts_ns = k * round(1e9/fps)`),
audio frame i has `pts_ns = i*spf * 1e9 // rate`.  With `loop`, the file is reopened at its end and
plays on seamlessly (audio padded with silence to the loop length, so A/V stay in sync loop after
loop).  Without `loop`, the source ends with `EndOfStream()` then `Finish("end of file")`.

    nodes:
      - {id: clip, kind: file_source, options: {url: media/clip.mp4, loop: true, width: 1280, height: 720}}
      - {id: enc,  kind: video_encoder, inputs: {in: clip/video}}
      - {id: aenc, kind: audio_encoder, inputs: {in: clip/audio}}

Decoding runs in `on_tick`, on demand (only as far as the due frames need), so a slow decoder shows
up as late ticks (caught up by up to 5 video frames / 0.5 s of audio, then skipped).  What is decoded
ahead is bounded (`MAX_AHEAD_NS` of media and `MAX_BUFFER_BYTES` across both tracks): when one track
ends or pauses (cover art, video shorter than audio or the reverse) the other is read only that far
ahead, the paused track holds its last picture (video) or plays silence (audio), and a track past its
declared end (the container's stream duration) ends there.  `metrics()` reports the buffered amount
and its peak.  Packets the
decoder rejects as invalid are skipped and counted in `decode_errors`.  A pad switched off
(`video: false` / `audio: false`) still has its format but ends (end of stream) at the first tick.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import av
import av.error
import av.stream
import numpy as np
from mediaengine.sdk.actor import Action, Actor, Context, Emit, EndOfStream, Finish, OutPort, option
from mediaengine.sdk.errors import ConnectError, FileError, MalformedMediaError, OptionError
from mediaengine.sdk.formats import (
    NS,
    Format,
    Frame,
    VideoFormat,
    checked_audio_format,
    checked_video_format,
    i420_shape,
)
from mediaengine.sdk.pacing import audio_frames_due, video_indices_due
from mediaengine.sdk.pixels import frame_to_array
from mediaengine.sdk.redact import redact_text, redact_url, url_secrets
from numpy.typing import NDArray

__all__ = ["MAX_AHEAD_NS", "MAX_BUFFER_BYTES", "FileSource", "FileSourceOptions", "SampleFifo", "video_to_rgb"]

MAX_AHEAD_NS = 3 * NS  # decoded media held beyond what is due, per track (interleaving needs < 1 s)
# A read blocks the actor's loop, which alone sends heartbeats: a stalled network read must give up (and
# be reported as a ConnectError) before the supervisor's heartbeat timeout (1.5 s by default) takes the
# source for hung.
READ_TIMEOUT_S = 1.0
MAX_BUFFER_BYTES = 96 * 1024 * 1024  # decoded bytes held across both tracks (~30 frames of 1080p yuv420)


@dataclass(frozen=True)
class FileSourceOptions:
    url: str = option(doc="file path or any URL FFmpeg reads (http://, rtmp://, rtsp://, ...)")
    loop: bool = option(False, doc="start again at the end instead of finishing")
    video: bool = option(True, doc="decode and emit video on the `video` pad")
    audio: bool = option(True, doc="decode and emit audio on the `audio` pad")
    width: int = option(640, range=(16, 7680), doc="output video width (frames are scaled to it)")
    height: int = option(360, range=(16, 4320), doc="output video height")
    fps: float = option(30.0, range=(0.1, 240.0),
                        doc="output frame rate (frames are duplicated or dropped to hold it)")
    rate: int = option(48000, range=(8000, 192000), doc="output sample rate")
    channels: int = option(2, choices=(1, 2), doc="output channels: 1 or 2")
    samples_per_frame: int = option(1024, doc="samples per output audio frame")
    timeout_s: float = option(10.0, range=(0.0, None),
                              doc="open timeout for network URLs (0 = none); reads give up after READ_TIMEOUT_S")
    pix_fmt: str = option("auto", choices=("auto", "rgb24", "yuv420p"),
                          doc="pixel format on the video edge: auto (the decoder's yuv420p when every consumer "
                              "takes it, else rgb24), or forced")


# ---- pure helpers ---------------------------------------------------------------------------------

def video_to_rgb(frame: av.VideoFrame, width: int, height: int) -> NDArray[np.uint8]:
    """A decoded frame as a C-contiguous HxWx3 rgb24 array of the given size."""
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return np.ascontiguousarray(rgb, dtype=np.uint8)  # a view of the frame's buffer unless padded


def black_picture(width: int, height: int, pix_fmt: str) -> NDArray[np.uint8]:
    """A black picture as a ring array of `pix_fmt` (I420 black is Y=16, U=V=128, limited range)."""
    if pix_fmt == "yuv420p":
        pic = np.full(i420_shape(width, height), 128, np.uint8)
        pic[:height] = 16
        return pic
    return np.zeros((height, width, 3), dtype=np.uint8)


class SampleFifo:
    """Interleaved s16 samples indexed by absolute stream position (sample 0 = file start)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.pos = 0  # stream index of the next sample to read
        self.end = 0  # stream index after the last sample pushed
        self._chunks: deque[NDArray[np.int16]] = deque()

    @property
    def available(self) -> int:
        return self.end - self.pos

    @property
    def nbytes(self) -> int:
        return self.available * self.channels * 2

    def push(self, samples: NDArray[np.int16]) -> None:
        """Append (n, channels) int16 samples."""
        if len(samples):
            self._chunks.append(samples)
            self.end += len(samples)

    def push_silence(self, count: int) -> None:
        if count > 0:
            self.push(np.zeros((count, self.channels), dtype=np.int16))

    def drop_to(self, position: int) -> None:
        """Discard samples before `position`."""
        n = min(position, self.end) - self.pos
        while n > 0:
            head = self._chunks[0]
            if len(head) <= n:
                self._chunks.popleft()
                self.pos += len(head)
                n -= len(head)
            else:
                self._chunks[0] = head[n:]
                self.pos += n
                n = 0

    def read(self, start: int, count: int) -> NDArray[np.int16]:
        """Samples [start, start+count) as a new (count, channels) array; silence where there are none.

        Samples before `start` are discarded; afterwards `pos >= start + count` or the fifo is empty.
        """
        self.drop_to(start)
        out = np.zeros((count, self.channels), dtype=np.int16)
        i = max(0, self.pos - start)  # leading silence if the fifo starts after `start`
        while i < count and self._chunks:
            head = self._chunks[0]
            n = min(len(head), count - i)
            out[i: i + n] = head[:n]
            i += n
            self.pos += n
            if n == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[n:]
        return out


# ---- decoding -------------------------------------------------------------------------------------

def _frame_bytes(frame: av.VideoFrame) -> int:
    return sum(p.buffer_size for p in frame.planes)


def _shown(url: str) -> str:
    """How errors name the input: a URL without its secrets (stream key, password, query), a path as is."""
    return repr(redact_url(url) if "://" in url else url)


def _why(url: str, e: BaseException) -> str:
    """FFmpeg's message for `e` (which quotes the URL it failed on) with the URL's secrets hidden."""
    return redact_text(str(e), url_secrets(url))


def _input_error(url: str, doing: str, e: BaseException) -> FileError | ConnectError | MalformedMediaError:
    if isinstance(e, ConnectionError):
        return ConnectError(f"cannot {doing} {_shown(url)}: {_why(url, e)}; is the server up and the URL right?")
    if isinstance(e, av.error.InvalidDataError | av.error.EOFError | av.error.PatchWelcomeError):
        empty = doing == "open" and os.path.isfile(url) and os.path.getsize(url) == 0
        what = "is empty (0 bytes)" if empty else f"is not valid media ({e.strerror or type(e).__name__})"
        return MalformedMediaError(f"cannot {doing} {_shown(url)}: it {what}; check that the file is complete and "
                                   "of the format its name says")
    return FileError(f"cannot {doing} {_shown(url)}: {_why(url, e)}")


class _Reader:
    """Demuxes and decodes the selected streams, reopening the URL at the end when looping.

    Video frames land in `video` as (stream time ns, av.VideoFrame), audio samples in `audio`; stream
    time runs on across loops.  `eof` is set at the final end (never when looping).
    """

    def __init__(self, o: FileSourceOptions) -> None:
        self.o = o
        self.video: deque[tuple[int, av.VideoFrame]] = deque()
        self.audio = SampleFifo(o.channels)
        self.eof = False
        self.video_end_ns = 0  # stream time at which the last video frame stops showing
        self.decode_errors = 0
        self.loops = 0
        self.video_bytes = 0  # decoded bytes held in `video`
        self.peak_ahead_ns = 0  # the most media ever held ahead of the playout point (either track)
        self.peak_bytes = 0  # the most decoded bytes ever held
        self.video_due_ns = 0  # stream time the player has asked for last (set by the actor)
        self.audio_due = 0  # stream sample index the player has asked for last
        self.frame_ns = NS // 30  # nominal source frame duration (set from the video stream)
        self._base_ns = 0  # stream time of the current pass's start
        self._container: Any = None
        self._open()

    def _open(self) -> None:
        o = self.o
        kwargs: dict[str, Any] = {"timeout": (o.timeout_s if o.timeout_s > 0 else None, READ_TIMEOUT_S)}
        try:
            container = av.open(o.url, "r", **kwargs)
        except FileNotFoundError as e:
            raise FileError(f"cannot open {_shown(o.url)}: no such file or URL ({_why(o.url, e)}); "
                            "fix the `url` option") from e
        except (av.error.FFmpegError, OSError) as e:
            raise _input_error(o.url, "open", e) from e
        streams: list[Any] = []
        self._vstream: Any = None
        self._astream: Any = None
        if o.video:
            if not container.streams.video:
                container.close()
                raise MalformedMediaError(f"{_shown(o.url)} has no video stream; set `video: false`")
            self._vstream = container.streams.video[0]
            self._vstream.thread_type = "AUTO"
            rate = self._vstream.average_rate or self._vstream.guessed_rate or 30
            self.frame_ns = round(NS / float(rate))  # nominal source frame duration
            streams.append(self._vstream)
        if o.audio:
            if not container.streams.audio:
                container.close()
                raise MalformedMediaError(f"{_shown(o.url)} has no audio stream; set `audio: false`")
            self._astream = container.streams.audio[0]
            streams.append(self._astream)
        self._container = container
        start = container.start_time  # microseconds (AV_TIME_BASE), None if unknown
        self._start_ns = int(start) * 1000 if start is not None else 0
        self._packets: Iterator[Any] = container.demux(*streams)
        self._resampler = av.AudioResampler(format="s16", layout="mono" if o.channels == 1 else "stereo",
                                            rate=o.rate)
        self._pass_video_end_ns = 0
        self._pass_audio_start = self.audio.end
        self._video_declared_end_ns = self._declared_end_ns(self._vstream)
        self._audio_declared_end_ns = self._declared_end_ns(self._astream)
        self._pass_items = 0
        self._last_video_ns = -1

    def _declared_end_ns(self, stream: Any) -> int | None:
        """Stream time (this pass) at which the container says `stream` ends, or None if it does not say."""
        if stream is None or not stream.duration or stream.time_base is None:
            return None
        start = stream.start_time if stream.start_time is not None else 0
        return round((start + stream.duration) * stream.time_base * NS) - self._start_ns

    def video_ended(self, t_ns: int) -> bool:
        """True when the video track has no more pictures at stream time `t_ns` (not looping)."""
        if self.video:
            return False
        if self.eof:
            return t_ns >= self.video_end_ns
        end = self._video_declared_end_ns
        return not self.o.loop and end is not None and t_ns >= self._base_ns + end

    def audio_ended(self, start: int) -> bool:
        """True when the audio track has no more samples from stream sample `start` on (not looping)."""
        if self.audio.end > max(start, self.audio.pos):
            return False
        if self.eof:
            return True
        end = self._audio_declared_end_ns
        return not self.o.loop and end is not None and start * NS // self.o.rate >= self._base_ns + end

    def pop_video(self) -> tuple[int, av.VideoFrame]:
        item = self.video.popleft()
        self.video_bytes -= _frame_bytes(item[1])
        return item

    def ahead_ns(self) -> int:
        """Media held beyond the playout point: the larger of the two tracks'."""
        video = self.video[-1][0] - self.video_due_ns if self.video else 0
        audio = (self.audio.end - max(self.audio_due, self.audio.pos)) * NS // self.o.rate
        return max(video, audio, 0)

    def buffered_bytes(self) -> int:
        return self.video_bytes + self.audio.nbytes

    def full(self) -> bool:
        """True when reading on would hold more than the bounds: the track asking must wait or make do."""
        return self.ahead_ns() >= MAX_AHEAD_NS or self.buffered_bytes() >= MAX_BUFFER_BYTES

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def pump(self) -> bool:
        """Decode one more packet (or handle the end of the input).  False once at the final end."""
        if self.eof:
            return False
        try:
            packet = next(self._packets)
        except StopIteration:
            self._end_of_pass()
            return not self.eof
        except av.error.ExitError as e:  # the read timeout: nothing arrived for READ_TIMEOUT_S
            raise ConnectError(f"no data from {self.o.url!r} for {READ_TIMEOUT_S:g}s (read timeout); is the "
                               "server still sending?") from e
        except (av.error.FFmpegError, OSError) as e:  # a broken file or a dropped connection
            raise _input_error(self.o.url, "read", e) from e
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            self.decode_errors += 1
            return True
        for frame in frames:
            if isinstance(frame, av.VideoFrame):
                self._add_video(frame)
            else:
                self._add_audio(self._resampler.resample(frame))
        self.peak_ahead_ns = max(self.peak_ahead_ns, self.ahead_ns())
        self.peak_bytes = max(self.peak_bytes, self.buffered_bytes())
        return True

    def _add_video(self, frame: av.VideoFrame) -> None:
        tb = frame.time_base or self._vstream.time_base
        default_dur = self.frame_ns
        if frame.pts is None or tb is None:
            rel = self._last_video_ns + default_dur if self._last_video_ns >= 0 else 0
        else:
            rel = max(0, round(frame.pts * tb * NS) - self._start_ns)
        rel = max(rel, self._last_video_ns + 1)  # keep stream time strictly increasing
        self._last_video_ns = rel
        dur = round(frame.duration * tb * NS) if frame.duration and tb is not None else default_dur
        self._pass_video_end_ns = max(self._pass_video_end_ns, rel + dur)
        self.video.append((self._base_ns + rel, frame))
        self.video_bytes += _frame_bytes(frame)
        self._pass_items += 1

    def _add_audio(self, frames: list[av.AudioFrame]) -> None:
        for f in frames:
            self.audio.push(np.array(f.to_ndarray().reshape(-1, self.o.channels), dtype=np.int16))
            self._pass_items += 1

    def _end_of_pass(self) -> None:
        if self._astream is not None:
            self._add_audio(self._resampler.resample(None))
        audio_ns = (self.audio.end - self._pass_audio_start) * NS // self.o.rate
        pass_ns = max(self._pass_video_end_ns, audio_ns)
        if not self.o.loop:
            # the last picture shows until the track's declared end; a cover (attached picture) for as
            # long as the audio plays
            video_end = max(self._pass_video_end_ns, self._video_declared_end_ns or 0)
            if self._vstream is not None and self._vstream.disposition & av.stream.Disposition.attached_pic:
                video_end = max(video_end, audio_ns)
            self.video_end_ns = self._base_ns + video_end
            self.eof = True
            self.close()
            return
        if self._pass_items == 0 or pass_ns <= 0:
            self.close()
            raise FileError(f"{_shown(self.o.url)} has no decodable media to loop over")
        self._base_ns += pass_ns
        self.audio.push_silence(-(-self._base_ns * self.o.rate // NS) - self.audio.end)
        self.loops += 1
        self.close()
        self._open()


# ---- the actor ------------------------------------------------------------------------------------

class FileSource(Actor[FileSourceOptions]):
    """Plays a file or stream out in real time on the `video` and `audio` pads."""

    outputs = {"video": OutPort("video", default=True, pix_fmts=("yuv420p", "rgb24")), "audio": OutPort("audio")}
    Options = FileSourceOptions
    is_source = True

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        o: FileSourceOptions = options
        if not (o.video or o.audio):
            raise OptionError("both `video` and `audio` are false: nothing to play")
        checked_audio_format(o.rate, o.channels, o.samples_per_frame)  # samples_per_frame vs rate

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: FileSourceOptions = options
        video = checked_video_format(o.width, o.height, o.fps)
        audio = checked_audio_format(o.rate, o.channels, o.samples_per_frame)
        # both pads always have a format (the loader links by format); a disabled pad just ends at once
        return {"video": video, "audio": audio}

    def setup(self, ctx: Context) -> None:
        o = self.options
        self._vint = round(NS / o.fps)
        aint = -(-o.samples_per_frame * NS // o.rate)
        self.tick_interval_ns = min(self._vint if o.video else aint, aint if o.audio else self._vint)
        self._reader = _Reader(o)
        self._origin_ns: int | None = None  # engine time of stream time 0
        self._origin_sample = 0  # engine sample index of stream sample 0
        self._next_video: int | None = None
        self._next_audio: int | None = None
        self._held: tuple[int, av.VideoFrame] | None = None
        self._held_rgb: NDArray[np.uint8] | None = None
        vfmt = ctx.output_formats.get("video")
        self._pix_fmt = vfmt.pix_fmt if isinstance(vfmt, VideoFormat) else "rgb24"  # the loader's choice
        self._video_done = not o.video
        self._audio_done = not o.audio
        self._finished = False
        self._started = False

    @property
    def decode_errors(self) -> int:
        return self._reader.decode_errors

    @property
    def loops(self) -> int:
        return self._reader.loops

    def on_tick(self, now_ns: int) -> list[Action]:
        if self._finished:
            return []
        o = self.options
        if self._origin_ns is None:  # the first tick: stream time 0 is the current frame's start
            if o.video:
                self._origin_ns = now_ns // self._vint * self._vint
                self._origin_sample = -(-self._origin_ns * o.rate // NS)
            else:
                self._origin_sample = (now_ns * o.rate // NS) // o.samples_per_frame * o.samples_per_frame
                self._origin_ns = self._origin_sample * NS // o.rate
        actions: list[Action] = []
        if not self._started:  # a disabled pad ends at once, so a consumer linked to it does not wait
            self._started = True
            actions += [EndOfStream(pad) for pad, on in (("video", o.video), ("audio", o.audio)) if not on]
        if not self._video_done:
            for k in video_indices_due(self._next_video, now_ns, self._vint):
                self._next_video = k + 1
                rgb = self._video_frame(k * self._vint - self._origin_ns)
                if rgb is None:
                    self._video_done = True
                    break
                actions.append(Emit("video", Frame(rgb, pts_ns=k * self._vint, seq=k)))
        if not self._audio_done:
            spf = o.samples_per_frame
            for i in audio_frames_due(self._next_audio, now_ns, o.rate, spf):
                self._next_audio = i + 1
                data = self._audio_frame(i * spf - self._origin_sample)
                if data is None:
                    self._audio_done = True
                    break
                actions.append(Emit("audio", Frame(data, pts_ns=i * spf * NS // o.rate, seq=i)))
        if self._video_done and self._audio_done:
            self._finished = True
            self._reader.close()
            actions += [EndOfStream(), Finish("end of file")]
        return actions

    def _video_frame(self, t_ns: int) -> NDArray[np.uint8] | None:
        """The picture showing at stream time `t_ns`, or None after the last frame has ended."""
        r = self._reader
        # container timestamps are rounded (often to 1 ms): a frame counts as due a little early
        due = t_ns + min(self._vint, r.frame_ns) // 4
        r.video_due_ns = due
        while True:
            while r.video and r.video[0][0] <= due:
                self._held, self._held_rgb = r.pop_video(), None
            # read on only while the bounds allow: past them the video pauses (the audio runs ahead of it)
            if r.video or r.video_ended(due) or r.full() or not r.pump():
                break
        if self._held is None and r.video:  # the first frame starts late: show it early
            self._held, self._held_rgb = r.pop_video(), None
        if r.video_ended(due) or (self._held is None and r.eof):
            return None
        if self._held is None:  # nothing decoded yet within the bounds: black until the first picture
            return black_picture(self.options.width, self.options.height, self._pix_fmt)
        if self._held_rgb is None:
            self._held_rgb = frame_to_array(self._held[1], self.options.width, self.options.height, self._pix_fmt)
        return self._held_rgb

    def _audio_frame(self, start: int) -> NDArray[np.int16] | None:
        """Samples [start, start+spf) of the stream, or None once the stream has run out."""
        r = self._reader
        spf = self.options.samples_per_frame
        r.audio_due = start
        # read on only while the bounds allow: past them the audio pauses (silence) and the video runs on
        while r.audio.end < start + spf and not r.audio_ended(start) and not r.full() and r.pump():
            if r.audio.available > 4 * r.o.rate:  # far behind (a jump): don't hold seconds of audio
                r.audio.drop_to(start)
        if r.audio_ended(start):
            return None
        return r.audio.read(start, spf)

    def metrics(self) -> dict[str, Any]:
        """Decoded media held ahead of playout (now and at its peak), so the bounds can be watched."""
        r = self._reader
        return {"buffered_ms": r.ahead_ns() // 1_000_000, "buffered_bytes": r.buffered_bytes(),
                "peak_buffered_ms": r.peak_ahead_ns // 1_000_000, "peak_buffered_bytes": r.peak_bytes,
                "decode_errors": r.decode_errors, "loops": r.loops}

    def stop(self) -> list[Action]:
        self._reader.close()
        return []
