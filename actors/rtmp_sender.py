"""RTMP sender: pushes encoded H.264 and/or AAC packets as FLV over RTMP(S), and keeps pushing.

```yaml
- {id: push, kind: rtmp_sender, inputs: {video: venc, audio: aenc}, options: {url: "${PUSH_URL}"}}
```

Threads.  Hooks never touch the network: `on_frame` puts packets in a bounded backlog and returns at
once; a writer thread owned by the actor connects (PyAV/FFmpeg's native RTMP client, `rtmp://` and
`rtmps://`), muxes and reconnects; a watchdog thread detects a server that stopped reading (a blocked
`mux()` or no TCP acknowledgement while bytes wait, for `send_timeout_ms`) and shuts the socket down,
which makes the blocked call fail at once.  Events from the threads are queued and returned by the
next hook (`on_tick` runs every 50 ms), so heartbeats keep coming from the main loop.

Connecting.  The connection opens once every linked input sent its stream `params` (video: with a
keyframe; audio: about every second); an input with none after 2 s of the others' media is left out
of that connection.  FFmpeg holds the GIL while it connects (PyAV 18 calls `avio_open` and writes
the header without releasing it, and passes no protocol options or timeout for outputs: about 0.2 s
on loopback), so a server that accepted TCP and then hung would freeze the whole actor.  With `probe`
(the default) each attempt is therefore first tried from Python (TCP connect, TLS for rtmps, the RTMP
handshake's C0+C1 answered within `connect_timeout_ms`) and only then handed to FFmpeg.  A server
that hangs after answering the probe still freezes the actor; the supervisor then sees missed
heartbeats and restarts it.

Reconnecting.  Attempt 1 follows a loss at once; attempt n >= 2 waits `reconnect_interval_ms *
reconnect_backoff ** (n - 2)`, at most `reconnect_max_interval_ms`.  Refused, reset, broken pipe,
timeouts and "already publishing" (nginx still holds the old publisher: `PermissionError`) are all
retried.  After `reconnect_count` failed attempts in a row `reconnect_fail` is reported and
`on_reconnect_fail` decides: `retry` (default: a live stream should come back when the server does;
attempts go on with the capped backoff) or `stop` (the actor reports `ConnectError` and stops; the
supervisor applies the node's restart policy).  The first connection follows the same schedule.

Timeline.  Each new connection is a new FLV stream that continues the engine's timeline: timestamps
are the packets' own minus the first muxed packet's (the stream starts near 0 and a reconnect
continues where the clock is, jumping over the outage, so viewers that stayed connected see time go
forward only).  Per connection, video waits for a keyframe (audio goes out at once) and a packet
older than the connection's first is dropped (FLV rejects it); if audio went out first and the
keyframe is older by at most `MAX_VIDEO_SHIFT_MS`, video is shifted later by that much for the
connection instead.  A keyframe whose SPS/PPS differ from the connection's gets them in-band.
What was in flight when a connection broke (the packet being muxed, counted as dropped, the one the
muxer held and the bytes in the socket) is lost; the backlog is sent on the new connection.

Latency.  The FLV muxer interleaves by timestamp: it holds the last packet until one with a later
timestamp arrives.  With `max_interleave_delta` = 1 us it never holds more than that one packet,
and `flush_packets` writes each packet out as it leaves the muxer.  AAC reaches us later than the
video of the same instant (encoder look-ahead and 1024-sample frames), which would hold each video
packet until the audio caught up; `audio_offset_ms` moves audio timestamps later by that lag so the
video goes out at once (audio then plays that much later than the picture: a lip-sync shift well
inside what viewers notice).

Backlog and drops.  Packets wait in one queue in arrival order.  When it holds more than
`video_drop_ms` of media (a slow link, or no link), non-keyframe video is dropped: the rest of the
oldest GOP and then incoming video until the next keyframe; audio and keyframes keep flowing.  When
it holds more than `backlog_ms` (the bound while disconnected) the oldest packets go, whatever they
are, with the frames that depend on a dropped keyframe.  Every drop is counted.

Live Q&A.  Command `send_message text=... [repeat_count=1] [delay_ms=0] [keyframe_only=false]`
inserts an H.264 SEI user_data_unregistered NAL (`mediaengine.sdk.sei`, UUID `mediaengine.sdk.sei.OUR_UUID`, the text as
UTF-8) before the picture of the next `repeat_count` video frames (keyframes only, if asked) once
`delay_ms` passed; it returns `{"id": n, "frames": repeat_count}` and the event `sei_sent` follows when
the last of them was muxed (or dropped).

Events: `connected`, `connect_failed`, `connection_lost`, `reconnect_start`, `reconnect_success`,
`reconnect_fail`, `send_timeout`, `sei_sent`, `stream_params_changed`, `input_missing`,
`stream_ended` (the intentional end at stop or end of input: what is queued is sent for up to 0.5 s,
then the trailer and the close; `trailer: false` if the server did not take them within 0.7 s, since a
hook must not block).
Metrics (`metrics()`): state, unsent socket bytes (SIOCOUTQ), media queued (backlog + in flight) in
ms, upload bit rate per stream, throughput acknowledged by the server over 2 s, mux blocking time,
reconnects, drops.  The stream key never appears in events, metrics or errors: the URL is shown as
`redact_url(url)` (scheme, host, port and application only).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import av
import av.container
import av.stream
from mediaengine.actors._rtmp_queue import Backlog, Item, Kind, RateWindow, StartGate, to_ns
from mediaengine.actors._rtmp_socket import find_socket, probe_rtmp, shutdown_socket, socket_stats
from mediaengine.sdk.actor import Action, Actions, Actor, Event, InPort
from mediaengine.sdk.codec import add_stream_from_params, packet_to_av
from mediaengine.sdk.errors import ActorFailedError, ConnectError, FieldError, FormatError, OptionError
from mediaengine.sdk.formats import NS, Format, Frame, Packet
from mediaengine.sdk.redact import redact_url  # the engine's one URL redaction (re-exported here)
from mediaengine.sdk.sei import build_sei_nal, insert_sei

__all__ = ["RtmpSender", "RtmpSenderOptions", "reconnect_delay_ms", "redact_url"]

Clock = Callable[[], int]
OnFail = Literal["retry", "stop"]

SCHEMES = {"rtmp": 1935, "rtmps": 443}
TICK_NS = 50_000_000  # how often on_tick drains the threads' events
WATCH_S = 0.05  # watchdog period
MISSING_INPUT_NS = 2 * NS  # connect without an input that sent no params after this much media
MAX_MESSAGE_BYTES = 16 * 1024  # longest send_message text (UTF-8)
MAX_REPEAT = 10_000
RATE_WINDOW_NS = 2 * NS  # bit rate and throughput window
BLOCK_WINDOW_NS = NS  # mux blocking time window
DRAIN_S = 0.5  # at the end, time left to send what is queued before closing
END_WAIT_S = 0.7  # stop() waits this long for a clean end, then aborts: hooks must not block ~1 s
MUX_OPTIONS = {"flush_packets": "1", "max_interleave_delta": "1"}
STATES = ("waiting", "connecting", "connected", "reconnecting", "failed", "ended")


@dataclass(frozen=True)
class RtmpSenderOptions:
    url: str  # rtmp:// or rtmps:// URL with the stream key; use "${PUSH_URL}" to keep the key out of files
    connect_timeout_ms: int = 5000  # one connection attempt (TCP, TLS, RTMP handshake) may take this long
    reconnect_count: int = 5  # failed attempts in a row before `reconnect_fail` (then on_reconnect_fail)
    reconnect_interval_ms: int = 1000  # wait before attempt 2 (attempt 1 is immediate)
    reconnect_backoff: float = 1.0  # factor on the wait per further attempt (1.0 = constant, e.g. 1.5)
    reconnect_max_interval_ms: int = 30000  # cap on the wait between attempts
    on_reconnect_fail: OnFail = "retry"  # retry: keep trying (capped backoff); stop: ConnectError, actor stops
    send_timeout_ms: int = 3000  # no progress (blocked mux, or no TCP ack while bytes wait) this long = lost
    backlog_ms: int = 3000  # most media kept queued (while disconnected or congested); oldest dropped beyond
    video_drop_ms: int = 1000  # beyond this much queued media, drop non-keyframe video (0 = only at backlog_ms)
    audio_offset_ms: float = 40.0  # audio timestamps moved later by this much so video is never held (0..500)
    probe: bool = True  # check from Python that the server answers before FFmpeg connects (see "Connecting")


# ---- pure helpers ----------------------------------------------------------------------------------

def server_address(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an rtmp/rtmps URL; OptionError (with the URL redacted) otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise OptionError(f"url {redact_url(url)} is not a valid URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise OptionError(f"url {redact_url(url)} must start with rtmp:// or rtmps://")
    if not parts.hostname:
        raise OptionError(f"url {redact_url(url)} has no host")
    return scheme, parts.hostname, port or SCHEMES[scheme]


def reconnect_delay_ms(attempt: int, options: RtmpSenderOptions) -> int:
    """Wait before connection attempt `attempt` (1-based) of an outage: 0 for the first, then the
    interval times backoff ** (attempt - 2), capped."""
    if attempt <= 1:
        return 0
    delay = options.reconnect_interval_ms * options.reconnect_backoff ** (attempt - 2)
    return int(min(delay, options.reconnect_max_interval_ms))


def check_options(options: RtmpSenderOptions, input_formats: Mapping[str, Format]) -> None:
    """Load-time checks (the loader calls them through `output_formats`)."""
    server_address(options.url)
    if not any(pad in input_formats for pad in RtmpSender.inputs):
        raise OptionError("rtmp_sender needs at least one linked input: video and/or audio")
    if options.connect_timeout_ms <= 0 or options.send_timeout_ms <= 0:
        raise OptionError("connect_timeout_ms and send_timeout_ms must be > 0")
    if options.reconnect_count < 1:
        raise OptionError(f"reconnect_count must be >= 1, got {options.reconnect_count}")
    if options.reconnect_interval_ms < 0 or options.reconnect_max_interval_ms < options.reconnect_interval_ms:
        raise OptionError("need 0 <= reconnect_interval_ms <= reconnect_max_interval_ms")
    if options.reconnect_backoff < 1.0:
        raise OptionError(f"reconnect_backoff must be >= 1.0, got {options.reconnect_backoff}")
    if options.backlog_ms < 200:
        raise OptionError(f"backlog_ms must be >= 200, got {options.backlog_ms}")
    if not 0 <= options.video_drop_ms <= options.backlog_ms:
        raise OptionError("need 0 <= video_drop_ms <= backlog_ms")
    if not 0 <= options.audio_offset_ms <= 500:
        raise OptionError(f"audio_offset_ms must be within 0..500, got {options.audio_offset_ms}")


def describe_error(exc: BaseException) -> str:
    """A short description of a network error that never includes the URL (PyAV puts it in str())."""
    if isinstance(exc, av.FFmpegError):
        return f"{type(exc).__name__}: {exc.strerror or 'error'} (errno {exc.errno})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror} (errno {exc.errno})"
    if isinstance(exc, OSError | TimeoutError):
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


# ---- the FFmpeg side ----------------------------------------------------------------------------

class FlvConnection:
    """One RTMP publishing session: an FLV output container with one stream per track, and the TCP
    socket FFmpeg opened for it (found through /proc once connected)."""

    def __init__(self, url: str, params: Mapping[str, dict[str, Any]]) -> None:
        self.container: av.container.OutputContainer = av.open(
            url, "w", format="flv", container_options=dict(MUX_OPTIONS))
        self.streams: dict[str, av.stream.Stream] = {}
        self.sock: tuple[int, int] | None = None  # (fd, inode)
        try:
            for kind, p in params.items():
                self.streams[kind] = add_stream_from_params(self.container, p)
        except BaseException:
            self.container.close()
            raise

    def start(self) -> None:
        """Connect and publish (FFmpeg holds the GIL meanwhile), then write the FLV header."""
        self.container.start_encoding()

    def mux(self, kind: str, packet: Packet, offset: int, data: bytes | None = None) -> None:
        """Send one packet, timestamps shifted back by `offset` (in the packet's time base)."""
        pkt = packet if data is None else packet.replace(data=data)
        self.container.mux(packet_to_av(pkt, self.streams[kind], offset=offset))

    def close(self) -> None:
        self.container.close()

    def locate(self, port: int, addresses: set[str]) -> None:
        """Find the connected socket (call after `start`)."""
        self.sock = find_socket(port, addresses)

    def stats(self) -> tuple[int, int] | None:
        """(unsent bytes, bytes acknowledged by the server), None if the socket is unknown."""
        return socket_stats(*self.sock) if self.sock is not None else None

    def abort(self) -> bool:
        """Shut the socket down so that any blocked or later write fails at once."""
        return shutdown_socket(*self.sock) if self.sock is not None else False


class Connection(Protocol):
    """What the writer needs from a connection (FlvConnection; fakes in the unit tests)."""

    def start(self) -> None: ...
    def mux(self, kind: str, packet: Packet, offset: int, data: bytes | None = None) -> None: ...
    def close(self) -> None: ...
    def locate(self, port: int, addresses: set[str]) -> None: ...
    def stats(self) -> tuple[int, int] | None: ...
    def abort(self) -> bool: ...


Connector = Callable[[str, Mapping[str, dict[str, Any]]], Connection]
Prober = Callable[[str, str, int, float], set[str]]


# ---- the writer and watchdog threads --------------------------------------------------------------

@dataclass
class _Stats:
    """Counters the threads update and `metrics()` reads (under the link's lock)."""

    packets_sent: int = 0
    sent: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0})  # packets per stream
    bytes_sent: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"video": 0, "audio": 0})
    dropped_reasons: dict[str, int] = field(default_factory=dict)
    reconnects: int = 0
    attempts: int = 0
    losses: int = 0
    send_timeouts: int = 0
    sei_sent: int = 0
    unsent_bytes: int = 0
    connected_at_ns: int | None = None


class Link:
    """The writer thread (connect, mux, reconnect) and its watchdog, and what they share with the
    actor's main thread: the backlog, stream params, events and counters, all under one lock."""

    def __init__(self, options: RtmpSenderOptions, kinds: tuple[Kind, ...], *, connector: Connector,
                 prober: Prober | None, clock: Clock = time.monotonic_ns) -> None:
        self.o = options
        self.kinds = kinds
        self.scheme, self.host, self.port = server_address(options.url)
        self.connector = connector
        self.prober = prober
        self.clock = clock
        self.lock = threading.Condition()
        self.backlog = Backlog(options.backlog_ms * 1_000_000, options.video_drop_ms * 1_000_000)
        self.params: dict[str, dict[str, Any]] = {}
        self.events: deque[tuple[str, dict[str, Any]]] = deque()
        self.stats = _Stats()
        self.state = "waiting"
        self.fatal: BaseException | None = None
        self.end_reason: str | None = None  # set by finish(): drain, close, exit
        self.ended = threading.Event()
        self.sei_counts: dict[int, list[int]] = {}  # message id -> [sent, dropped]
        self.audio_offset_ns = round(options.audio_offset_ms * 1_000_000)
        self.t0_ns: int | None = None  # engine time that becomes 0 on the wire
        self.rates = {k: RateWindow(RATE_WINDOW_NS) for k in ("video", "audio")}
        self.blocks = RateWindow(BLOCK_WINDOW_NS)
        self.acks = RateWindow(RATE_WINDOW_NS)
        # current connection, for the watchdog
        self._conn: Connection | None = None
        self._addresses: set[str] = set()
        self._mux_started_ns: int | None = None
        self._last_progress_ns = 0
        self._last_acked: int | None = None
        self._timed_out = False
        self._threads: list[threading.Thread] = []

    # ---- called from the main thread --------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._writer_main, "rtmp-writer"), (self._watchdog_main, "rtmp-watchdog")):
            t = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def emit(self, name: str, **data: Any) -> None:
        self.events.append((name, data))

    def take_events(self) -> list[Action]:
        out: list[Action] = []
        while self.events:
            name, data = self.events.popleft()
            out.append(Event(name, data))
        return out

    def note_params(self, kind: Kind, params: dict[str, Any]) -> None:
        with self.lock:
            old = self.params.get(kind)
            self.params[kind] = params
            if old is None:
                self.lock.notify_all()

    def push(self, item: Item) -> None:
        with self.lock:
            dropped = self.backlog.push(item)
            for it in dropped:
                self._count_drop(it, "backlog")
            self.lock.notify_all()

    def finish(self, reason: str, timeout_s: float = END_WAIT_S) -> None:
        """Send what is queued (bounded), close the stream and stop the threads.  If that takes more
        than `timeout_s` (a server that stopped reading), the socket is shut down: the stream ends
        without its trailer instead of blocking the caller."""
        with self.lock:
            if self.end_reason is None:
                self.end_reason = reason
            self.lock.notify_all()
            conn = self._conn
        if not self.ended.wait(timeout_s) and conn is not None:
            conn.abort()
            self.ended.wait(0.25)
        for t in self._threads:
            t.join(0.05)

    # ---- helpers for both threads -----------------------------------------------------------
    def _count_drop(self, item: Item, reason: str) -> None:
        """Count a dropped packet (caller holds the lock); SEI carried by it is accounted for."""
        self.stats.dropped[item.kind] += 1
        self.stats.dropped_reasons[reason] = self.stats.dropped_reasons.get(reason, 0) + 1
        for msg_id, last in item.sei:
            counts = self.sei_counts.setdefault(msg_id, [0, 0])
            counts[1] += 1
            if last:
                self._sei_done(msg_id)

    def _sei_done(self, msg_id: int) -> None:
        sent, dropped = self.sei_counts.pop(msg_id, [0, 0])
        self.stats.sei_sent += 1
        self.emit("sei_sent", id=msg_id, frames=sent, dropped=dropped)

    def _set_state(self, state: str) -> None:
        with self.lock:
            self.state = state

    def _stopping(self) -> bool:
        return self.end_reason is not None

    # ---- the writer thread -----------------------------------------------------------------------
    def _writer_main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # a bug or an unexpected library error: the main thread reports it
            with self.lock:
                self.fatal = exc
                self.state = "failed"
        finally:
            self.ended.set()

    def _run(self) -> None:
        tracks = self._wait_for_params()
        if tracks is None:
            self._end_without_connection("never connected")
            return
        lost_ns: int | None = None  # when the current outage began (None: never connected yet)
        ever_connected = False
        while True:
            conn = self._connect(tracks, lost_ns, ever_connected)
            if conn is None:
                self._end_without_connection("stopped while reconnecting" if ever_connected else "never connected")
                return
            ever_connected = True
            reason = self._pump(conn, tracks)
            if reason == "end":
                return
            lost_ns = self.clock()
            with self.lock:
                for kind in self.kinds:  # an input left out before may be here now
                    if kind in self.params:
                        tracks[kind] = self.params[kind]

    def _wait_for_params(self) -> dict[str, dict[str, Any]] | None:
        """Params of every linked input, or of those that have them once the others are 2 s late."""
        with self.lock:
            while True:
                if self._stopping():
                    return None
                have: dict[str, dict[str, Any]] = {k: self.params[k] for k in self.kinds if k in self.params}
                if len(have) == len(self.kinds):
                    return have
                if have and self.backlog.span_ns() >= MISSING_INPUT_NS:
                    for k in self.kinds:
                        if k not in have:
                            self.emit("input_missing", pad=k, note="connecting without it")
                    return have
                self.lock.wait(0.1)

    def _connect(self, tracks: dict[str, dict[str, Any]], lost_ns: int | None,
                 ever_connected: bool) -> Connection | None:
        """Attempts until one succeeds (None if stopped meanwhile); raises ConnectError for `stop`."""
        o = self.o
        self._set_state("reconnecting" if ever_connected else "connecting")
        attempt = 0
        last_error = ""
        reported_fail = False
        while not self._stopping():
            attempt += 1
            delay_ms = reconnect_delay_ms(attempt, o)
            if delay_ms:
                with self.lock:
                    self.lock.wait_for(self._stopping, delay_ms / 1000)
                if self._stopping():
                    return None
            if attempt > 1 or ever_connected:
                self.emit("reconnect_start", attempt=attempt, delay_ms=delay_ms,
                          last_error=last_error or None)
            with self.lock:
                self.stats.attempts += 1
            t0 = self.clock()
            try:
                conn = self._open(tracks)
            except (OSError, av.FFmpegError, ConnectionError, TimeoutError) as exc:
                last_error = describe_error(exc)
                give_up = attempt >= o.reconnect_count and not reported_fail
                last = give_up and o.on_reconnect_fail == "stop"
                self.emit("connect_failed", attempt=attempt, error=last_error,
                          retry_in_ms=None if last else reconnect_delay_ms(attempt + 1, o))
                if give_up:
                    reported_fail = True
                    self.emit("reconnect_fail", attempts=attempt, error=last_error, action=o.on_reconnect_fail,
                              url=redact_url(o.url))
                    if last:
                        self._set_state("failed")
                        raise ConnectError(
                            f"cannot reach {redact_url(o.url)} after {attempt} attempts ({last_error}); "
                            "on_reconnect_fail is 'stop'") from None
                continue
            now = self.clock()
            connect_ms = round((now - t0) / 1e6, 1)
            with self.lock:
                self.state = "connected"
                self.stats.connected_at_ns = now
                if ever_connected:
                    self.stats.reconnects += 1
            if not ever_connected:
                self.emit("connected", url=redact_url(o.url), attempt=attempt, connect_ms=connect_ms,
                          streams=sorted(tracks))
            if attempt > 1 or ever_connected:
                outage = None if lost_ns is None else round((now - lost_ns) / 1e6)
                self.emit("reconnect_success", attempts=attempt, connect_ms=connect_ms, outage_ms=outage)
            return conn
        return None

    def _open(self, tracks: Mapping[str, dict[str, Any]]) -> Connection:
        timeout_s = self.o.connect_timeout_ms / 1000
        if self.prober is not None:
            self._addresses = self.prober(self.scheme, self.host, self.port, timeout_s)
        conn = self.connector(self.o.url, tracks)
        try:
            conn.start()
        except BaseException:
            with contextlib.suppress(OSError, av.FFmpegError):
                conn.close()
            raise
        conn.locate(self.port, self._addresses)
        with self.lock:
            self._conn = conn
            self._timed_out = False
            self._last_acked = None
            self._last_progress_ns = self.clock()
        return conn

    def _pump(self, conn: Connection, tracks: dict[str, dict[str, Any]]) -> str:
        """Mux queued packets until the end ("end") or a failure ("lost")."""
        gate = StartGate("video" in tracks)
        header_extradata = tracks.get("video", {}).get("extradata")  # SPS/PPS in this connection's header
        announced = header_extradata
        connected_ns = self.clock()
        drain_deadline: float | None = None
        while True:
            with self.lock:
                item = self.backlog.pop()
                if item is None:
                    if self._stopping():
                        return self._end(conn, trailer=True)
                    self.lock.wait(0.1)
                    if self._timed_out:
                        return self._lose(conn, "send_timeout", "no progress", connected_ns)
                    continue
                if self._stopping():
                    drain_deadline = drain_deadline or time.monotonic() + DRAIN_S
                    if time.monotonic() > drain_deadline:
                        self._count_drop(item, "end")
                        for it in self.backlog.clear():
                            self._count_drop(it, "end")
                        return self._end(conn, trailer=True)
            if item.kind not in tracks:
                with self.lock:
                    self._count_drop(item, "no_stream")
                continue
            if self.t0_ns is None:
                self.t0_ns = item.dts_ns
            extra = self.audio_offset_ns if item.kind == "audio" else 0
            ok, shift, why = gate.admit(item.kind, item.dts_ns - self.t0_ns + extra, item.key)
            if not ok:
                with self.lock:
                    self._count_drop(item, why)
                continue
            data = None
            if item.kind == "video" and item.key and item.packet.params:
                new = item.packet.params.get("extradata")
                annexb = isinstance(new, bytes) and new.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))
                if annexb and isinstance(new, bytes) and new != header_extradata:
                    data = insert_sei(item.packet.data, new)  # new SPS/PPS in-band, before the slices
                    if new != announced:
                        announced = new
                        self.emit("stream_params_changed", pad="video", note="new SPS/PPS sent in-band")
            offset = self._offset(item.packet.time_base, extra + shift)
            start = self.clock()
            with self.lock:
                self._mux_started_ns = start
            try:
                conn.mux(item.kind, item.packet, offset, data)
            except (OSError, av.FFmpegError) as exc:
                with self.lock:
                    self._mux_started_ns = None
                    self._count_drop(item, "connection_lost")
                    timed_out = self._timed_out
                if self._stopping():  # aborted by finish(): the end, not a loss
                    return self._end(conn, trailer=False)
                reason = "send_timeout" if timed_out else "error"
                return self._lose(conn, reason, describe_error(exc), connected_ns)
            end = self.clock()
            size = len(item.packet.data)
            with self.lock:
                self._mux_started_ns = None
                self.stats.packets_sent += 1
                self.stats.sent[item.kind] += 1
                self.stats.bytes_sent += size
                self.rates[item.kind].add(end, size)
                self.blocks.add(end, (end - start) / 1e6)
                for msg_id, last in item.sei:
                    counts = self.sei_counts.setdefault(msg_id, [0, 0])
                    counts[0] += 1
                    if last:
                        self._sei_done(msg_id)

    def _offset(self, tb: Fraction, extra_ns: int) -> int:
        """Ticks of `tb` to subtract so that t0 becomes 0 and `extra_ns` is added (floor)."""
        assert self.t0_ns is not None
        return math.floor((self.t0_ns - extra_ns) / (tb * NS))

    def _lose(self, conn: Connection, reason: str, error: str, connected_ns: int) -> str:
        """The connection broke: close it without waiting on the network and say so."""
        self._close(conn, graceful=False)
        with self.lock:
            self.stats.losses += 1
            self.state = "reconnecting"
        self.emit("connection_lost", reason=reason, error=error,
                  connected_s=round((self.clock() - connected_ns) / NS, 3), url=redact_url(self.o.url))
        return "lost"

    def _end(self, conn: Connection, *, trailer: bool) -> str:
        """The intentional end: write the trailer and close; emits `stream_ended`."""
        ok = self._close(conn, graceful=trailer)
        with self.lock:
            self.state = "ended"
            sent = self.stats.packets_sent
        self.emit("stream_ended", reason=self.end_reason, trailer=ok, packets=sent, url=redact_url(self.o.url))
        return "end"

    def _end_without_connection(self, note: str) -> None:
        with self.lock:
            self.state = "ended"
            for it in self.backlog.clear():
                self._count_drop(it, "end")
            sent = self.stats.packets_sent
        self.emit("stream_ended", reason=self.end_reason, trailer=False, packets=sent, url=redact_url(self.o.url),
                  note=note)

    def _close(self, conn: Connection, *, graceful: bool) -> bool:
        """Close `conn`; a broken or stalled connection is shut down first so no write can block.
        Returns whether the trailer went out."""
        with self.lock:
            stalled = self._timed_out or (self._last_acked is not None and self.stats.unsent_bytes > 0
                                          and self.clock() - self._last_progress_ns > NS)
            self._conn = None
            self.stats.unsent_bytes = 0
            self.stats.connected_at_ns = None
        if not graceful or stalled:
            conn.abort()
        try:
            conn.close()
        except (OSError, av.FFmpegError):
            return False
        return graceful and not stalled

    # ---- the watchdog thread -----------------------------------------------------------------
    def _watchdog_main(self) -> None:
        while not self.ended.wait(WATCH_S):
            try:
                self._watch_once()
            except OSError:
                continue  # /proc or the socket went away under us: next round

    def _watch_once(self) -> None:
        now = self.clock()
        limit_ns = self.o.send_timeout_ms * 1_000_000
        with self.lock:
            conn, started = self._conn, self._mux_started_ns
            if conn is None or self._timed_out:
                return
        stats = conn.stats()
        fire = ""
        with self.lock:
            if stats is not None:
                outq, acked = stats
                self.stats.unsent_bytes = outq
                if self._last_acked is None or acked != self._last_acked or outq == 0:
                    if self._last_acked is not None and acked > self._last_acked:
                        self.acks.add(now, acked - self._last_acked)
                    self._last_acked = acked
                    self._last_progress_ns = now
                elif now - self._last_progress_ns > limit_ns:
                    fire = "no_ack"
            if started is not None and now - started > limit_ns:
                fire = "mux_blocked"
            if fire:
                self._timed_out = True
                self.stats.send_timeouts += 1
                self.lock.notify_all()
        if fire:
            self.emit("send_timeout", timeout_ms=self.o.send_timeout_ms, cause=fire,
                      unsent_bytes=stats[0] if stats else None)
            conn.abort()

    # ---- metrics -------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        with self.lock:
            s = self.stats
            rates = {k: self.rates[k].total(now) * 8 / (RATE_WINDOW_NS / NS) / 1000 for k in self.rates}
            blocks = self.blocks.values(now)
            backlog_ms = self.backlog.span_ns() / 1e6
            total_rate_bps = sum(rates.values()) * 1000
            inflight_ms = s.unsent_bytes * 8 / total_rate_bps * 1000 if total_rate_bps > 0 else 0.0
            return {
                "state": self.state,
                "url": redact_url(self.o.url),
                "connected_s": round((now - s.connected_at_ns) / NS, 1) if s.connected_at_ns else 0.0,
                "unsent_bytes": s.unsent_bytes,
                "queued_ms": round(backlog_ms + inflight_ms, 1),
                "backlog_ms": round(backlog_ms, 1),
                "inflight_ms": round(inflight_ms, 1),
                "backlog_packets": len(self.backlog),
                "backlog_bytes": self.backlog.bytes,
                "bitrate_kbps": {"video": round(rates["video"], 1), "audio": round(rates["audio"], 1),
                                 "total": round(sum(rates.values()), 1)},
                "throughput_kbps": round(self.acks.total(now) * 8 / (RATE_WINDOW_NS / NS) / 1000, 1),
                "mux_block_ms": {"max": round(max(blocks, default=0.0), 3),
                                 "avg": round(sum(blocks) / len(blocks), 3) if blocks else 0.0},
                "packets_sent": s.packets_sent,
                "packets_sent_by_stream": dict(s.sent),
                "bytes_sent": s.bytes_sent,
                "reconnects": s.reconnects,
                "connect_attempts": s.attempts,
                "connection_losses": s.losses,
                "send_timeouts": s.send_timeouts,
                "dropped": {**s.dropped, "total": sum(s.dropped.values())},
                "dropped_reasons": dict(s.dropped_reasons),
                "sei_sent": s.sei_sent,
            }


# ---- the actor -----------------------------------------------------------------------------------

@dataclass
class _Message:
    id: int
    nal: bytes
    remaining: int
    due_ns: int
    keyframe_only: bool


def message_args(args: Mapping[str, Any]) -> tuple[str, int, float, bool]:
    """Validate `send_message` arguments: (text, repeat_count, delay_ms, keyframe_only)."""
    known = {"text", "repeat_count", "delay_ms", "keyframe_only"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise FieldError(f"send_message does not take {', '.join(unknown)}; arguments: {', '.join(sorted(known))}")
    text = args.get("text")
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = str(text)  # `ctl ... text=42` arrives as a number
    if not isinstance(text, str):
        raise FieldError("send_message needs text=<string>")
    if len(text.encode()) > MAX_MESSAGE_BYTES:
        raise FieldError(f"text is {len(text.encode())} bytes; at most {MAX_MESSAGE_BYTES}")
    repeat = args.get("repeat_count", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= MAX_REPEAT:
        raise FieldError(f"repeat_count must be an integer 1..{MAX_REPEAT}, got {repeat!r}")
    delay = args.get("delay_ms", 0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or not 0 <= delay <= 3_600_000:
        raise FieldError(f"delay_ms must be a number 0..3600000, got {delay!r}")
    key_only = args.get("keyframe_only", False)
    if not isinstance(key_only, bool):
        raise FieldError(f"keyframe_only must be true or false, got {key_only!r}")
    return text, repeat, float(delay), key_only


class RtmpSender(Actor[RtmpSenderOptions]):
    inputs = {
        "video": InPort("encoded", codecs=("h264",), policy="block", required=False),
        "audio": InPort("encoded", codecs=("aac",), policy="block", required=False),
    }
    outputs = {}
    Options = RtmpSenderOptions

    #: seams for tests: how a connection is made and probed
    connector: Connector = FlvConnection
    prober: Prober | None = staticmethod(probe_rtmp)

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        check_options(options, input_formats)
        return {}

    def __init__(self, options: RtmpSenderOptions, **kwargs: Any) -> None:
        super().__init__(options, **kwargs)
        self.tick_interval_ns: int | None = TICK_NS
        self.clock: Clock = time.monotonic_ns
        self.kinds: tuple[Kind, ...] = tuple(k for k in ("video", "audio") if k in self.input_formats)
        self.link: Link | None = None
        self._messages: list[_Message] = []
        self._next_message = 1
        self._ended_pads: set[str] = set()
        self._fatal_reported = False

    def setup(self) -> None:
        check_options(self.options, self.input_formats)
        prober = type(self).prober if self.options.probe else None
        self.link = Link(self.options, self.kinds, connector=type(self).connector, prober=prober, clock=self.clock)
        self.link.start()

    # ---- hooks -------------------------------------------------------------------------------
    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        link = self._link()
        if pad not in self.kinds:
            raise FormatError(f"rtmp_sender got media on unlinked pad {pad!r}")
        if not isinstance(media, Packet):
            raise FormatError(f"rtmp_sender takes encoded packets on {pad!r}, got a raw frame")
        kind: Kind = "video" if pad == "video" else "audio"
        if media.params:
            link.note_params(kind, media.params)
        sei: tuple[tuple[int, bool], ...] = ()
        if kind == "video" and self._messages:
            media, sei = self._attach_messages(media)
        link.push(Item(kind, media, to_ns(media.dts, media.time_base), sei))
        return self._events()

    def on_tick(self, now_ns: int) -> Actions:
        return self._events()

    def on_control(self, command: str, args: dict[str, Any]) -> Any:
        if command != "send_message":
            return super().on_control(command, args)
        if "video" not in self.kinds:
            raise FieldError("send_message needs a linked video input (SEI travels in H.264)")
        text, repeat, delay_ms, key_only = message_args(args)
        msg = _Message(self._next_message, build_sei_nal(text.encode()), repeat,
                       self.clock() + round(delay_ms * 1_000_000), key_only)
        self._next_message += 1
        self._messages.append(msg)
        return {"id": msg.id, "frames": repeat}

    def on_eos(self, pad: str) -> Actions:
        self._ended_pads.add(pad)
        return self._events()

    def stop(self) -> Actions:
        link = self.link
        if link is None:
            return None
        reason = "eos" if self.kinds and set(self.kinds) <= self._ended_pads else "stop"
        link.finish(reason)
        return link.take_events()

    def metrics(self) -> dict[str, Any]:
        if self.link is None:
            return {"state": "waiting", "url": redact_url(self.options.url)}
        snap = self.link.snapshot()
        snap["messages_pending"] = len(self._messages)
        return snap

    # ---- internals --------------------------------------------------------------------------
    def _link(self) -> Link:
        if self.link is None:
            raise ActorFailedError("rtmp_sender used before setup()")
        return self.link

    def _events(self) -> list[Action]:
        link = self._link()
        actions = link.take_events()
        if link.fatal is not None:
            if not self._fatal_reported:  # first hand the events (reconnect_fail...) out, raise next time
                self._fatal_reported = True
                return actions
            exc = link.fatal
            if isinstance(exc, ConnectError):
                raise exc
            raise ActorFailedError(f"rtmp_sender writer thread failed: {describe_error(exc)}",
                                   where=self.node_id or None)
        return actions

    def _attach_messages(self, packet: Packet) -> tuple[Packet, tuple[tuple[int, bool], ...]]:
        """Insert the SEI of every due message into this video access unit."""
        now = self.clock()
        nals = b""
        marks: list[tuple[int, bool]] = []
        keep: list[_Message] = []
        for m in self._messages:
            if now >= m.due_ns and (packet.keyframe or not m.keyframe_only):
                nals += m.nal
                m.remaining -= 1
                marks.append((m.id, m.remaining == 0))
            if m.remaining > 0:
                keep.append(m)
        self._messages = keep
        if not nals:
            return packet, ()
        return packet.replace(data=insert_sei(packet.data, nals)), tuple(marks)
