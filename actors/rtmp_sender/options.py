"""The RTMP sender's options and pure helpers: URL checks and redaction, the reconnect schedule and
the load-time option checks (no I/O)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import av
from mediaengine.sdk.actor import option
from mediaengine.sdk.errors import OptionError
from mediaengine.sdk.formats import Format
from mediaengine.sdk.redact import redact_url  # the engine's one URL redaction (re-exported here)

OnFail = Literal["retry", "stop"]

SCHEMES = {"rtmp": 1935, "rtmps": 443}
PADS = ("video", "audio")  # the sender's input pads


@dataclass(frozen=True)
class RtmpSenderOptions:
    url: str = option(doc='rtmp:// or rtmps:// URL with the stream key; use "${PUSH_URL}" to keep the key out of files')
    connect_timeout_ms: int = option(
        5000, range=(1, None), doc="one connection attempt (TCP, TLS, RTMP handshake) may take this long")
    reconnect_count: int = option(
        5, range=(1, None), doc="failed attempts in a row before `reconnect_fail` (then on_reconnect_fail)")
    reconnect_interval_ms: int = option(
        1000, range=(0, None), doc="wait before attempt 2 (attempt 1 is immediate)")
    reconnect_backoff: float = option(
        1.0, range=(1.0, None), doc="factor on the wait per further attempt (1.0 = constant, e.g. 1.5)")
    reconnect_max_interval_ms: int = option(30000, doc="cap on the wait between attempts")
    on_reconnect_fail: OnFail = option(
        "retry", doc="retry: keep trying (capped backoff); stop: ConnectError, actor stops")
    send_timeout_ms: int = option(
        3000, range=(1, None), doc="no progress (blocked mux, or no TCP ack while bytes wait) this long = lost")
    backlog_ms: int = option(
        3000, range=(200, None), doc="most media kept queued (while disconnected or congested); oldest dropped beyond")
    video_drop_ms: int = option(
        1000, doc="beyond this much queued video, drop non-keyframe video (0 = only at backlog_ms)")
    audio_offset_ms: float = option(
        40.0, range=(0, 500), doc="audio timestamps moved later by this much so video is never held (0..500)")
    probe: bool = option(
        True, doc='check from Python that the server answers before FFmpeg connects (see "Connecting")')
    tls_verify: bool = option(
        True, doc="rtmps: verify the server certificate and host name (false: test servers only)")
    ca_file: str = option("", doc="rtmps: PEM file of the CA that signed the server certificate (default: system CAs)")
    abr: str = option("off", choices=("off", "resolution_first", "fluency_first", "custom", "obs"),
                      doc="adaptive bit rate: the mode whose table drives abr_encoder's bit rate (off = fixed; "
                          "obs = OBS's algorithm from abr_target_kbps, the benchmark's reference)")
    abr_encoder: str = option("", doc="node id of the video_encoder the rate controller drives")
    abr_poor_switcher: str = option("", doc="node id of a switcher whose `network_poor` the rate controller sets "
                                            "on network_poor and clears on network_recovered (its `poor_input` "
                                            "then goes out meanwhile)")
    abr_target_kbps: int = option(800, range=(100, 20000), live=True, doc="custom: highest video bit rate")
    abr_min_kbps: int = option(200, range=(100, 20000), live=True, doc="custom: the floor")
    abr_initial_kbps: int = option(800, range=(100, 20000), doc="custom: bit rate at the start")
    abr_min_fps: float = option(8.0, range=(0, 240), doc="frame rate at the bit rate floor (0 = keep the frame rate)")
    abr_in_flight_ms: int = option(
        75, range=(0, 2000), doc="with abr (not obs): most media the socket may hold beyond one round trip, in ms "
                                 "of the planned rate (the rest waits in the sender, where a cut drops stale video); "
                                 "0 = the kernel's own")
    abr_trace: bool = option(False, live=True, doc="emit `abr_sample` every 250 ms: what the rate controller measured "
                                                   "and its state (tuning, test reports)")



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
    """The rules across options and inputs (single-option ranges are declared with `option()`)."""
    server_address(options.url)
    if not any(pad in input_formats for pad in PADS):
        raise OptionError("rtmp_sender needs at least one linked input: video and/or audio")
    if options.reconnect_max_interval_ms < options.reconnect_interval_ms:
        raise OptionError("need 0 <= reconnect_interval_ms <= reconnect_max_interval_ms")
    if not 0 <= options.video_drop_ms <= options.backlog_ms:
        raise OptionError("need 0 <= video_drop_ms <= backlog_ms")
    if options.ca_file and not os.path.isfile(options.ca_file):
        raise OptionError(f"ca_file {options.ca_file!r} is not a file; give the PEM file of the server's CA")
    if options.abr != "off" and not options.abr_encoder:
        raise OptionError("abr needs abr_encoder: the id of the video_encoder node to drive")
    if options.abr != "off" and "video" not in input_formats:
        raise OptionError("abr needs a linked video input")
    if options.abr == "custom" and not (options.abr_min_kbps <= options.abr_initial_kbps <= options.abr_target_kbps):
        raise OptionError("custom abr needs abr_min_kbps <= abr_initial_kbps <= abr_target_kbps")
    if options.ca_file and not options.tls_verify:
        raise OptionError("ca_file is given but tls_verify is false: the CA would not be used")


def describe_error(exc: BaseException) -> str:
    """A short description of a network error that never includes the URL (PyAV puts it in str())."""
    if isinstance(exc, av.FFmpegError):
        return f"{type(exc).__name__}: {exc.strerror or 'error'} (errno {exc.errno})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror} (errno {exc.errno})"
    if isinstance(exc, OSError | TimeoutError):
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"

