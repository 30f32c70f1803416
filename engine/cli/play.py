"""`mediaengine play URL`: pull a stream and report fps, stalls, latency and SEI messages.

    mediaengine play URL [--duration S] [--json] [--snapshot out.png] [--timeout S] [--stall-ms MS]
                         [--sei-gap-frames N] [--all-sei] [--input-option KEY=VALUE ...]

With `--json`, one JSON object per line: every event of `mediaengine.sdk.pull` (`connected`, `sei`,
`sei_other`, `stall_start`, `stall`, `snapshot`, `ended`, `summary`) and a `stats` object once a second.  Without
it, a human line per second and per event, then a summary.  Exit status 0 when it played the
duration or the stream ended; 1 with a one-line error (the stream key redacted) when it could not
connect (ConnectError, 1302).  Ctrl-C ends the run early, with the summary.  `mediaengine play
'${PLAY_URL}'` reads the URL from the environment, so the stream key is never an argument; a key typed
in the URL is masked in the process's command line once the player starts (engine/cli/argv.py).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ..sdk.errors import EngineError
from .terminal import safe_text

__all__ = ["add_play_parser", "cmd_play", "format_event"]


def _fmt_ms(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_event(event: dict[str, Any]) -> str:
    """One human-readable line for a player event."""
    kind = event.get("type")
    t = f"{event.get('t', 0.0):7.2f}s"
    if kind == "stats":
        audio = event.get("audio")
        audio_text = f"  audio {audio['rate']} Hz {audio['channels']}ch" if audio else "  no audio"
        size = f"{event['width']}x{event['height']}" if event.get("width") else "no video"
        return (f"{t}  frames {event['frames']:6d}  fps {event['fps']:5.1f}  latency "
                f"{_fmt_ms(event['latency_ms_median'])}/{_fmt_ms(event['latency_ms_p95'])} ms (median/p95)  "
                f"stalls {event['stalls']} ({event['stall_ms']} ms)  missing {event['missing']}  {size}{audio_text}")
    if kind == "sei":
        return (f"{t}  SEI {safe_text(event['uuid'])}: '{safe_text(event['text'])}' (frames {event['first_frame']}-"
                f"{event['last_frame']}, in {event['frames']})")
    if kind == "sei_other":
        source = f" ({safe_text(event['source'])})" if event.get("source") else ""
        return (f"{t}  other SEI {safe_text(event['uuid'])}{source}: {event['bytes']} bytes (frames "
                f"{event['first_frame']}-{event['last_frame']}, in {event['frames']})")
    if kind == "connected":
        video, audio = event.get("video"), event.get("audio")
        v = f"{video['codec']} {video['width']}x{video['height']}" if video else "no video"
        a = f"{audio['codec']} {audio['rate']} Hz {audio['channels']}ch" if audio else "no audio"
        return (f"{t}  connected to {safe_text(event['url'])} in {event['connect_ms']} ms: "
                f"{safe_text(v)}, {safe_text(a)}")
    if kind == "stall_start":
        return f"{t}  stalled after frame {event['after_frame']}"
    if kind == "stall":
        return f"{t}  stall of {event['duration_ms']} ms after frame {event['after_frame']}"
    if kind == "snapshot":
        return f"{t}  snapshot saved to {event['path']}"
    if kind == "ended":
        return f"{t}  ended: {safe_text(event['reason'])}"
    if kind == "summary":
        fps = "-" if event.get("fps") is None else f"{event['fps']:.1f}"
        return (f"summary: {event['duration_s']:.1f} s, {event['frames']} frames ({fps} fps), latency median "
                f"{_fmt_ms(event['latency_ms_median'])} ms p95 {_fmt_ms(event['latency_ms_p95'])} ms, "
                f"{event['stalls']} stalls ({event['stall_ms']:.0f} ms), {event['missing']} counters missing, "
                f"{event['sei_messages']} SEI messages ({event.get('sei_other', 0)} other), "
                f"{event['audio_frames']} audio frames "
                f"({safe_text(event['reason'])})")
    return f"{t}  {json.dumps(event)}"  # JSON escapes every control character


def _printer(as_json: bool, out: TextIO) -> Any:
    def emit(event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":")) if as_json else format_event(event)
        print(line, file=out, flush=True)

    return emit


def _input_options(items: list[str] | None) -> dict[str, str]:
    options = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EngineError(f"--input-option {item!r} must be KEY=VALUE", where="play")
        options[key] = value
    return options


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value

    return parse


def cmd_play(args: argparse.Namespace) -> int:
    from ..sdk.pull import Player
    from ..sdk.redact import url_secrets
    from ..topology.topofile import subst_string
    from .argv import hide_in_argv

    secrets: set[str] = set()
    url, _ = subst_string(args.url, "play URL", os.environ, secrets)  # `play '${URL}'` keeps the key off argv
    hide_in_argv(secrets | url_secrets(url))
    player = Player(url, snapshot=Path(args.snapshot) if args.snapshot else None,
                    on_event=_printer(args.json, sys.stdout), timeout_s=args.timeout,
                    stall_s=args.stall_ms / 1000.0, sei_gap_frames=args.sei_gap_frames, all_sei=args.all_sei,
                    input_options=_input_options(args.input_option))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        player.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        report = player.run(args.duration)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if args.snapshot and report.snapshot is None:
        print(f"warning: no video frame was decoded, {args.snapshot} not written", file=sys.stderr)
    return 0


def add_play_parser(sub: Any) -> None:
    """Add the `play` subcommand to the CLI's subparsers."""
    p = sub.add_parser("play", help="pull a stream (RTMP, HTTP-FLV, HLS, ...) and report fps, stalls, "
                                    "latency and SEI messages")
    p.add_argument("url", help="rtmp://, http(s):// (FLV or .m3u8), or any URL or file FFmpeg reads; "
                               "'${VAR}' reads it from the environment (keeps the key off the command line)")
    p.add_argument("--duration", type=_positive(float), default=None, metavar="S", help="stop S seconds after starting")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--snapshot", default=None, metavar="OUT.png", help="save the first decoded frame as PNG")
    p.add_argument("--timeout", type=_positive(float), default=5.0, metavar="S",
                   help="give up connecting, or end, after S seconds without data (default 5)")
    p.add_argument("--stall-ms", type=_positive(float), default=500.0, metavar="MS",
                   help="a gap between frames longer than this is a stall (default 500)")
    p.add_argument("--all-sei", action="store_true",
                   help="report SEI messages under every UUID as messages (default: only mediaengine's; "
                        "others, such as x264's encoder information, are counted as sei_other)")
    p.add_argument("--sei-gap-frames", type=_positive(int), default=30, metavar="N",
                   help="a repeated SEI message absent this many frames ends (default 30)")
    p.add_argument("--input-option", action="append", metavar="KEY=VALUE",
                   help="an FFmpeg input option, e.g. fflags=nobuffer (repeatable)")
    p.set_defaults(func=cmd_play)
