"""RTMP sender: pushes encoded H.264 and/or AAC packets as FLV over RTMP(S), and keeps pushing.

```yaml
- {id: push, kind: rtmp_sender, inputs: {video: venc, audio: aenc}, options: {url: "${PUSH_URL}"}}
```

Hooks never touch the network: `on_frame` queues packets in a bounded backlog and returns; a writer
thread connects (PyAV/FFmpeg, after a Python probe of the server), muxes and reconnects with a capped
backoff, and a watchdog thread breaks a connection whose server stopped reading.  Their events come
out of the next hook (`on_tick` every 50 ms).  Each connection continues the engine's timeline; when
the backlog grows, non-key video is dropped first.  `send_message` puts a Q&A text into the video as
an H.264 SEI.  The stream key never appears in events, metrics or errors.

The full design (connecting, reconnecting, timeline, latency, backlog and drops, live Q&A, events and
metrics) is in docs/rtmp-sender.md.  Modules: `options` (options and pure helpers), `publisher` (the
writer and watchdog threads), `connection` (the FLV connection), `queue` (backlog, start gate, rate
window), `socket` (the socket under FFmpeg and the probe).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mediaengine.sdk.actor import Action, Actions, Actor, Context, InPort, Reply
from mediaengine.sdk.errors import ActorFailedError, ConnectError, FieldError, FormatError, QueueFullError
from mediaengine.sdk.formats import Format, Frame, Packet
from mediaengine.sdk.sei import build_sei_nal, insert_sei

from .adaptive import Adaptive
from .connection import Connector, FlvConnection, Prober
from .options import (
    RtmpSenderOptions,
    check_options,
    describe_error,
    reconnect_delay_ms,
    redact_url,
    server_address,
)
from .publisher import Clock, Link
from .queue import Item, Kind, to_ns
from .socket import probe_rtmp
from .tls import client_context, ffmpeg_options

__all__ = ["RtmpSender", "RtmpSenderOptions", "describe_error", "message_args", "reconnect_delay_ms",
           "redact_url"]

TICK_NS = 50_000_000  # how often on_tick drains the threads' events
MAX_MESSAGE_BYTES = 16 * 1024  # longest send_message text (UTF-8)
MAX_REPEAT = 10_000
MAX_PENDING_MESSAGES = 64  # send_message requests not yet (fully) sent

log = logging.getLogger("mediaengine.actors.rtmp_sender")


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
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        check_options(options, input_formats)

    def __init__(self, options: RtmpSenderOptions) -> None:
        super().__init__(options)
        self.tick_interval_ns = TICK_NS
        self.clock: Clock = time.monotonic_ns
        self.node_id = ""
        self.kinds: tuple[Kind, ...] = ()
        self.link: Link | None = None
        self._messages: list[_Message] = []
        self._next_message = 1
        self._ended_pads: set[str] = set()
        self._fatal_reported = False
        self.adaptive: Adaptive | None = None  # the rate controller, once video params are known (abr)

    def setup(self, ctx: Context) -> None:
        self.node_id = ctx.node_id
        self.kinds = tuple(k for k in ("video", "audio") if k in ctx.input_formats)
        o = self.options
        prober = type(self).prober if o.probe else None
        connector = type(self).connector
        tls_context = None
        if server_address(o.url)[0] == "rtmps":
            tls_context = client_context(o.tls_verify, o.ca_file)
            if connector is FlvConnection:  # FFmpeg verifies too (tests' fake connections take no options)
                connector = functools.partial(FlvConnection, io_options=ffmpeg_options(o.tls_verify, o.ca_file))
        self.link = Link(o, self.kinds, connector=connector, prober=prober, clock=self.clock,
                         tls_context=tls_context)
        if tls_context is not None and not o.tls_verify:
            note = "tls_verify is false: the server's certificate and host name are NOT checked (test servers only)"
            log.warning("%s: %s (%s)", self.node_id or "rtmp_sender", note, redact_url(o.url))
            self.link.emit("tls_unverified", level="warning", url=redact_url(o.url), note=note)
        self.link.start()

    # ---- hooks -------------------------------------------------------------------------------
    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        link = self._link()
        if pad not in self.kinds:
            raise FormatError(f"rtmp_sender got media on unlinked pad {pad!r}")
        if not isinstance(media, Packet):
            raise FormatError(f"rtmp_sender takes encoded packets on {pad!r}, got a raw frame")
        kind: Kind = "video" if pad == "video" else "audio"
        started: list[Action] = []
        if media.params:
            link.note_params(kind, media.params)
            if kind == "video" and self.options.abr != "off" and self.adaptive is None:
                self.adaptive = Adaptive(self.options, media.params)
                started = self.adaptive.start()
                self.adaptive.last_configure_ns = self.clock()
            elif kind == "video" and self.adaptive is not None:
                started = self.adaptive.check_encoder(media.params, self.clock())
        sei: tuple[tuple[int, bool], ...] = ()
        if kind == "video" and self._messages:
            media, sei = self._attach_messages(media)
        link.push(Item(kind, media, to_ns(media.dts, media.time_base), sei))
        return started + self._events()

    def on_tick(self, now_ns: int) -> Actions:
        actions = self._events()
        if self.adaptive is not None:
            actions = self.adaptive.tick(self.clock(), self._link()) + actions
        return actions

    def on_option_changed(self, name: str, value: Any) -> Actions:
        if self.adaptive is not None and name in ("abr_target_kbps", "abr_min_kbps"):
            return self.adaptive.options_changed(self.options)
        return None

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command != "send_message":
            return super().on_control(command, args)
        if "video" not in self.kinds:
            raise FieldError("send_message needs a linked video input (SEI travels in H.264)")
        text, repeat, delay_ms, key_only = message_args(args)
        if len(self._messages) >= MAX_PENDING_MESSAGES:
            raise QueueFullError(f"send_message: {MAX_PENDING_MESSAGES} messages are already waiting to go out; "
                                 "retry after a sei_sent event")
        msg = _Message(self._next_message, build_sei_nal(text.encode()), repeat,
                       self.clock() + round(delay_ms * 1_000_000), key_only)
        self._next_message += 1
        self._messages.append(msg)
        return [Reply({"id": msg.id, "frames": repeat})]

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
