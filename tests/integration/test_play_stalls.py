"""`mediaengine play` counts stalls as a viewer sees them, on a real HLS stream from nginx-rtmp
(1 s segments, published while the engine pushes): a healthy stream, whose segments arrive in
bursts a second apart, has no stall; the same stream through an HTTP relay that holds the segment
requests for a few seconds really stalls, and that is reported."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.enginekit import ROOT, Engine, wait_for
from tests.integration.test_rtmp_push import stream_key
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp]

TOPOLOGY = """\
version: 1
name: hls_push
nodes:
  - {id: src, kind: test_pattern, options: {width: 320, height: 240, fps: 15}}
  - {id: venc, kind: video_encoder, inputs: {in: src}, options: {bitrate_kbps: 300, gop_s: 1, preset: ultrafast}}
  - {id: push, kind: rtmp_sender, inputs: {video: venc}, options: {url: "${PUSH_URL}"}}
"""


class HoldingRelay:
    """HTTP relay to nginx's /hls; `hold(seconds)` makes segment requests wait that long (a network
    that stops delivering), playlists still answer."""

    def __init__(self, upstream: str) -> None:
        relay = self
        self.upstream = upstream
        self._hold_until = 0.0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith(".ts"):
                    with relay._lock:
                        until = relay._hold_until
                    wait = until - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)  # the outage itself: this request is held, not the test
                try:
                    with urllib.request.urlopen(relay.upstream + self.path, timeout=5) as resp:
                        body, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
                except urllib.error.HTTPError as e:
                    body, status, ctype = b"", e.code, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._hold_until = time.monotonic() + seconds

    def __enter__(self) -> HoldingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture
def hls_stream(tmp_path: Path, engine_runner: Callable[..., Engine]) -> Iterator[tuple[RtmpServer, str]]:
    """(server, stream name): the engine pushing to nginx-rtmp with HLS on, three segments published."""
    server = RtmpServer(tmp_path / "rtmp-hls", hls=True)
    server.start()
    try:
        key = stream_key()
        topo = tmp_path / "hls.yaml"
        topo.write_text(TOPOLOGY)
        eng = engine_runner(topo, "--duration", "90", env={"PUSH_URL": server.url(stream=key)})
        wait_for(lambda: len(list(server.hls_dir.glob(f"{key}*.ts"))) >= 4, 40, "four HLS segments")
        try:
            yield server, key
        finally:
            if eng.proc.poll() is None:
                with contextlib.suppress(Exception):
                    eng.request("stop")
                eng.wait(30)
    finally:
        server.stop()


def play(url: str, duration_s: float, on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run `mediaengine play URL --json` and return its summary (events go to `on_event` as they come)."""
    summary: dict[str, Any] = {}
    with subprocess.Popen([sys.executable, "-m", "mediaengine.cli", "play", url, "--json", "--duration",
                           str(duration_s), "--timeout", "10"], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            for line in proc.stdout:
                event = json.loads(line)
                if on_event is not None:
                    on_event(event)
                if event["type"] == "summary":
                    summary = event
            errors = proc.stderr.read()
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, errors
    return summary

def test_a_healthy_hls_stream_has_no_stall(hls_stream: tuple[RtmpServer, str]) -> None:
    server, key = hls_stream
    summary = play(server.hls_url(key), 8)
    print("healthy HLS:", {k: summary[k] for k in ("frames", "fps", "stalls", "stall_ms")})
    assert summary["frames"] >= 90
    assert (summary["stalls"], summary["stall_ms"]) == (0, 0)


def test_an_hls_stream_whose_segments_stop_coming_stalls(hls_stream: tuple[RtmpServer, str]) -> None:
    server, key = hls_stream
    with HoldingRelay(f"http://127.0.0.1:{server.http_port}") as relay:
        held = threading.Event()

        def on_event(event: dict[str, Any]) -> None:
            if event["type"] == "stats" and event["frames"] >= 45 and not held.is_set():
                held.set()
                relay.hold(6.0)  # no segment for 6 s: more than the ~3 s a player buffers

        summary = play(f"http://127.0.0.1:{relay.port}/hls/{key}.m3u8", 16, on_event)
    print("held HLS:", {k: summary[k] for k in ("frames", "fps", "stalls", "stall_ms")})
    assert held.is_set()
    assert summary["stalls"] >= 1 and summary["stall_ms"] >= 1500
