"""The RTMP sender's publisher: the writer thread (connect, mux, reconnect) and its watchdog (a server
that stopped reading), and what they share with the actor's main thread under one lock.  See
docs/rtmp-sender.md for the design (connecting, reconnecting, timeline, backlog and drops)."""

from __future__ import annotations

import contextlib
import math
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
from mediaengine.sdk.actor import Action, Event
from mediaengine.sdk.errors import ConnectError, TlsError
from mediaengine.sdk.formats import NS
from mediaengine.sdk.sei import insert_sei

from .connection import Connection, Connector, Prober
from .options import RtmpSenderOptions, describe_error, reconnect_delay_ms, redact_url, server_address
from .queue import Backlog, Item, Kind, RateWindow, StartGate

Clock = Callable[[], int]


def filler_nal(size: int) -> bytes:
    """An Annex B H.264 filler-data NAL unit (type 12) of about `size` bytes: decoders skip it, the
    link carries it (the rate controller's probe).  0xFF payload never forms a start code."""
    if size <= 0:
        return b""
    return b"\x00\x00\x00\x01\x0c" + b"\xff" * max(1, size - 6) + b"\x80"

WATCH_S = 0.05  # watchdog period
IN_FLIGHT_FLOOR = 8192  # bytes the socket may always hold (a few packets)
MISSING_INPUT_NS = 2 * NS  # connect without an input that sent no params after this much media
RATE_WINDOW_NS = 2 * NS  # bit rate and throughput window
BLOCK_WINDOW_NS = NS  # mux blocking time window
DRAIN_S = 0.5  # at the end, time left to send what is queued before closing
END_WAIT_S = 0.7  # stop() waits this long for a clean end, then aborts: hooks must not block ~1 s
STATES = ("waiting", "connecting", "connected", "reconnecting", "failed", "ended")


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
    acked_bytes: int = 0  # acknowledged by the server, all connections (the rate controller's throughput)
    filler_bytes: int = 0  # H.264 filler sent to probe the link (rate controller)


class Link:
    """The writer thread (connect, mux, reconnect) and its watchdog, and what they share with the
    actor's main thread: the backlog, stream params, events and counters, all under one lock."""

    def __init__(self, options: RtmpSenderOptions, kinds: tuple[Kind, ...], *, connector: Connector,
                 prober: Prober | None, clock: Clock = time.monotonic_ns,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.o = options
        self.kinds = kinds
        self.scheme, self.host, self.port = server_address(options.url)
        self.connector = connector
        self.prober = prober
        self.tls_context = tls_context  # the probe's, for rtmps (certificate and host name checked)
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
        self.rates = {k: RateWindow(RATE_WINDOW_NS) for k in ("video", "audio")}  # sent
        self.arrivals = {k: RateWindow(RATE_WINDOW_NS) for k in ("video", "audio")}  # handed to the sender
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
        # the rate controller's probe: H.264 filler data added to each video packet (0 = none)
        self.filler_kbps = 0
        # the rate controller's plan (video + audio + probe, kbit/s): what the socket may hold is bounded
        # from it (0 = the kernel's own bound)
        self.plan_kbps = 0.0
        self._bound_plan = 0.0  # the plan the socket's bound was set for
        self._last_video_ns = 0  # dts of the last video packet sent (filler pacing)

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
            self.arrivals[item.kind].add(self.clock(), len(item.packet.data))
            dropped = self.backlog.push(item)
            for it in dropped:
                self._count_drop(it, "backlog")
            self.lock.notify_all()

    def drop_stale_video(self) -> int:
        """Drop the queued video that is not a keyframe, and the video that comes until the next
        keyframe (the rate controller asks the encoder for one): after a cut, what was queued for the
        old link would reach the viewer seconds late; audio stays.  Returns how many packets went."""
        with self.lock:
            dropped = self.backlog.drop_video()
            for it in dropped:
                self._count_drop(it, "stale")
            return len(dropped)

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
            except TlsError as exc:  # not verified: retrying cannot help, and must not connect anyway
                self.emit("connect_failed", attempt=attempt, error=exc.message, retry_in_ms=None)
                self._set_state("failed")
                raise
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
            self._addresses = self.prober(self.scheme, self.host, self.port, timeout_s, self.tls_context)
        conn = self.connector(self.o.url, tracks)
        try:
            conn.start()
        except BaseException:
            with contextlib.suppress(OSError, av.FFmpegError):
                conn.close()
            raise
        conn.locate(self.port, self._addresses)
        with self.lock:
            self._bound_plan = 0.0  # a new socket: bound at the next watchdog round
            self._conn = conn
            self._timed_out = False
            self._last_acked = None
            self._last_progress_ns = self.clock()
        return conn

    def _pump(self, conn: Connection, tracks: dict[str, dict[str, Any]]) -> str:
        """Mux queued packets until the end ("end") or a failure ("lost")."""
        gate = StartGate("video" in tracks)
        header = tracks.get("video", {}).get("extradata")  # SPS/PPS of this connection's sequence header
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
            new_header = False
            if item.kind == "video" and item.key and item.packet.params:
                params = item.packet.params
                new = params.get("extradata")
                annexb = isinstance(new, bytes) and new.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))
                if annexb and isinstance(new, bytes) and new != header:
                    # the encoder reopened (new size): SPS/PPS in-band before the slices, and a new AVC
                    # sequence header before this keyframe (connection.mux), which nginx-rtmp relays to
                    # its viewers and caches for those who join later
                    data = insert_sei(item.packet.data, new)
                    new_header = True
                    header = new
                    self.emit("stream_params_changed", pad="video", width=params.get("width"),
                              height=params.get("height"), note="new AVC sequence header")
            filler = b""
            if item.kind == "video":
                # filler for the media time since the previous video packet (the frame rate may be lowered)
                gap_s = min(0.5, max(1 / 120, (item.dts_ns - self._last_video_ns) / NS)) if self._last_video_ns else 0.0
                self._last_video_ns = item.dts_ns
                if self.filler_kbps > 0 and gap_s:
                    filler = filler_nal(round(self.filler_kbps * 125 * gap_s))
                    data = (data if data is not None else item.packet.data) + filler
            offset = self._offset(item.packet.time_base, extra + shift)
            start = self.clock()
            with self.lock:
                self._mux_started_ns = start
            try:
                conn.mux(item.kind, item.packet, offset, data, new_header)
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
            size = len(item.packet.data) + len(filler)
            with self.lock:
                self.stats.filler_bytes += len(filler)
                self._mux_started_ns = None
                self.stats.packets_sent += 1
                self.stats.sent[item.kind] += 1
                self.stats.bytes_sent += size
                self.rates[item.kind].add(end, size - len(filler))  # media only: the filler is the probe's
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

    def _bound_in_flight(self, conn: Connection) -> None:
        """Keep the socket's bound at the rate controller's plan (`abr_in_flight_ms`), set again only
        when the plan moved by more than 15% since: the round trip it includes is read then, so when
        the link falls the bound still holds the round trip of before, not one that the stream's own
        queue has already stretched."""
        plan = self.plan_kbps
        if plan <= 0 or not self.o.abr_in_flight_ms:
            return
        if abs(plan - self._bound_plan) <= 0.15 * plan:
            return
        conn.limit_in_flight(plan * 125, self.o.abr_in_flight_ms / 1000, IN_FLIGHT_FLOOR)
        self._bound_plan = plan

    def _watch_once(self) -> None:
        now = self.clock()
        limit_ns = self.o.send_timeout_ms * 1_000_000
        with self.lock:
            conn, started = self._conn, self._mux_started_ns
            if conn is None or self._timed_out:
                return
        stats = conn.stats()
        self._bound_in_flight(conn)
        fire = ""
        with self.lock:
            if stats is not None:
                outq, acked = stats
                self.stats.unsent_bytes = outq
                if self._last_acked is None or acked != self._last_acked or outq == 0:
                    if self._last_acked is not None and acked > self._last_acked:
                        self.acks.add(now, acked - self._last_acked)
                        self.stats.acked_bytes += acked - self._last_acked
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
                "input_kbps": {k: round(w.total(now) * 8 / (RATE_WINDOW_NS / NS) / 1000, 1)
                               for k, w in self.arrivals.items()},
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
                "acked_bytes": s.acked_bytes,
                "filler_bytes": s.filler_bytes,
                "filler_kbps": self.filler_kbps,
            }

