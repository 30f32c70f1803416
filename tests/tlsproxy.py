"""A TLS endpoint for rtmps tests: a self-signed certificate (made with Debian's `openssl`) and a small
threaded proxy that terminates TLS on 127.0.0.1 (free port) and relays the bytes to a plain TCP
server (nginx-rtmp).  Used as a context manager, it stops its threads and closes every socket on exit,
also when the test fails."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from types import TracebackType


def make_self_signed(folder: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """(certificate, key) PEM files of a self-signed certificate for `hostname` only (its own CA)."""
    cert, key = folder / "server-cert.pem", folder / "server-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={hostname}",
         "-addext", f"subjectAltName=DNS:{hostname}", "-addext", "basicConstraints=critical,CA:TRUE"],
        check=True, capture_output=True, timeout=30)
    return cert, key


class TlsProxy:
    """TLS on `port` (127.0.0.1) relayed to `backend` (host, port) in plain TCP."""

    def __init__(self, cert: Path, key: Path, backend: tuple[str, int]) -> None:
        self.backend = backend
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.handshakes = 0  # TLS handshakes completed (Python's ssl refuses a certificate within it)
        self.client_bytes = 0  # application bytes received from clients (FFmpeg verifies after the handshake)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> TlsProxy:
        t = threading.Thread(target=self._accept_loop, name="tls-proxy-accept", daemon=True)
        self._threads.append(t)
        t.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
        for t in list(self._threads):
            t.join(5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.1)
            if not ready:
                continue
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), name="tls-proxy-conn", daemon=True)
            self._threads.append(t)
            t.start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.append(s)

    def _serve(self, raw: socket.socket) -> None:
        self._track(raw)
        raw.settimeout(10)
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            return  # the client refused our certificate (or went away): nothing to relay
        self._track(tls)
        with self._lock:
            self.handshakes += 1
        try:
            plain = socket.create_connection(self.backend, timeout=10)
        except OSError:
            tls.close()
            return
        self._track(plain)
        tls.setblocking(False)
        plain.setblocking(False)
        pairs = {tls: plain, plain: tls}
        try:
            while not self._stop.is_set():
                pending = [tls] if tls.pending() else []
                ready = pending or select.select([tls, plain], [], [], 0.1)[0]
                for src in ready:
                    try:
                        data = src.recv(65536)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        continue
                    if not data:
                        return
                    if src is tls:
                        with self._lock:
                            self.client_bytes += len(data)
                    dst = pairs[src]
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
        except OSError:
            return
        finally:
            for s in (tls, plain):
                with contextlib.suppress(OSError):
                    s.close()
