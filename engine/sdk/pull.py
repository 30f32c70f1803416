"""Pull a live stream, decode it, and report what a viewer gets: fps, stalls, latency and SEI messages.

The player reads anything FFmpeg reads (RTMP, HTTP-FLV, HLS, files) with PyAV and reports, as event
dicts (`mediaengine play --json` prints them one per line):

    {"type": "connected", "video": {...}, "audio": {...}, "connect_ms": ...}
    {"type": "stats", "frames", "fps", "stalls", "stall_ms", "latency_ms_median", "latency_ms_p95",
     "latency_samples", "missing", "width", "height", "audio": {...} | None}          once a second
    {"type": "sei", "uuid", "text", "first_frame", "last_frame", "frames"}            once per message
    {"type": "stall_start", "after_frame"} and {"type": "stall", "duration_ms", "after_frame"}
    {"type": "snapshot", "path"}, {"type": "ended", "reason"}, {"type": "summary", ...}

Every event has `t`: seconds since `run()` started.  Definitions:

- a *stall* is what a viewer's player shows as a frozen picture: frames play at their timestamps
  from a playout buffer of `stall_s` (0.5 s; the first frame plays that long after it arrived, and
  again after each stall); a frame that arrives after its play time ran the buffer dry, and the
  stall lasts until playback resumes.  So HLS, whose segments arrive in bursts, stalls only when a
  segment comes too late, not between bursts (`StallDetector`).  `stall_start` is published when the
  buffer runs dry, `stall` when playback resumes (or the run ends) with the full duration;
- *latency* (glass to glass) is `wall clock at decode - wall_ms` of the `mediaengine.sdk.stamp` burned into the
  picture, when the picture carries one (read from the luma plane: no RGB conversion per frame);
  `missing` counts gaps in the stamp's frame counter;
- *SEI*: every user-data-unregistered SEI message under our UUID (`sei.OUR_UUID`; every UUID with
  `all_sei`) is a `sei` event; others (x264 writes its encoder information, "x264 - core ...
  options: ...", into the first keyframe of every encoder start) are `sei_other` events with their
  UUID and size, counted apart (`sei_other` in the summary).  Messages are parsed from the demuxed
  packets with `mediaengine.sdk.sei` (AVCC or Annex B, independent of decoder side-data support); one
  message is one event, however many access units repeat it: repeats of the same uuid+payload at
  most `sei_gap_frames` apart are one message, with its first and last frame (video access-unit
  indices since connect); after a longer gap the same payload is a new message.  The event is
  published when the message ends (more than `sei_gap_frames` access units without it) or at the
  end of the run.

Input options (`INPUT_OPTIONS`), measured against nginx-rtmp: `fpsprobesize=0` ends probing as soon as
both streams are known (the first keyframe), `analyzeduration` caps it (a video-only RTMP stream waits
for it, because FFmpeg's RTMP client announces audio and video).  `fflags=nobuffer` is left out on
purpose: it throws away the packets read while probing, so the first picture came one GOP later (1.7 s
instead of 0.77 s with a 1 s GOP) with no gain in steady-state latency; pass it in `input_options` to
get it (the pictures buffered while probing only raise the latency of the first 2-3 frames).  The
decoder runs with the low-delay flag and slice threads (frame threads add a frame of delay each).

Opening and every read time out after `timeout_s` (PyAV's interrupt callback; FFmpeg's `rw_timeout`
one second later is only a backstop), so a dead server cannot hang the player: a refused or silent
server is a `ConnectError` (1302) naming the URL with its stream key replaced by `***`.  nginx-rtmp
does not end a play when its publisher leaves, so the end of an RTMP stream shows up as that timeout
(`ended: no data for 5 s`), after a last stall of that length.

Network I/O and decoding run in a `StreamPuller` thread; `PlaySession` turns its records into events
and is pure (times come in as arguments), so it is tested without a network.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import tempfile
import threading
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import av.error
import cv2
import numpy as np
from numpy.typing import NDArray

from . import stamp
from .errors import ConnectError, EngineError, FileError, FormatError
from .redact import redact_url
from .sei import OUR_UUID, X264_UUID, parse_sei_payloads

__all__ = [
    "INPUT_OPTIONS",
    "AudioInfo",
    "Connected",
    "CounterGaps",
    "Ended",
    "LatencyStats",
    "PlayReport",
    "PlaySession",
    "Player",
    "SeiDeduper",
    "SeiMessage",
    "StallDetector",
    "StreamPuller",
    "VideoFrameInfo",
    "VideoPacketInfo",
    "luma",
    "redact_url",
    "save_png",
]

#: FFmpeg input options for a low first-picture delay (see the module docstring)
INPUT_OPTIONS: dict[str, str] = {"fpsprobesize": "0", "analyzeduration": "3000000", "probesize": "5000000"}

Clock = Callable[[], float]


# ---- small pure helpers (`redact_url` is the engine's one URL redaction, from .redact) -------------

_LUMA_FIRST = re.compile(r"^(yuvj?4[0-4][0-4]p|nv12|nv21|gray)$")


def luma(frame: av.VideoFrame) -> NDArray[np.uint8]:
    """The frame's 8-bit luma as an HxW array: a view of plane 0 for 8-bit YUV, else a conversion."""
    name = frame.format.name
    if _LUMA_FIRST.match(name):
        plane = frame.planes[0]
        h, w, stride = frame.height, frame.width, plane.line_size
        buf: NDArray[np.uint8] = np.frombuffer(memoryview(plane), np.uint8, count=h * stride)
        return buf.reshape(h, stride)[:, :w]
    return np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)


def save_png(rgb: NDArray[np.uint8], path: Path) -> Path:
    """Write an HxWx3 rgb24 array as PNG, atomically (temporary file + rename).  Returns the path."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise FormatError(f"cannot encode a {rgb.shape} frame as PNG")
    target = path.resolve()
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".snapshot-", suffix=".png.tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(encoded.tobytes())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise FileError(f"cannot write snapshot {str(target)!r}: {e}; check the folder is writable") from e
    return target


class StallDetector:
    """Stalls as a viewer's player sees them: a playout buffer that runs dry.

    With timestamps (`frame(t, pts)`), frames play at their presentation time: the first one
    `buffer_s` after it arrived (a player buffers before it starts), each later one its pts distance
    after that.  A frame that arrives after its play time means the buffer ran dry: a stall from
    that play time until playback resumes, `buffer_s` after the late frame (a player rebuffers).
    So a stream that arrives in bursts (HLS segments) has no stall as long as every burst comes
    before the previous one has played out, however long the gaps between bursts are.  A jump in
    timestamps (more than `MAX_PTS_JUMP_S`, or backwards) starts the schedule again, uncounted.

    Without timestamps (`pts` None) a stall is a gap of more than `buffer_s` between two frames,
    lasting the whole gap.  Times are from any monotonic clock.
    """

    MAX_PTS_JUMP_S = 10.0

    def __init__(self, threshold_s: float = 0.5) -> None:
        self.threshold_s = threshold_s  # the playout buffer (with pts) or the gap threshold (without)
        self.count = 0
        self.stalled = False  # a stall is going on (detected by `poll`, not ended yet)
        self._total_s = 0.0
        self._last: float | None = None  # arrival of the last frame
        self._base: float | None = None  # clock time at which pts 0 plays
        self._last_pts: float | None = None
        self._frame_s = 1 / 30  # duration of one frame (the last pts step)
        self._dry_at: float | None = None  # when the buffer runs out if no frame comes (or ran out)

    def frame(self, t: float, pts: float | None = None) -> float | None:
        """A frame arrived at `t` (with presentation time `pts` in seconds, if known).  Returns the
        length of the stall it ends, if any."""
        ended: float | None = None
        if pts is None:
            ended = self._end_gap(t)
            self._last = t
            self._dry_at = t + self.threshold_s
            return ended
        if self._base is None or self._last_pts is None or not (
                -1e-3 <= pts - self._last_pts <= self.MAX_PTS_JUMP_S):
            if self._base is not None and self._last_pts is not None and pts < self._last_pts - 1e-3:
                ended = self._close_poll_stall(t)  # a timestamp reset: start the schedule again
            elif self.stalled:
                ended = self._close_poll_stall(t)
            self._base = t + self.threshold_s - pts
        else:
            if pts > self._last_pts:
                self._frame_s = min(pts - self._last_pts, 1.0)
            due = self._base + pts
            if t > due:  # late: the buffer ran dry at `due` (or earlier, when poll saw it)
                began = min(due, self._dry_at) if self.stalled and self._dry_at is not None else due
                if not self.stalled:
                    self.count += 1
                self.stalled = False
                resume = t + self.threshold_s
                self._base = resume - pts
                ended = resume - began
                self._total_s += ended
            elif self.stalled:  # poll guessed the frame duration too short: it was not late after all
                ended = self._close_poll_stall(t)
        self._last, self._last_pts = t, pts
        self._dry_at = self._base + pts + self._frame_s
        return ended

    def poll(self, now: float) -> bool:
        """True once, when a stall begins (the buffer ran dry: nothing more to play)."""
        if self._dry_at is None or self.stalled or now <= self._dry_at:
            return False
        self.stalled = True
        self.count += 1
        return True

    def finish(self, now: float) -> float | None:
        """The run ends at `now`: close a stall in progress and return its length so far."""
        ended = self._close_poll_stall(now) if self._last_pts is not None else self._end_gap(now)
        self.reset()
        return ended

    def reset(self) -> None:
        """A new connection: the wait for its first frame is not a stall."""
        self._last = self._base = self._last_pts = self._dry_at = None
        self.stalled = False

    def total_s(self, now: float) -> float:
        """Stalled time so far, including a stall in progress."""
        began = self._last if self._last_pts is None else self._dry_at  # a gap counts whole without pts
        ongoing = now - began if self.stalled and began is not None else 0.0
        return self._total_s + max(0.0, ongoing)

    def _close_poll_stall(self, t: float) -> float | None:
        if not self.stalled or self._dry_at is None:
            return None
        self.stalled = False
        ended = max(0.0, t - self._dry_at)
        self._total_s += ended
        return ended

    def _end_gap(self, t: float) -> float | None:
        if self._last is None:
            return None
        gap = t - self._last
        if not self.stalled and gap <= self.threshold_s:
            return None
        if not self.stalled:
            self.count += 1
        self.stalled = False
        self._total_s += gap
        return gap


@dataclass
class SeiMessage:
    """One SEI user-data-unregistered message, however many access units carried it."""

    uuid: bytes
    payload: bytes
    first_frame: int
    last_frame: int
    frames: int = 1  # access units that carried it

    def to_event(self) -> dict[str, Any]:
        event: dict[str, Any] = {"type": "sei", "uuid": str(uuidlib.UUID(bytes=self.uuid)),
                                 "text": self.payload.decode("utf-8", errors="replace"),
                                 "first_frame": self.first_frame, "last_frame": self.last_frame,
                                 "frames": self.frames}
        try:
            self.payload.decode("utf-8")
        except UnicodeDecodeError:
            event["hex"] = self.payload.hex()
        return event


#: the name of StreamPuller's thread (see `pull_threads_alive`)
STREAM_PULLER = "stream-puller"
#: distinct SEI messages the deduper keeps open at once (each access unit carries at most
#: `sei.MAX_MESSAGES_PER_ACCESS_UNIT`)
MAX_OPEN_SEI = 256
#: records the pulling thread may queue ahead of the session; beyond, it waits (reads slow down)
MAX_RECORDS = 2048
#: SEI messages kept in a PlayReport (events still report every one; the count stays exact)
MAX_REPORTED_SEI = 1000


class SeiDeduper:
    """Merges a message repeated over many access units into one `SeiMessage`.

    The same uuid+payload seen again within `gap_frames` access units extends the message; after a
    longer gap it is a new message.  `feed` must see every video access unit (with or without SEI)
    so messages close on time; it returns the messages that closed, oldest first.
    """

    def __init__(self, gap_frames: int = 30, max_open: int = MAX_OPEN_SEI) -> None:
        if gap_frames < 1:
            raise ValueError("gap_frames must be at least 1")
        self.gap_frames = gap_frames
        self.max_open = max_open  # distinct messages tracked at once; beyond, the stalest closes early
        self._open: dict[tuple[bytes, bytes], SeiMessage] = {}

    def feed(self, index: int, messages: Iterable[tuple[bytes, bytes]]) -> list[SeiMessage]:
        closed: list[SeiMessage] = []
        for key in dict.fromkeys((bytes(u), bytes(p)) for u, p in messages):
            msg = self._open.get(key)
            if msg is not None and index - msg.last_frame <= self.gap_frames:
                if index > msg.last_frame:
                    msg.last_frame = index
                    msg.frames += 1
                continue
            if msg is not None:
                closed.append(self._open.pop(key))
            elif len(self._open) >= self.max_open:  # a stream sending many distinct payloads: stay bounded
                stalest = min(self._open, key=lambda k: self._open[k].last_frame)
                closed.append(self._open.pop(stalest))
            self._open[key] = SeiMessage(key[0], key[1], index, index)
        for key, msg in list(self._open.items()):
            if index - msg.last_frame > self.gap_frames:
                closed.append(self._open.pop(key))
        return sorted(closed, key=lambda m: m.first_frame)

    def flush(self) -> list[SeiMessage]:
        """Close every open message (end of the run or of a connection)."""
        closed = sorted(self._open.values(), key=lambda m: m.first_frame)
        self._open.clear()
        return closed


def _percentiles(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(np.median(arr)), float(np.percentile(arr, 95))


class LatencyStats:
    """Latency samples: median/p95 over the last `window_s` and over the whole run (last `keep`)."""

    def __init__(self, window_s: float = 1.0, keep: int = 100_000) -> None:
        self.window_s = window_s
        self._window: deque[tuple[float, float]] = deque()
        self._all: deque[float] = deque(maxlen=keep)

    def add(self, t: float, latency_ms: float) -> None:
        self._window.append((t, latency_ms))
        self._all.append(latency_ms)

    def window(self, now: float) -> tuple[float | None, float | None, int]:
        """(median, p95, samples) of the samples taken in (now - window_s, now]."""
        while self._window and self._window[0][0] <= now - self.window_s:
            self._window.popleft()
        median, p95 = _percentiles([ms for _, ms in self._window])
        return median, p95, len(self._window)

    def overall(self) -> tuple[float | None, float | None, int]:
        median, p95 = _percentiles(self._all)
        return median, p95, len(self._all)


class CounterGaps:
    """Frame counters read from the stamps: how many are missing (gaps) or repeated."""

    def __init__(self) -> None:
        self.missing = 0
        self.repeated = 0
        self._last: int | None = None

    def feed(self, counter: int) -> int:
        """Record a counter; returns how many counters are missing just before it."""
        last, self._last = self._last, counter
        if last is None or counter < last:  # first frame, or the source restarted its count
            return 0
        if counter == last:
            self.repeated += 1
            return 0
        gap = counter - last - 1
        self.missing += gap
        return gap

    def reset(self) -> None:
        self._last = None


# ---- records handed from the pulling thread to the session ----------------------------------------

@dataclass(frozen=True)
class Connected:
    t: float  # clock time
    video: dict[str, Any] | None  # {"codec", "width", "height", "fps"}
    audio: dict[str, Any] | None  # {"codec", "rate", "channels"}


@dataclass(frozen=True)
class VideoPacketInfo:
    index: int  # video access unit index since connect (decode order)
    t: float
    keyframe: bool
    sei: tuple[tuple[bytes, bytes], ...]  # (uuid16, payload) of each user-data-unregistered SEI


@dataclass(frozen=True)
class VideoFrameInfo:
    t: float  # clock time right after decoding
    width: int
    height: int
    stamp: stamp.Stamp | None
    latency_ms: float | None  # wall clock at decode - the stamp's wall_ms
    frame: av.VideoFrame | None = None  # attached for the first frame when a snapshot is wanted
    pts_s: float | None = None  # presentation time in seconds (None: the stream has none)


@dataclass(frozen=True)
class AudioInfo:
    t: float
    samples: int
    rate: int
    channels: int


@dataclass(frozen=True)
class Ended:
    t: float
    reason: str
    error: EngineError | None = None  # set when it never connected


Record = Connected | VideoPacketInfo | VideoFrameInfo | AudioInfo | Ended


# ---- the pulling thread ---------------------------------------------------------------------------

def _open_error(url: str, e: BaseException, timeout_s: float, elapsed_s: float) -> EngineError:
    """The error for a failed open.  A read that timed out inside FFmpeg's RTMP client comes back as a
    plain EIO, so the time it took tells a timeout from a refusal."""
    shown = redact_url(url)
    if isinstance(e, av.error.ExitError) or elapsed_s >= 0.9 * timeout_s:
        return ConnectError(f"nothing to play from {shown} within {timeout_s:g} s; is a publisher on that stream?")
    reason = getattr(e, "strerror", None) or type(e).__name__
    if not urlsplit(url).scheme and isinstance(e, FileNotFoundError):
        return FileError(f"cannot open {shown}: {reason}")
    return ConnectError(f"cannot connect to {shown}: {reason}; is the server up and the URL right?")


def pull_threads_alive() -> bool:
    """True while a StreamPuller thread is still inside FFmpeg (an open or a read that only its timeout
    ends): a process must not finalise the interpreter under it (`mediaengine.cli.main.entry`)."""
    return any(t.name == STREAM_PULLER and t.is_alive() for t in threading.enumerate())


class StreamPuller:
    """Opens `url`, demuxes and decodes in a daemon thread; records arrive on `records`.

    With `keep_video > 0` the newest decoded frames are also held (older ones dropped and counted in
    `dropped_video`) for `take_video`; with `audio_format=(rate, channels)` decoded audio is
    resampled to s16 and held for `take_audio`.  `stop()` asks the thread to end and waits a little:
    a read blocked on a silent server ends at the read timeout at the latest, and the thread owns
    (and closes) its container, so nobody else touches it.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0, input_options: dict[str, str] | None = None,
                 snapshot: bool = False, keep_video: int = 0, audio_format: tuple[int, int] | None = None,
                 clock: Clock = time.monotonic, wall_clock: Clock = time.time) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.input_options = {**INPUT_OPTIONS, **(input_options or {})}
        self.records: queue.Queue[Record] = queue.Queue(maxsize=MAX_RECORDS)
        self.decode_errors = 0
        self.dropped_video = 0
        self._snapshot = snapshot
        self._keep_video = keep_video
        self._audio_format = audio_format
        self._clock = clock
        self._wall_clock = wall_clock
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._video: deque[tuple[av.VideoFrame, float]] = deque()
        self._audio: deque[tuple[NDArray[np.int16], float]] = deque()
        self._h264 = False
        self._thread = threading.Thread(target=self._run, name=STREAM_PULLER, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, rec: Record) -> None:
        """Queue a record; when the session is MAX_RECORDS behind, wait for it (reading slows down)
        rather than hold an unbounded backlog.  `Ended` always gets in: it is the last record."""
        while True:
            try:
                if self._stop.is_set() and not isinstance(rec, Ended):
                    self.records.put_nowait(rec)  # stopping: keep it only if there is room
                else:
                    self.records.put(rec, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set() and not isinstance(rec, Ended):
                    return  # nobody will read it
                if isinstance(rec, Ended):
                    with contextlib.suppress(queue.Empty):
                        self.records.get_nowait()  # make room for the end

    def stop(self, wait_s: float = 1.0) -> bool:
        """Ask the thread to end; True if it did within `wait_s`."""
        self._stop.set()
        self._thread.join(wait_s)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def take_video(self) -> list[tuple[av.VideoFrame, float]]:
        """Decoded frames held since the last call, oldest first, with their stream time in seconds."""
        with self._lock:
            out = list(self._video)
            self._video.clear()
        return out

    def take_audio(self) -> list[tuple[NDArray[np.int16], float]]:
        """Resampled (n, channels) int16 audio held since the last call, with its stream time."""
        with self._lock:
            out = list(self._audio)
            self._audio.clear()
        return out

    # -- thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        t0 = self._clock()
        try:
            container = av.open(self.url, "r", options={**self.input_options,
                                                         "rw_timeout": str(round((self.timeout_s + 1) * 1e6))},
                                timeout=(self.timeout_s, self.timeout_s))
        except (av.error.FFmpegError, OSError) as e:
            error = _open_error(self.url, e, self.timeout_s, self._clock() - t0)
            self._put(Ended(self._clock(), "connect failed", error))
            return
        try:
            reason = self._pump(container)
        except EngineError as e:  # before connecting: the stream is unusable
            self._put(Ended(self._clock(), "unusable stream", e))
            return
        finally:
            container.close()
        self._put(Ended(self._clock(), reason))

    def _pump(self, container: Any) -> str:
        vstream = container.streams.video[0] if container.streams.video else None
        astream = container.streams.audio[0] if container.streams.audio else None
        if vstream is None and astream is None:
            raise FormatError(f"{redact_url(self.url)} has no audio or video stream")
        video_info = audio_info = None
        if vstream is not None:
            ctx = vstream.codec_context
            ctx.flags |= av.codec.context.Flags.low_delay
            ctx.thread_type = "SLICE"
            rate = vstream.average_rate or vstream.guessed_rate
            video_info = {"codec": ctx.name, "width": ctx.width, "height": ctx.height,
                          "fps": round(float(rate), 3) if rate else None}
            self._h264 = ctx.name == "h264"  # SEI parsing knows H.264 NAL units only
        resampler = None
        if astream is not None:
            actx = astream.codec_context
            audio_info = {"codec": actx.name, "rate": actx.sample_rate, "channels": actx.layout.nb_channels}
            if self._audio_format is not None:
                rate_out, channels_out = self._audio_format
                resampler = av.AudioResampler(format="s16", layout="mono" if channels_out == 1 else "stereo",
                                              rate=rate_out)
        self._put(Connected(self._clock(), video_info, audio_info))
        streams = [s for s in (vstream, astream) if s is not None]
        index = 0
        last_data = self._clock()
        try:
            for packet in container.demux(*streams):
                if self._stop.is_set():
                    return "stopped"
                if packet.size == 0:  # the flush packets PyAV yields at the end
                    continue
                last_data = self._clock()
                if packet.stream is vstream:
                    self._video_packet(packet, index)
                    index += 1
                else:
                    self._audio_packet(packet, resampler)
        except av.error.ExitError:
            return "stopped" if self._stop.is_set() else f"no data for {self.timeout_s:g} s"
        except EOFError:
            return "end of stream"
        except (av.error.FFmpegError, OSError) as e:
            if self._clock() - last_data >= 0.9 * self.timeout_s:  # RTMP reports its read timeout as EIO
                return f"no data for {self.timeout_s:g} s"
            return f"connection lost: {getattr(e, 'strerror', None) or type(e).__name__}"
        return "end of stream"

    def _decode(self, packet: Any) -> list[Any]:
        try:
            return list(packet.decode())
        except av.error.InvalidDataError:
            self.decode_errors += 1
            return []

    def _video_packet(self, packet: Any, index: int) -> None:
        sei = tuple(parse_sei_payloads(bytes(packet))) if self._h264 else ()
        self._put(VideoPacketInfo(index, self._clock(), bool(packet.is_keyframe), sei))
        for frame in self._decode(packet):
            t, wall_ms = self._clock(), self._wall_clock() * 1000.0
            st = stamp.read(luma(frame))
            latency = wall_ms - st.wall_ms if st is not None else None
            attach = frame if self._snapshot else None
            self._snapshot = False
            pts_s = float(frame.time) if frame.time is not None else None
            self._put(VideoFrameInfo(t, frame.width, frame.height, st, latency, attach, pts_s))
            if self._keep_video:
                with self._lock:
                    self._video.append((frame, float(frame.time or 0.0)))
                    while len(self._video) > self._keep_video:
                        self._video.popleft()
                        self.dropped_video += 1

    def _audio_packet(self, packet: Any, resampler: Any) -> None:
        for frame in self._decode(packet):
            self._put(AudioInfo(self._clock(), frame.samples, frame.sample_rate, frame.layout.nb_channels))
            if resampler is None:
                continue
            t0 = float(frame.time or 0.0)
            for out in resampler.resample(frame):
                pcm = np.ascontiguousarray(out.to_ndarray().reshape(-1, self._audio_format[1]))  # type: ignore[index]
                with self._lock:
                    self._audio.append((pcm, t0))
                    while len(self._audio) > 500:  # ~10 s: nobody is taking it
                        self._audio.popleft()


# ---- turning records into events ------------------------------------------------------------------

def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class PlayReport:
    """What a run saw, in total."""

    url: str  # redacted
    connected: bool = False
    reason: str = ""  # why it ended: "duration", "end of stream", "no data for 5 s", "stopped", ...
    duration_s: float = 0.0
    frames: int = 0
    fps: float | None = None  # over the time between the first and last frame
    stalls: int = 0
    stall_ms: float = 0.0
    latency_ms_median: float | None = None
    latency_ms_p95: float | None = None
    latency_samples: int = 0
    missing: int = 0  # gaps in the stamp counter
    width: int | None = None
    height: int | None = None
    audio_frames: int = 0
    decode_errors: int = 0
    sei: list[dict[str, Any]] = field(default_factory=list)  # our messages (the first MAX_REPORTED_SEI)
    sei_messages: int = 0  # our messages (or every UUID's with all_sei)
    sei_other: int = 0  # messages under other UUIDs (x264's encoder information, ...)
    snapshot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PlaySession:
    """Turns pull records into events and stats.  Pure: every time comes in as an argument.

    `feed(record)` and `tick(now)` return the event dicts to publish; `finish(now, reason)` the last
    ones (open SEI messages, a stall in progress, `ended`, `summary`).  Stats are due every
    `stats_interval_s` after connecting.
    """

    def __init__(self, url: str, start: float, *, stall_s: float = 0.5, sei_gap_frames: int = 30,
                 stats_interval_s: float = 1.0, all_sei: bool = False) -> None:
        self.report = PlayReport(redact_url(url))
        self.all_sei = all_sei  # report every SEI UUID as a message, not only ours
        self.start = start
        self.stats_interval_s = stats_interval_s
        self.stalls = StallDetector(stall_s)
        self.sei = SeiDeduper(sei_gap_frames)
        self.latency = LatencyStats(window_s=stats_interval_s)
        self.counters = CounterGaps()
        self.audio: dict[str, Any] | None = None
        self.last_stats: dict[str, Any] = {}
        self._next_stats: float | None = None
        self._last_stats_t = start
        self._frames_at_last_stats = 0
        self._first_frame_t: float | None = None
        self._last_frame_t: float | None = None
        self._last_index = -1

    @property
    def connected(self) -> bool:
        return self.report.connected

    def _event(self, kind: str, t: float, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "t": round(t - self.start, 3), **fields}

    def feed(self, rec: Record) -> list[dict[str, Any]]:
        if isinstance(rec, VideoPacketInfo):
            self._last_index = rec.index
            return self._sei_events(self.sei.feed(rec.index, rec.sei), rec.t)
        if isinstance(rec, VideoFrameInfo):
            return self._frame(rec)
        if isinstance(rec, AudioInfo):
            self.report.audio_frames += 1
            if self.audio is None:
                self.audio = {"codec": None, "rate": rec.rate, "channels": rec.channels}
            return []
        if isinstance(rec, Connected):
            return self._connected(rec)
        return []  # Ended: the caller decides (finish)

    def _connected(self, rec: Connected) -> list[dict[str, Any]]:
        events = self._end_connection(rec.t)
        self.report.connected = True
        self.stalls.reset()
        self.counters.reset()
        self._last_index = -1
        self._next_stats = rec.t + self.stats_interval_s
        self._last_stats_t = rec.t
        self._frames_at_last_stats = self.report.frames
        if rec.video:
            self.report.width, self.report.height = rec.video.get("width"), rec.video.get("height")
        self.audio = dict(rec.audio) if rec.audio else None
        return [*events, self._event("connected", rec.t, url=self.report.url, video=rec.video, audio=rec.audio,
                                     connect_ms=round((rec.t - self.start) * 1000))]

    def _frame(self, rec: VideoFrameInfo) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        gap = self.stalls.frame(rec.t, rec.pts_s)
        if gap is not None:
            events.append(self._stall_event(rec.t, gap))
        r = self.report
        r.frames += 1
        r.width, r.height = rec.width, rec.height
        if self._first_frame_t is None:
            self._first_frame_t = rec.t
        self._last_frame_t = rec.t
        if rec.stamp is not None:
            self.counters.feed(rec.stamp.counter)
        if rec.latency_ms is not None:
            self.latency.add(rec.t, rec.latency_ms)
        return events

    def _sei_events(self, messages: list[SeiMessage], t: float) -> list[dict[str, Any]]:
        """`sei` events for our UUID (live Q&A); other UUIDs (x264's encoder information, other
        tools') are `sei_other`, counted apart and without their text, unless `all_sei`."""
        events = []
        r = self.report
        for m in messages:
            if m.uuid == OUR_UUID or self.all_sei:
                event = {**m.to_event(), "t": round(t - self.start, 3)}
                r.sei_messages += 1
                if len(r.sei) < MAX_REPORTED_SEI:
                    r.sei.append(event)
            else:
                event = {"type": "sei_other", "t": round(t - self.start, 3), "uuid": str(uuidlib.UUID(bytes=m.uuid)),
                         "bytes": len(m.payload), "first_frame": m.first_frame, "last_frame": m.last_frame,
                         "frames": m.frames}
                if m.uuid == X264_UUID:
                    event["source"] = "x264 encoder information"
                r.sei_other += 1
            events.append(event)
        return events

    def _end_connection(self, now: float) -> list[dict[str, Any]]:
        events = self._sei_events(self.sei.flush(), now)
        gap = self.stalls.finish(now)
        if gap is not None:
            events.append(self._stall_event(now, gap))
        return events

    def _stall_event(self, t: float, gap_s: float) -> dict[str, Any]:
        return self._event("stall", t, duration_ms=round(gap_s * 1000), after_frame=self.report.frames - 1)

    def tick(self, now: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self.stalls.poll(now):
            events.append(self._event("stall_start", now, after_frame=self.report.frames - 1))
        if self._next_stats is not None and now >= self._next_stats:
            events.append(self.stats(now))
            missed = int((now - self._next_stats) // self.stats_interval_s)  # skip intervals a slow caller missed
            self._next_stats += self.stats_interval_s * (missed + 1)
        return events

    def stats(self, now: float) -> dict[str, Any]:
        """The stats event for the interval since the previous one."""
        r = self.report
        elapsed = now - self._last_stats_t
        fps = (r.frames - self._frames_at_last_stats) / elapsed if elapsed > 0 else 0.0
        self._last_stats_t, self._frames_at_last_stats = now, r.frames
        median, p95, n = self.latency.window(now)
        self.last_stats = self._event(
            "stats", now, frames=r.frames, fps=round(fps, 2), stalls=self.stalls.count,
            stall_ms=round(self.stalls.total_s(now) * 1000), latency_ms_median=_r(median), latency_ms_p95=_r(p95),
            latency_samples=n, missing=self.counters.missing, width=r.width, height=r.height,
            audio=None if self.audio is None else {**self.audio, "frames": r.audio_frames})
        return self.last_stats

    def finish(self, now: float, reason: str) -> list[dict[str, Any]]:
        events = self._end_connection(now)
        r = self.report
        r.reason = reason
        r.duration_s = round(now - self.start, 3)
        r.stalls, r.stall_ms = self.stalls.count, round(self.stalls.total_s(now) * 1000)
        if self._first_frame_t is not None and self._last_frame_t is not None and r.frames > 1:
            span = self._last_frame_t - self._first_frame_t
            r.fps = round((r.frames - 1) / span, 2) if span > 0 else None
        median, p95, n = self.latency.overall()
        r.latency_ms_median, r.latency_ms_p95, r.latency_samples = _r(median), _r(p95), n
        r.missing = self.counters.missing
        summary = {k: v for k, v in r.to_dict().items() if k != "sei"}
        return [*events, self._event("ended", now, reason=reason), self._event("summary", now, **summary)]


# ---- the player -----------------------------------------------------------------------------------

class Player:
    """Plays `url` for a while and reports on it (see the module docstring).

    `on_event` gets every event dict as it happens; `run()` returns the `PlayReport`.  It raises
    `ConnectError` (code 1302) when the URL cannot be opened, with the stream key redacted.  `stop()`
    may be called from another thread or a signal handler to end `run()` early.
    """

    def __init__(self, url: str, *, snapshot: Path | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None, timeout_s: float = 5.0,
                 stall_s: float = 0.5, sei_gap_frames: int = 30, input_options: dict[str, str] | None = None,
                 clock: Clock = time.monotonic, wall_clock: Clock = time.time, all_sei: bool = False) -> None:
        self.url = url
        self.all_sei = all_sei
        self.snapshot = snapshot
        self.on_event = on_event
        self.timeout_s = timeout_s
        self.stall_s = stall_s
        self.sei_gap_frames = sei_gap_frames
        self.input_options = dict(input_options or {})
        self._clock = clock
        self._wall_clock = wall_clock
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _publish(self, events: Iterable[dict[str, Any]]) -> None:
        if self.on_event is not None:
            for event in events:
                self.on_event(event)

    def run(self, duration_s: float | None = None) -> PlayReport:
        """Play until `duration_s` seconds after the start (None: until the stream ends or `stop()`)."""
        start = self._clock()
        deadline = None if duration_s is None else start + duration_s
        session = PlaySession(self.url, start, stall_s=self.stall_s, sei_gap_frames=self.sei_gap_frames,
                              all_sei=self.all_sei)
        puller = StreamPuller(self.url, timeout_s=self.timeout_s, input_options=self.input_options,
                              snapshot=self.snapshot is not None, clock=self._clock, wall_clock=self._wall_clock)
        puller.start()
        reason: str | None = None
        try:
            while reason is None:
                now = self._clock()
                if self._stop.is_set():
                    reason = "stopped"
                    break
                if deadline is not None and now >= deadline:
                    reason = "duration"
                    break
                wait = 0.05 if deadline is None else min(0.05, deadline - now)
                try:
                    rec: Record | None = puller.records.get(timeout=max(0.0, wait))
                except queue.Empty:
                    rec = None
                if rec is not None:
                    reason = self._handle(session, rec)
                self._publish(session.tick(self._clock()))
        finally:
            puller.stop(wait_s=1.0)
        with contextlib.suppress(queue.Empty):  # records that arrived before the thread saw the stop
            while not isinstance(rec := puller.records.get_nowait(), Ended):
                self._handle(session, rec)
        if reason == "duration" and not session.connected:
            raise ConnectError(f"nothing to play from {redact_url(self.url)} within {duration_s:g} s; "
                               f"is a publisher on that stream?")
        session.report.decode_errors = puller.decode_errors
        self._publish(session.finish(self._clock(), reason))
        return session.report

    def _handle(self, session: PlaySession, rec: Record) -> str | None:
        if isinstance(rec, Ended):
            if rec.error is not None:
                raise rec.error
            return rec.reason
        self._publish(session.feed(rec))
        if isinstance(rec, VideoFrameInfo) and rec.frame is not None and self.snapshot is not None:
            rgb = np.ascontiguousarray(rec.frame.to_ndarray(format="rgb24"), dtype=np.uint8)
            path = save_png(rgb, self.snapshot)
            session.report.snapshot = str(path)
            self._publish([session._event("snapshot", rec.t, path=str(path), width=rec.width, height=rec.height)])
        return None

