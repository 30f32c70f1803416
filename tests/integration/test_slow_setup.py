"""A slow setup is not a hang, and a stalled network read fails with its own error, not as a hang.

A local HTTP server (a thread of this test) serves an MPEG-TS clip to a `file_source`:
- answering only after 3 s (twice the 1.5 s heartbeat limit): the source opens the URL in `setup()`,
  so it must be given the startup timeout, come up once and never be restarted;
- sending 200 kB and then nothing: the source's read must give up before the heartbeat limit and
  report a `ConnectError` (1302), instead of starving its heartbeats and being killed as hung.
"""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mediaengine.sdk.errors import ConnectError

from tests.enginekit import Engine, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

OPEN_DELAY_S = 3.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("http") / "clip.ts"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=25:duration=30", "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", "25", "-f", "mpegts", str(path)], check=True, timeout=120)
    return path.read_bytes()


class _Server:
    """A threaded HTTP server on 127.0.0.1 (free port) whose behaviour a test chooses."""

    def __init__(self, data: bytes, *, delay_s: float = 0.0, stall_after: int | None = None) -> None:
        self.requests = 0
        self.release = threading.Event()  # ends delays and stalls when the test is over
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                server.release.wait(delay_s)  # a slow server: nothing before delay_s
                body = data if stall_after is None else data[:stall_after]
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)
                    self.wfile.flush()
                if stall_after is not None:
                    server.release.wait(60)  # a stalled server: the connection stays open, silent

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/clip.ts"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@contextlib.contextmanager
def serving(data: bytes, **kwargs: Any) -> Iterator[_Server]:
    server = _Server(data, **kwargs)
    try:
        yield server
    finally:
        server.close()


def _topology(tmp_path: Path, url: str, restart: str) -> Path:
    topo = tmp_path / "http.yaml"
    topo.write_text(
        "version: 1\n"
        "nodes:\n"
        f"  - {{id: src, kind: file_source, restart: {restart}, options: {{url: '{url}', audio: false, "
        "width: 320, height: 240, fps: 25}}\n"
        f"  - {{id: snap, kind: snapshot, inputs: {{in: src}}, options: {{path: {tmp_path / 's.png'}}}}}\n"
    )
    return topo


def _events(eng: Engine) -> list[dict[str, Any]]:
    return list(eng.request("snapshot").get("events_recent", []))


def test_a_setup_slower_than_the_heartbeat_limit_is_not_a_hang(
    engine_runner: Callable[..., Engine], tmp_path: Path, clip: bytes
) -> None:
    with serving(clip, delay_s=OPEN_DELAY_S) as server:
        eng = engine_runner(_topology(tmp_path, server.url, "permanent"), "--duration", "8")
        eng.wait_running(30)
        src = eng.node("src")
        wait_for(lambda: eng.node("src")["uptime_s"] >= 2.0, 20, "src running for 2 s")
        events = _events(eng)
        print("src:", src["state"], "restarts", src["restarts"], "requests", server.requests)
        assert not [e for e in events if e["name"] == "hang_detected"], events
        assert eng.node("src")["restarts"] == 0 and server.requests == 1
        assert eng.wait(30) == 0, eng.log
        assert "missed heartbeats" not in eng.log and "did not finish starting" not in eng.log


def test_a_stalled_network_read_is_a_connect_error_not_a_hang(
    engine_runner: Callable[..., Engine], tmp_path: Path, clip: bytes
) -> None:
    with serving(clip, stall_after=200_000) as server:
        eng = engine_runner(_topology(tmp_path, server.url, "temporary"))
        node = wait_for(lambda: (n := eng.node("src"))["state"] == "failed" and n, 30, "src to fail")
        events = _events(eng)
        errors = [e["data"] for e in events if e["node"] == "src" and e["name"] == "error"]
        print("src:", node["state"], node["last_error"], errors)
        assert not [e for e in events if e["name"] == "hang_detected"], events
        assert errors and errors[0]["code"] == ConnectError.code and "read timeout" in errors[0]["message"]
        eng.request("stop")
        assert eng.wait(30) == 0, eng.log
