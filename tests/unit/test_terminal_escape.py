"""Text that comes from a pulled stream or a server (SEI payloads, errors, event data) reaches the
terminal escaped: no ESC sequence, carriage return or bidi override gets through `mediaengine
monitor` or `mediaengine play`."""

from __future__ import annotations

from typing import Any

from mediaengine.cli.monitor import MonitorState, render_text
from mediaengine.cli.play import format_event
from mediaengine.cli.terminal import safe_text

HOSTILE = "Q1\x1b[2J\x1b]0;pwned\x07\rfake line\u202eevil\u2028next\x85"



def test_safe_text_escapes_every_non_printable_character_and_keeps_the_rest() -> None:
    assert safe_text("¿Cuál? 问题 ok") == "¿Cuál? 问题 ok"
    out = safe_text(HOSTILE)
    assert out == "Q1\\x1b[2J\\x1b]0;pwned\\x07\\x0dfake line\\u202eevil\\u2028next\\x85"
    assert out.isprintable()


def test_the_monitor_escapes_sei_text_errors_and_event_fields() -> None:
    s = MonitorState()
    node: dict[str, Any] = {"id": "pull", "kind": "rtmp_puller", "pid": None, "state": "restarting", "restarts": 1,
                            "uptime_s": 0.0, "last_error": f"server said {HOSTILE}", "metrics": {}}
    s.apply_status({"engine_id": "e1", "name": "demo", "pid": 1, "state": "running", "nodes": [node],
                    "events_recent": []})
    s.apply_pub("events.pull", {"node": "pull", "name": "sei", "t": 1.0,
                                "data": {"text": HOSTILE, HOSTILE: 1, "uuid": "ba1c3e09-a64a-5765-bf19-d9e939d9bdf0"}})
    view = s.view(2.0)
    text = render_text(view, events=view["events"])
    assert "pwned" in text and "fake line" in text  # shown, escaped
    assert all(line.isprintable() for line in text.split("\n")), text


def test_play_escapes_sei_text_urls_and_reasons() -> None:
    for event in ({"type": "sei", "t": 1.0, "uuid": "x", "text": HOSTILE, "first_frame": 1, "last_frame": 2,
                   "frames": 2},
                  {"type": "ended", "t": 2.0, "reason": f"connection lost: {HOSTILE}"},
                  {"type": "connected", "t": 0.1, "url": f"rtmp://h/live/{HOSTILE}", "connect_ms": 5,
                   "video": {"codec": HOSTILE, "width": 2, "height": 2}, "audio": None}):
        line = format_event(event)
        assert line.isprintable(), line
        assert "pwned" in line or event["type"] == "connected"
