"""External source: pictures and PCM that a Python program pushes in (`Engine.push_video`/`push_audio`).

```yaml
- {id: app, kind: external_source, options: {width: 1280, height: 720, fps: 30, rate: 48000, channels: 2}}
- {id: venc, kind: video_encoder, inputs: {in: app/video}}
- {id: aenc, kind: audio_encoder, inputs: {in: app/audio}}
```

```python
with Engine.start("app.yaml") as eng:
    eng.wait_running()
    eng.push_video("app", rgb_frame)                 # (720, 1280, 3) uint8; or pix_fmt="bgr24", "nv12", ...
    eng.push_audio("app", pcm, sample_rate=44100)     # (n, channels) int16 or float32, any rate
```

The caller's process sends each array over a ZeroMQ socket this node binds in the engine's private
runtime directory (`mediaengine.sdk.ingress`; docs/capture.md "External frames" says why and what it
costs).  Pictures in rgb24, bgr24, rgba, bgra, yuv420p (I420) or nv12 at the node's `width` x
`height` are converted (OpenCV) straight into the output ring slot, as the edge's pixel format:
yuv420p when every consumer takes it (the encoder), else rgb24.  PCM of any rate and channel count,
s16 or float32, is resampled to `rate`/`channels` s16 and cut into `samples_per_frame` frames.

Time: everything is stamped `latency_ms` after it arrives and leaves the node when that time comes:
a jitter buffer, the same for pictures and sound so they stay in sync, that lets a caller be late by
up to that much without a hole.  A picture pushed without `pts_ns` is stamped from its arrival, and
never earlier than one frame interval after the previous one, so a caller faster than real time sees
its pictures queue up and leave at `fps`; with `pts_ns` (the caller's own clock, ns) the first picture
is anchored at its arrival and the rest keep their spacing (one that goes back in time is dropped as
`late`; a caller that fell more than a second behind is anchored again, `resyncs`).  Audio runs on
its sample count from the first chunk's arrival; PCM that comes when the next audio frame is more than
200 ms overdue (the caller paused, or stalled for longer than the jitter buffer) starts the timeline
again from its arrival (`audio_resyncs`; the audio encoder fills the hole with silence).

Overflow (`policy`): at most `depth` pictures beyond those inside the jitter buffer (and
`audio_queue_ms` of PCM beyond it) wait in the node;
`block` makes the caller's push wait for room, `drop_newest` drops the pushed frame, `drop_oldest`
the oldest queued one; every drop is counted (`dropped`, `caller_dropped`, `audio_dropped_ms`).  A
caller that stops simply stops the frames: the encoder's keepalive holds the last picture.  A
malformed message (not sent through the API) is counted in `bad_messages` and skipped: a caller
cannot crash the node.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import zmq
from mediaengine.sdk.actor import POLICIES, Action, Actor, Context, Emit, EndOfStream, Event, OutPort, Reply, option
from mediaengine.sdk.errors import FormatError, OptionError, ResourceError
from mediaengine.sdk.formats import (
    NS,
    AudioFormat,
    Format,
    Frame,
    VideoFormat,
    checked_audio_format,
    checked_video_format,
    format_to_wire,
)
from mediaengine.sdk.ingress import PcmConverter, check_audio, ingress_endpoint, unpack_header
from mediaengine.sdk.pixels import check_video, convert_video

__all__ = ["ExternalSource", "ExternalSourceOptions", "PushClock", "SampleQueue"]

#: a caller whose pictures are this far behind the engine clock is anchored again
RESYNC_NS = NS
#: audio whose next frame is this far overdue when more PCM comes (the caller paused) is anchored again
AUDIO_RESYNC_NS = 200_000_000
#: messages taken from a socket per tick at most (keeps the loop, and its heartbeats, going)
MAX_RECV_PER_TICK = 64


@dataclass(frozen=True)
class ExternalSourceOptions:
    width: int = option(1280, range=(16, 7680), doc="picture width callers push (and the output width)")
    height: int = option(720, range=(16, 4320), doc="picture height callers push (and the output height)")
    fps: float = option(30.0, range=(1.0, 120.0), doc="nominal frame rate: the spacing of pictures pushed without pts")
    video: bool = option(True, doc="take pictures on `video` (false: the pad ends at once)")
    audio: bool = option(True, doc="take PCM on `audio` (false: the pad ends at once)")
    rate: int = option(48000, range=(8000, 192000), doc="output sample rate (pushed PCM is resampled to it)")
    channels: int = option(2, choices=(1, 2), doc="output channels (pushed PCM is remixed to them)")
    samples_per_frame: int = option(1024, doc="samples per output audio frame")
    policy: str = option("block", choices=POLICIES,
                         doc="a caller faster than real time: block (its push waits), drop_newest, drop_oldest")
    depth: int = option(4, range=(1, 64), doc="pictures that may wait in the node before the policy applies")
    audio_queue_ms: int = option(500, range=(50, 10000), doc="PCM that may wait in the node before the policy applies")
    latency_ms: int = option(100, range=(0, 2000),
                             doc="jitter buffer: pictures and PCM leave this long after they arrive, so a caller "
                                 "late by up to this much leaves no hole")
    pix_fmt: str = option("auto", choices=("auto", "rgb24", "yuv420p"),
                          doc="pixel format on the video edge: auto (yuv420p when every consumer takes it, "
                              "else rgb24), or forced")


# ---- pure parts ------------------------------------------------------------------------------------

def payload_of(payload: Any, shape: tuple[int, ...], itemsize: int) -> memoryview:
    """The message's bytes, if they are exactly what its header's shape says; else a FormatError."""
    view = memoryview(payload).cast("B")
    want = int(np.prod(shape, dtype=np.int64)) * itemsize
    if view.nbytes != want:
        raise FormatError(f"a pushed header says {shape} ({want} bytes), the payload has {view.nbytes}")
    return view


class PushClock:
    """Engine pts for pushed pictures (see the module docstring, "Time"); no clock of its own."""

    def __init__(self, interval_ns: int) -> None:
        self.interval_ns = interval_ns
        self.last_ns: int | None = None  # pts of the last picture stamped
        self.resyncs = 0
        self._anchor_ns = 0  # engine time of the caller's `_origin_ns`
        self._origin_ns: int | None = None

    def stamp(self, caller_ns: int | None, now_ns: int) -> int | None:
        """The engine pts of a picture pushed with `caller_ns` (or None) that arrived at `now_ns`;
        None if it goes back in time (the caller's clock went backwards): drop it as late."""
        earliest = now_ns if self.last_ns is None else max(now_ns, self.last_ns + self.interval_ns)
        if caller_ns is None:
            pts = earliest
        else:
            if self._origin_ns is None or self._anchor_ns + caller_ns - self._origin_ns < now_ns - RESYNC_NS:
                if self._origin_ns is not None:
                    self.resyncs += 1
                self._origin_ns, self._anchor_ns = caller_ns, earliest
            pts = self._anchor_ns + caller_ns - self._origin_ns
            if self.last_ns is not None and pts <= self.last_ns:
                return None
        self.last_ns = pts
        return pts


class SampleQueue:
    """s16 PCM waiting to be cut into frames: append chunks, take `n` samples, drop the oldest."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self._chunks: collections.deque[npt.NDArray[np.int16]] = collections.deque()
        self.available = 0

    def push(self, samples: npt.NDArray[np.int16]) -> None:
        if len(samples):
            self._chunks.append(samples)
            self.available += len(samples)

    def take(self, n: int) -> npt.NDArray[np.int16]:
        """The next `n` samples as a new (n, channels) array (n <= available)."""
        out = np.empty((n, self.channels), np.int16)
        got = 0
        while got < n:
            head = self._chunks[0]
            k = min(n - got, len(head))
            out[got:got + k] = head[:k]
            got += k
            if k == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[k:]
        self.available -= n
        return out

    def drop(self, n: int) -> None:
        if n > 0:
            self.take(min(n, self.available))


# ---- the actor -------------------------------------------------------------------------------------

class ExternalSource(Actor[ExternalSourceOptions]):
    """Pictures and PCM pushed by another process, on `video` and `audio`, paced to real time."""

    outputs = {"video": OutPort("video", default=True, pix_fmts=("yuv420p", "rgb24")), "audio": OutPort("audio")}
    Options = ExternalSourceOptions
    is_source = True

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        o: ExternalSourceOptions = options
        if not (o.video or o.audio):
            raise OptionError("both `video` and `audio` are false: nothing to push")
        checked_audio_format(o.rate, o.channels, o.samples_per_frame)

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        o: ExternalSourceOptions = options
        return {"video": checked_video_format(o.width, o.height, o.fps),
                "audio": checked_audio_format(o.rate, o.channels, o.samples_per_frame)}

    def setup(self, ctx: Context) -> None:
        o = self.options
        self._ctx = ctx
        vfmt, afmt = ctx.output_formats.get("video"), ctx.output_formats.get("audio")
        assert isinstance(vfmt, VideoFormat) and isinstance(afmt, AudioFormat)
        self.vfmt, self.afmt = vfmt, afmt
        self._vint = round(NS / o.fps)
        self._aint = o.samples_per_frame * NS // o.rate
        self.tick_interval_ns = max(1_000_000, min(self._vint, self._aint, 20_000_000) // 2)
        self.clock = PushClock(self._vint)
        self._pictures: collections.deque[tuple[int, str, Any]] = collections.deque()  # (pts, pix_fmt, buffer)
        self._pcm = PcmConverter(o.rate, o.channels)
        self._samples = SampleQueue(o.channels)
        self._audio_anchor_ns: int | None = None  # engine time of the next audio frame's first sample
        self._audio_frames = 0  # audio frames emitted since the anchor
        self._latency_ns = o.latency_ms * 1_000_000
        self._cap = o.depth + -(-self._latency_ns // self._vint)  # pictures: the jitter buffer's, then depth
        self._max_queued = (o.audio_queue_ms + o.latency_ms) * o.rate // 1000
        self._started = False
        self.endpoints: dict[str, str] = {}
        self.frames_in = self.frames_emitted = self.dropped = self.caller_dropped = self.late = 0
        self.bad_messages = 0
        self.audio_chunks_in = self.audio_frames_emitted = self.audio_dropped_samples = self.audio_resyncs = 0
        self._caller_dropped = {"video": 0, "audio": 0}
        self._zmq: zmq.Context[Any] | None = None
        self._socks: dict[str, zmq.Socket[bytes]] = {}
        if ctx.runtime_dir:  # the harness has none: tests hand messages to `take_video` / `take_audio`
            self._zmq = zmq.Context()
            for media, on in (("video", o.video), ("audio", o.audio)):
                if on:
                    self._bind(media, ingress_endpoint(ctx.runtime_dir, ctx.node_id, media))

    def _bind(self, media: str, endpoint: str) -> None:
        assert self._zmq is not None
        sock = self._zmq.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.options.depth)
        sock.setsockopt(zmq.MAXMSGSIZE, self.vfmt.width * self.vfmt.height * 4 + 4096 if media == "video"
                        else 64 << 20)  # a peer sending more is disconnected, not read
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as e:
            sock.close(0)
            raise ResourceError(f"external_source cannot bind its {media} ingress {endpoint} ({e}); a Unix socket "
                                "path is at most 107 bytes: use a shorter runtime directory "
                                "(MEDIAENGINE_RUNTIME_DIR) or node id", where=self._ctx.node_id) from e
        self._socks[media] = sock
        self.endpoints[media] = endpoint

    # ---- taking pushed media (the socket, or a test, calls these) ----------------------------
    def take_video(self, raw_header: bytes, payload: Any, now_ns: int) -> bool:
        """Queue one pushed picture; False if it was dropped (policy, late) or malformed (counted)."""
        o = self.options
        try:
            h = unpack_header(raw_header)
            arr = np.frombuffer(payload_of(payload, h.shape, 1), np.uint8)
            arr = check_video(arr.reshape(h.shape), h.fmt, o.width, o.height, node=self._ctx.node_id)
        except FormatError:
            self.bad_messages += 1
            return False
        self._note_caller_drops("video", h.dropped)
        self.frames_in += 1
        if len(self._pictures) >= self._cap:
            if o.policy == "drop_oldest":
                self._pictures.popleft()
                self.dropped += 1
            else:  # drop_newest (block does not take more than depth from its socket)
                self.dropped += 1
                return False
        pts = self.clock.stamp(h.pts_ns, now_ns + self._latency_ns)
        if pts is None:
            self.late += 1
            return False
        self._pictures.append((pts, h.fmt, arr))
        return True

    def take_audio(self, raw_header: bytes, payload: Any, now_ns: int) -> bool:
        """Queue one pushed PCM chunk (resampled now); False if dropped or malformed (counted)."""
        o = self.options
        try:
            h = unpack_header(raw_header)
            dtype = np.int16 if h.fmt == "s16" else np.float32
            arr = np.frombuffer(payload_of(payload, h.shape, np.dtype(dtype).itemsize), dtype)
            pcm, fmt = check_audio(arr.reshape(h.shape), h.rate, h.fmt, node=self._ctx.node_id)
        except FormatError:
            self.bad_messages += 1
            return False
        self._note_caller_drops("audio", h.dropped)
        self.audio_chunks_in += 1
        samples = self._pcm.convert(pcm, fmt, h.rate)
        room = self._max_queued - self._samples.available
        if len(samples) > room and o.policy != "block":  # block: what was received is kept (the socket waits)
            if o.policy == "drop_oldest":
                self._samples.drop(len(samples) - room)
                self.audio_dropped_samples += len(samples) - room
            else:  # drop_newest
                self.audio_dropped_samples += len(samples)
                return False
        # the queue ran dry and the next frame is long overdue: the caller paused (a late node, with PCM
        # queued, just catches up)
        if self._audio_anchor_ns is None or (self._samples.available < o.samples_per_frame
                                             and self._audio_due(0) < now_ns - AUDIO_RESYNC_NS):
            if self._audio_anchor_ns is not None:  # go on from now
                self.audio_resyncs += 1
            self._audio_anchor_ns, self._audio_frames = now_ns + self._latency_ns, 0
        self._samples.push(samples)
        return True

    def _note_caller_drops(self, media: str, total: int) -> None:
        if total > self._caller_dropped[media]:
            self.caller_dropped += total - self._caller_dropped[media]
            self._caller_dropped[media] = total

    def _audio_due(self, k: int) -> int:
        """Engine pts of the k-th audio frame from now on."""
        assert self._audio_anchor_ns is not None
        n = (self._audio_frames + k) * self.options.samples_per_frame
        return self._audio_anchor_ns + n * NS // self.options.rate

    # ---- hooks -------------------------------------------------------------------------------
    def _receive(self, now_ns: int) -> None:
        o = self.options
        for media, sock in self._socks.items():
            take = self.take_video if media == "video" else self.take_audio
            for _ in range(MAX_RECV_PER_TICK):
                if o.policy == "block" and (len(self._pictures) >= self._cap if media == "video"
                                            else self._samples.available >= self._max_queued):
                    break  # leave it in the socket: the caller's send waits (back-pressure)
                try:
                    parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                if len(parts) != 2:
                    self.bad_messages += 1
                    continue
                take(parts[0].bytes, parts[1].buffer, now_ns)

    def on_tick(self, now_ns: int) -> list[Action]:
        o = self.options
        actions: list[Action] = []
        if not self._started:  # a disabled pad ends at once, so a consumer linked to it does not wait
            self._started = True
            actions += [EndOfStream(pad) for pad, on in (("video", o.video), ("audio", o.audio)) if not on]
            actions.append(Event("ingress_ready", {"endpoints": dict(self.endpoints)}))
        self._receive(now_ns)
        slack = self._vint // 4
        while self._pictures and self._pictures[0][0] <= now_ns + slack:
            pts, pix_fmt, arr = self._pictures.popleft()
            out = self._ctx.output_buffer("video")
            if out is None:
                out = np.empty(self.vfmt.shape, np.uint8)
            convert_video(arr, pix_fmt, self.vfmt.pix_fmt, out)
            actions.append(Emit("video", Frame(out, pts_ns=pts, seq=self.frames_emitted)))
            self.frames_emitted += 1
        spf = o.samples_per_frame
        while self._audio_anchor_ns is not None and self._samples.available >= spf and self._audio_due(0) <= now_ns:
            pts = self._audio_due(0)
            actions.append(Emit("audio", Frame(self._samples.take(spf), pts_ns=pts, seq=self.audio_frames_emitted)))
            self._audio_frames += 1
            self.audio_frames_emitted += 1
        return actions

    def on_control(self, command: str, args: dict[str, Any]) -> list[Action]:
        if command == "ingress":  # what `Engine.push_video` / `push_audio` need to know, asked once
            o = self.options
            return [Reply({"video": self.endpoints.get("video"), "audio": self.endpoints.get("audio"),
                           "video_format": format_to_wire(self.vfmt), "audio_format": format_to_wire(self.afmt),
                           "policy": o.policy, "depth": o.depth})]
        return list(super().on_control(command, args) or [])

    def metrics(self) -> dict[str, Any]:
        return {"frames_in": self.frames_in, "frames_emitted": self.frames_emitted, "queued": len(self._pictures),
                "dropped": self.dropped, "caller_dropped": self.caller_dropped, "late": self.late,
                "resyncs": self.clock.resyncs, "bad_messages": self.bad_messages,
                "audio_chunks_in": self.audio_chunks_in, "audio_frames_emitted": self.audio_frames_emitted,
                "audio_queued_ms": self._samples.available * 1000 // self.options.rate,
                "audio_dropped_ms": self.audio_dropped_samples * 1000 // self.options.rate,
                "audio_resyncs": self.audio_resyncs, "pix_fmt": self.vfmt.pix_fmt}

    def stop(self) -> None:
        for sock in self._socks.values():
            sock.close(linger=0)
        self._socks.clear()
        if self._zmq is not None:
            self._zmq.term()
            self._zmq = None
