"""The one redaction (mediaengine.sdk.redact), the loader's secrets, and the command-line masking.

Issue 9.6: `redact_url` kept a key that sits before the last path segment; free text (FFmpeg's
messages quote the URL) was not redacted where errors are made; `--set` URLs were no secret at all;
literal keys stayed in /proc/<pid>/cmdline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mediaengine.cli.argv import SET_ENV, hide_in_argv, overrides_from_env
from mediaengine.sdk.errors import OptionError, VariableError
from mediaengine.sdk.redact import redact_text, redact_url, redact_value, url_secrets
from mediaengine.topology.loader import load_topology

KEY = "sk_0123456789abcdef"

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("url", "shown"), [
    (f"rtmp://host/live/{KEY}", "rtmp://host/live/***"),
    (f"https://cdn.example/live/{KEY}/index.m3u8", "https://cdn.example/live/***"),
    (f"https://cdn.example/hls/{KEY}/720p/seg_001.ts", "https://cdn.example/hls/***"),
    (f"rtmp://host/live/stream?key={KEY}", "rtmp://host/live/***"),
    (f"rtmp://host/live?key={KEY}", "rtmp://host/live/***"),
    (f"rtmps://publisher:{KEY}@host:443/app", "rtmps://***@host:443/app"),
    (f"srt://host:9000#{KEY}", "srt://host:9000/***"),
    ("rtmp://host/live", "rtmp://host/live"),
    (f"/media/{KEY}.flv", "/media/***"),
    ("rtmp://[bad", "***"),
])
def test_redact_url_keeps_scheme_host_port_and_application_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert KEY not in shown


def test_url_secrets_are_the_hidden_parts() -> None:
    assert KEY in url_secrets(f"https://cdn/live/{KEY}/index.m3u8")
    assert KEY in url_secrets(f"rtmp://h/live/s?key={KEY}&x=1")
    assert KEY in url_secrets(f"rtmp://user:{KEY}@h/live")
    assert url_secrets("rtmp://h/live") == set() and url_secrets("/a/b.flv") == set()
    assert "1" not in url_secrets(f"rtmp://h/live/s?key={KEY}&x=1")  # too short to hide everywhere


def test_redact_text_hides_urls_in_ffmpeg_messages_and_keeps_endpoints() -> None:
    message = (f"[Errno 111] Connection refused: 'http://127.0.0.1:8080/live/{KEY}/index.m3u8'; "
               f"stream {KEY} not found; control ipc:///run/me/abc/control.sock, tcp://127.0.0.1:5555")
    clean = redact_text(message)
    assert KEY not in clean
    assert "'http://127.0.0.1:8080/live/***'" in clean and "stream *** not found" in clean
    assert "ipc:///run/me/abc/control.sock" in clean and "tcp://127.0.0.1:5555" in clean


def test_redact_value_reaches_every_string() -> None:
    value = {"error": f"lost rtmp://h/live/{KEY}", "nested": [{"url": f"rtmp://h/a/{KEY}"}, 3, None],
             f"key-{KEY}": True}
    assert KEY not in json.dumps(redact_value(value))
    assert redact_value({"n": 1.5, "b": b"x"}) == {"n": 1.5, "b": b"x"}


def test_a_url_given_by_set_is_a_secret_like_a_variable() -> None:
    doc = {"version": 1, "nodes": [{"id": "pull", "kind": "rtmp_puller", "options": {"url": "rtmp://h/live/x"}}]}
    topo = load_topology(doc, overrides=[f"pull.url=https://cdn/live/{KEY}/index.m3u8"], env={})
    assert KEY in topo.secrets
    assert KEY not in topo.redact(f"stream {KEY} is not published")


def test_set_values_take_variables_so_the_key_stays_in_the_environment() -> None:
    doc = {"version": 1, "nodes": [{"id": "pull", "kind": "rtmp_puller", "options": {"url": "rtmp://h/live/x"}}]}
    topo = load_topology(doc, overrides=["pull.url=rtmp://h/live/${STREAM_KEY}"], env={"STREAM_KEY": KEY})
    assert topo.node("pull").options.url == f"rtmp://h/live/{KEY}" and KEY in topo.secrets
    assert load_topology(doc, overrides=["pull.url=rtmp://h/$${x}"], env={}).node("pull").options.url \
        == "rtmp://h/${x}"
    with pytest.raises(VariableError, match="NOT_SET") as info:
        load_topology(doc, overrides=["pull.url=${NOT_SET}"], env={})
    assert info.value.where == "--set pull.url"


def test_overrides_from_the_environment_are_taken_and_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SET_ENV, json.dumps(["a.b=1", "c.d=x"]))
    assert overrides_from_env(["z.y=2"]) == ["z.y=2", "a.b=1", "c.d=x"]
    assert SET_ENV not in os.environ  # actors forked later do not inherit it
    monkeypatch.setenv(SET_ENV, "{not json")
    with pytest.raises(OptionError, match=SET_ENV):
        overrides_from_env(None)


def test_hide_in_argv_masks_the_key_in_the_process_command_line() -> None:
    """A real child process masks its own argument block; others read /proc/<pid>/cmdline."""
    code = ("import sys; from mediaengine.cli.argv import hide_in_argv; "
            "print(hide_in_argv([sys.argv[2]]), flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, f"--set=push.url=rtmp://h/live/{KEY}", KEY],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "True"
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert KEY.encode() not in cmdline
        assert b"--set=push.url=rtmp://h/live/" + b"*" * len(KEY) in cmdline
    finally:
        proc.communicate("", timeout=10)
    assert hide_in_argv([]) is True


def test_a_stream_key_that_is_a_common_word_hides_itself_but_no_field_name() -> None:
    """A stream pushed as rtmp://host/live/stream: the key `stream` is hidden where it stands alone, but
    metric names that contain it (`packets_sent_by_stream`) stay whole, and two keys that redact alike
    are both kept (a dict keyed by the secret loses no entry)."""
    secrets = url_secrets("rtmp://h/live/stream")
    assert secrets == {"stream"}
    metrics = {"packets_sent_by_stream": {"video": 3}, "stream": "video", "error": "no stream 'stream' here",
               "url": "rtmp://h/live/stream", "***": 1}
    clean = redact_value(metrics, secrets)
    assert clean["packets_sent_by_stream"] == {"video": 3}
    assert clean["***"] == "video" and clean["***#2"] == 1  # the key itself was the secret
    assert clean["error"] == "no *** '***' here" and clean["url"] == "rtmp://h/live/***"
    assert redact_text("stream_1 streamer mystream", {"stream"}) == "stream_1 streamer mystream"
    # a tuple key (a Python value, before msgpack) stays a key
    assert redact_value({("stream", 1): "x"}, secrets) == {("***", 1): "x"}
