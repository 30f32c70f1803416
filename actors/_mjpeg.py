"""The preview's HTTP endpoint: an MJPEG stream, a snapshot and a small page, on 127.0.0.1 only.

    GET /              a page showing the stream (any browser)
    GET /stream.mjpg   multipart/x-mixed-replace of JPEG pictures (browsers, ffmpeg, VLC read it)
    GET /snapshot.jpg  the newest picture

The server runs in a thread of the preview actor's process (`ThreadingHTTPServer`, one thread per
client, at most `max_clients` streams at once); the actor's loop only hands it the newest JPEG with
`publish`, which never blocks on a client: a slow client simply skips pictures.
"""

from __future__ import annotations

import html
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BOUNDARY = "mediaengine-preview"


def page_html(title: str) -> bytes:
    """The page at `/`: the live stream scaled to the window, with a link to the snapshot."""
    t = html.escape(title)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{t}</title>"
            "<style>html,body{margin:0;background:#111;color:#ccc;font:13px sans-serif}"
            "img{display:block;max-width:100vw;max-height:calc(100vh - 24px);margin:auto}"
            "p{margin:4px;text-align:center}a{color:#8cf}</style></head><body>"
            f"<img id='live' src='stream.mjpg' alt='{t}'>"
            f"<p>{t} &middot; <a href='snapshot.jpg'>snapshot.jpg</a></p></body></html>").encode()


def mjpeg_part(jpeg: bytes) -> bytes:
    """One part of the multipart stream."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + b"\r\n"


class MjpegServer:
    """Serves the newest published JPEG; `close()` stops the server and ends every stream."""

    def __init__(self, port: int = 0, *, title: str = "mediaengine preview", max_clients: int = 8,
                 host: str = "127.0.0.1") -> None:
        self._cond = threading.Condition()
        self._jpeg: bytes | None = None
        self._seq = 0
        self._closed = False
        self._streams = 0
        self.max_clients = max_clients
        self.page = page_html(title)
        self.httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{host}:{self.port}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="preview-http", daemon=True)
        self._thread.start()

    @property
    def clients(self) -> int:
        return self._streams

    def publish(self, jpeg: bytes) -> None:
        """Make `jpeg` the newest picture and wake the streams."""
        with self._cond:
            self._jpeg = jpeg
            self._seq += 1
            self._cond.notify_all()

    def latest(self) -> bytes | None:
        with self._cond:
            return self._jpeg

    def next_after(self, seq: int, timeout_s: float = 1.0) -> tuple[int, bytes | None]:
        """The first picture newer than `seq` (waits up to `timeout_s`); (seq, None) on timeout or close."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._seq > seq, timeout_s)
            if self._closed or self._seq <= seq:
                return seq, None
            return self._seq, self._jpeg

    @property
    def closed(self) -> bool:
        return self._closed

    def _enter_stream(self) -> bool:
        with self._cond:
            if self._streams >= self.max_clients:
                return False
            self._streams += 1
            return True

    def _leave_stream(self) -> None:
        with self._cond:
            self._streams -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: MjpegServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the engine's log is not a web server's access log

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", server.page)
            elif path == "/snapshot.jpg":
                jpeg = server.latest()
                if jpeg is None:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"no picture yet\n")
                else:
                    self._send(HTTPStatus.OK, "image/jpeg", jpeg)
            elif path == "/stream.mjpg":
                self._stream()
            else:
                self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found: try /, /stream.mjpg, /snapshot.jpg\n")

        def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _stream(self) -> None:
            if not server._enter_stream():
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", b"too many preview clients\n")
                return
            try:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seq, jpeg = server.next_after(-1, 0.0)  # the newest picture at once (None before the first)
                while not server.closed:
                    if jpeg is not None:
                        self.wfile.write(mjpeg_part(jpeg))
                        self.wfile.flush()
                    seq, jpeg = server.next_after(seq)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away
            finally:
                server._leave_stream()

    return Handler
