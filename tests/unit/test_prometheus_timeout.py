"""The Prometheus endpoint drops a client that connects and sends nothing (or trickles a request)
after its request timeout, and serves at most MAX_CONNECTIONS at once: idle sockets cannot pile up
threads in the supervisor."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest
from mediaengine.supervision.prometheus import MAX_CONNECTIONS, MetricsServer


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer("127.0.0.1", 0, request_timeout_s=0.5)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _address(srv: MetricsServer) -> tuple[str, int]:
    url = srv.url.removeprefix("http://").removesuffix("/metrics")
    host, port = url.rsplit(":", 1)
    return host, int(port)


def test_a_silent_client_is_disconnected_after_the_request_timeout(server: MetricsServer) -> None:
    with socket.create_connection(_address(server), timeout=5.0) as sock:
        sock.sendall(b"GET /metr")  # an unfinished request, then silence
        start = time.monotonic()
        try:
            data = sock.recv(1024)
        except TimeoutError:
            pytest.fail("the server kept a silent client for 5 s")
        assert data == b"" or data.startswith(b"HTTP/1."), data  # closed (or an error reply and closed)
        assert time.monotonic() - start < 3.0


def test_idle_connections_beyond_the_limit_are_closed_and_scrapes_work_again_after(server: MetricsServer) -> None:
    server.update({"nodes": []})
    idle: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS + 5):
            idle.append(socket.create_connection(_address(server), timeout=5.0))
        # the ones over the limit are closed right away
        extra = idle[-1]
        assert extra.recv(1) == b""
    finally:
        for s in idle:
            with contextlib.suppress(OSError):
                s.close()
    deadline = time.monotonic() + 5.0
    while True:
        try:
            with urllib.request.urlopen(server.url, timeout=2.0) as resp:
                assert resp.status == 200
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
