"""Live source: pull a stream (RTMP, HTTP-FLV, HLS, anything FFmpeg reads), decode it, emit raw frames.

What the remote viewer would see comes out on `video` (rgb24, scaled to `width`x`height`) and `audio`
(s16, resampled to `rate`/`channels`, in `samples_per_frame` chunks), and what `mediaengine play`
reports comes out as events: `connected`, `sei` (each user-data-unregistered SEI message once, with
its first and last frame), `stall_start` / `stall` (no picture for more than `stall_ms`), `latency`
(once a second: median/p95 glass-to-glass latency when the pictures carry an `mediaengine.sdk.stamp`),
`disconnected` and `reconnecting`.  `metrics()` returns the same per-second stats.

    nodes:
      - {id: pull, kind: rtmp_puller, options: {url: "rtmp://127.0.0.1/live/${STREAM_KEY}", width: 1280,
                                                 height: 720}}
      - {id: rec,  kind: recorder, inputs: {video: venc, audio: aenc}, ...}

The network and the decoders run in a `mediaengine.sdk.pull.StreamPuller` thread, so no hook blocks: each
tick drains the decoded pictures (the newest two at most; more means the source is behind, and older
ones are dropped and counted in `dropped_video`) and the audio.  Timestamps are on the engine clock:
the first picture or audio of a connection maps stream time to the tick's engine time, later ones
follow the stream's timestamps (re-anchored if they drift more than 1 s from the engine clock), video
pts strictly increase and pictures closer than 3/4 of an output frame interval are skipped, so the
output never runs faster than `fps`.  Audio pts count samples from the first chunk of a connection.

A failed connect or a lost connection (no data for `timeout_s`, or the stream ended) is retried every
`retry_interval_s`; after `retries` failed attempts in a row the actor stops with `ConnectError`
(code 1302; the stream key is redacted) and the supervisor decides.  The stream key is never put
in events or metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Emit, EndOfStream, Event, OutPort, Reply, option
from mediaengine.sdk.errors import ConnectError, OptionError
from mediaengine.sdk.formats import NS, Format, Frame, checked_audio_format, checked_video_format
from mediaengine.sdk.pull import Connected, Ended, PlaySession, Record, StreamPuller
from mediaengine.sdk.redact import redact_text, redact_url, url_secrets
from numpy.typing import NDArray

__all__ = ["AudioChunker", "PtsMapper", "RtmpPuller", "RtmpPullerOptions"]


@dataclass(frozen=True)
class RtmpPullerOptions:
    url: str = option(doc="what to pull: rtmp://, http(s):// (FLV or an HLS .m3u8), or any URL or file FFmpeg reads")
    width: int = option(640, range=(16, 7680), doc="output video width (pictures are scaled to it)")
    height: int = option(360, range=(16, 4320), doc="output video height")
    fps: float = option(30.0, range=(0.1, 240.0), doc="output frame rate at most (a faster source is thinned out)")
    audio: bool = option(True, doc="emit audio on the `audio` pad (false: the pad ends at once)")
    rate: int = option(48000, range=(8000, 192000), doc="output sample rate")
    channels: int = option(2, choices=(1, 2), doc="output channels: 1 or 2")
    samples_per_frame: int = option(1024, doc="samples per output audio frame")
    timeout_s: float = option(
        5.0, doc="connect timeout, and how long without data before the connection counts as lost")
    retry_interval_s: float = option(1.0, range=(0.0, None), doc="wait between connection attempts")
    retries: int = option(
        5, range=(-1, None), doc="failed attempts in a row before giving up with ConnectError; -1 = never give up")
    stall_ms: float = option(500.0, doc="a gap between decoded pictures longer than this is a stall")
    sei_gap_frames: int = option(30, doc="a repeated SEI message that is absent this many frames has ended")


# ---- pure helpers ---------------------------------------------------------------------------------

class PtsMapper:
    """Stream time (seconds) -> engine time (ns), anchored at the first timestamp of a connection."""

    def __init__(self, max_drift_ns: int = NS) -> None:
        self.max_drift_ns = max_drift_ns
        self._offset_ns: int | None = None

    def reset(self) -> None:
        self._offset_ns = None

    def map(self, stream_s: float, now_ns: int) -> int:
        stream_ns = round(stream_s * NS)
        if self._offset_ns is None or abs(stream_ns + self._offset_ns - now_ns) > self.max_drift_ns:
            self._offset_ns = now_ns - stream_ns
        return stream_ns + self._offset_ns


class AudioChunker:
    """Re-chunks (n, channels) int16 PCM into frames of exactly `samples_per_frame`, counting samples.

    `start(pts_ns)` (re)anchors the sample count at an engine time, never backwards; a frame's pts is
    its first sample's time.
    """

    def __init__(self, rate: int, channels: int, samples_per_frame: int) -> None:
        self.rate, self.channels, self.spf = rate, channels, samples_per_frame
        self._samples = np.zeros((0, channels), dtype=np.int16)
        self._next_sample: int | None = None  # engine sample index of _samples[0]

    def start(self, pts_ns: int) -> None:
        sample = math.ceil(pts_ns * self.rate / NS)
        if self._next_sample is not None:
            sample = max(sample, self._next_sample + len(self._samples))
        self._samples = self._samples[:0]
        self._next_sample = sample

    def push(self, pcm: NDArray[np.int16]) -> list[tuple[NDArray[np.int16], int]]:
        """Add samples; returns the complete frames as (samples, pts_ns)."""
        if self._next_sample is None:
            raise RuntimeError("AudioChunker.start() must come first")
        self._samples = np.concatenate([self._samples, pcm.reshape(-1, self.channels)])
        out = []
        while len(self._samples) >= self.spf:
            chunk = np.ascontiguousarray(self._samples[: self.spf])
            out.append((chunk, self._next_sample * NS // self.rate))
            self._samples = self._samples[self.spf:]
            self._next_sample += self.spf
        return out


# ---- the actor ------------------------------------------------------------------------------------

class RtmpPuller(Actor[RtmpPullerOptions]):
    """Pulls a live stream and emits its decoded pictures and sound, with player events."""

    outputs = {"video": OutPort("video", default=True), "audio": OutPort("audio")}
    Options = RtmpPullerOptions
    is_source = True

    #: monotonic clock in seconds (injectable for tests)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        o: RtmpPullerOptions = options
        if not o.url:
            raise OptionError("`url` is empty: give the stream to pull, e.g. rtmp://host/live/key")
        checked_audio_format(o.rate, o.channels, o.samples_per_frame)  # samples_per_frame vs rate
        if o.timeout_s <= 0:
            raise OptionError(f"timeout_s must be > 0, got {o.timeout_s:g}")

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: RtmpPullerOptions = options
        video = checked_video_format(o.width, o.height, o.fps)
        audio = checked_audio_format(o.rate, o.channels, o.samples_per_frame)
        return {"video": video, "audio": audio}

    def setup(self, ctx: Context) -> None:
        o = self.options
        self.tick_interval_ns = round(NS / o.fps)
        self._session = PlaySession(o.url, self.clock(), stall_s=o.stall_ms / 1000.0,
                                    sei_gap_frames=o.sei_gap_frames)
        self._pts = PtsMapper()
        self._chunker = AudioChunker(o.rate, o.channels, o.samples_per_frame)
        self._last_video_pts: int | None = None
        self._puller: StreamPuller | None = None
        self._next_attempt: float | None = self.clock()  # connect at the first tick
        self._failures = 0  # failed attempts in a row
        self._connections = 0
        self._dropped_video = 0
        self._decode_errors = 0
        self._connected = False
        self._anchor_audio = True
        self._started = False

    # -- connection management ----------------------------------------------------------------------
    def _connect(self) -> None:
        o = self.options
        self._puller = StreamPuller(o.url, timeout_s=o.timeout_s, keep_video=4,
                                    audio_format=(o.rate, o.channels) if o.audio else None, clock=self.clock)
        self._puller.start()
        self._next_attempt = None

    def _lost(self, rec: Ended, now: float) -> list[Action]:
        """The puller ended: count the failure, schedule a retry or give up."""
        assert self._puller is not None
        self._decode_errors += self._puller.decode_errors
        self._dropped_video += self._puller.dropped_video
        self._puller = None
        actions: list[Action] = []
        if self._connected:
            self._connected = False
            actions.append(Event("disconnected", {"reason": rec.reason}))
        self._failures += 1
        o = self.options
        if 0 <= o.retries < self._failures:
            error = rec.error or ConnectError(f"lost {redact_url(o.url)}: {rec.reason}")
            raise type(error)(redact_text(f"{error.message}; gave up after {self._failures} attempts",
                                          url_secrets(o.url)))
        self._next_attempt = now + o.retry_interval_s
        reason = str(rec.error) if rec.error else rec.reason
        actions.append(Event("reconnecting", {"attempt": self._failures, "in_s": o.retry_interval_s,
                                              "reason": redact_text(reason, url_secrets(o.url)),
                                              "code": rec.error.code if rec.error else None}))
        return actions

    # -- hooks --------------------------------------------------------------------------------------
    def on_tick(self, now_ns: int) -> list[Action]:
        now = self.clock()
        actions: list[Action] = []
        if not self._started:
            self._started = True
            if not self.options.audio:
                actions.append(EndOfStream("audio"))
        if self._puller is None and self._next_attempt is not None and now >= self._next_attempt:
            self._connect()
        if self._puller is not None:
            actions += self._drain(now)
        actions += self._events(self._session.tick(now))
        if self._puller is not None:
            actions += self._video(now_ns)
            if self.options.audio:
                actions += self._audio(now_ns)
        return actions

    def _drain(self, now: float) -> list[Action]:
        assert self._puller is not None
        actions: list[Action] = []
        records = self._puller.records
        while not records.empty():
            rec: Record = records.get_nowait()
            if isinstance(rec, Ended):
                actions += self._lost(rec, now)
                break
            if isinstance(rec, Connected):
                self._connected = True
                self._connections += 1
                self._failures = 0
                self._pts.reset()
                self._anchor_audio = True
            actions += self._events(self._session.feed(rec))
        return actions

    def _events(self, events: list[dict[str, Any]]) -> list[Action]:
        out: list[Action] = []
        for event in events:
            data = {k: v for k, v in event.items() if k != "type"}
            kind = event["type"]
            if kind == "stats":
                if event["latency_samples"]:
                    out.append(Event("latency", {k: event[k] for k in
                                                 ("t", "latency_ms_median", "latency_ms_p95", "latency_samples")}))
                continue
            if kind == "connected":
                data["connection"] = self._connections
            out.append(Event(kind, data))
        return out

    def _video(self, now_ns: int) -> list[Action]:
        assert self._puller is not None
        o = self.options
        pending = self._puller.take_video()
        if len(pending) > 2:  # behind: only the newest two can still be shown on time
            self._dropped_video += len(pending) - 2
            pending = pending[-2:]
        min_step = self.tick_interval_ns * 3 // 4 if self.tick_interval_ns else 0
        actions: list[Action] = []
        for frame, stream_s in pending:
            pts = self._pts.map(stream_s, now_ns)
            last = self._last_video_pts
            if last is not None and pts < last + min_step:
                if pts > last - NS // 2:  # a faster source: thin it out to `fps`
                    self._dropped_video += 1
                    continue
                pts = last + min_step  # the stream's clock jumped back (a new connection)
            self._last_video_pts = pts
            rgb = frame.reformat(width=o.width, height=o.height, format="rgb24").to_ndarray()
            actions.append(Emit("video", Frame(np.ascontiguousarray(rgb, dtype=np.uint8), pts_ns=pts)))
        return actions

    def _audio(self, now_ns: int) -> list[Action]:
        assert self._puller is not None
        actions: list[Action] = []
        for pcm, stream_s in self._puller.take_audio():
            if self._anchor_audio:  # the first audio of a connection
                self._anchor_audio = False
                self._chunker.start(self._pts.map(stream_s, now_ns))
            for chunk, pts in self._chunker.push(pcm):
                actions.append(Emit("audio", Frame(chunk, pts_ns=pts)))
        return actions

    def metrics(self) -> dict[str, Any]:
        stats = {k: v for k, v in self._session.last_stats.items() if k not in ("type", "t")}
        puller = self._puller
        return {**stats, "connected": self._connected, "connections": self._connections,
                "failed_attempts": self._failures,
                "dropped_video": self._dropped_video + (puller.dropped_video if puller else 0),
                "decode_errors": self._decode_errors + (puller.decode_errors if puller else 0)}

    def stop(self) -> list[Action]:
        if self._puller is not None:
            self._puller.stop(wait_s=0.5)
            self._puller = None
        events = self._session.finish(self.clock(), "stopped")
        return self._events([e for e in events if e["type"] in ("sei", "stall")])

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "player_stats":
            return [Reply(self.metrics())]
        return super().on_control(command, args)

