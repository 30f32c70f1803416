"""Prometheus exposition of an engine's figures: `mediaengine run FILE --metrics-port N`.

Serves the same figures as `ps`/`monitor` at ``http://127.0.0.1:N/metrics`` in the Prometheus text
format (version 0.0.4), written by hand: it is a few lines per family and needs no dependency.

The supervisor is single-threaded by design; this module adds one small thread, an HTTP server, that
only reads.  The supervisor loop hands it a fresh status dict (the `ps` result) about twice a second
by replacing a reference; the server renders whatever dict it holds when a scrape arrives.  Neither
side mutates a dict after handing it over, so no lock is needed.

Families (labels `node` and `kind` on every node figure):

    mediaengine_engine_info{engine_id,name}           1
    mediaengine_engine_stopping                       1 while the engine stops
    mediaengine_node_up                               1 when the node's actor runs
    mediaengine_node_restarts_total                   restarts since the engine started
    mediaengine_node_uptime_seconds                   since the actor's last start
    mediaengine_node_fps{direction="in"|"out",pad}    frames per second over the last second
    mediaengine_node_frames_total{direction,pad}      frames since the actor's last start
    mediaengine_node_dropped_frames_total{where}      drops since the actor's last start, per edge
    mediaengine_node_queue_slots{pad,what="held"|"depth"}   ring slots held by the node / ring depth
    mediaengine_node_frame_processing_seconds{quantile="0.5"|"0.95"}
    mediaengine_node_cpu_percent / mediaengine_node_resident_memory_bytes
    mediaengine_actor_<name>                          every number an actor's metrics() reports
                                                      (encoders, recorder, RTMP sender, ...)

Bind address: loopback by default.  `--metrics-host` may open it wider; the endpoint has no
authentication (it is read-only figures, no stream keys), so put it behind a firewall or a proxy.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..sdk.errors import ResourceError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def metric_name(text: str) -> str:
    """A valid metric-name fragment for an arbitrary key (`bitrate kbps` -> `bitrate_kbps`)."""
    name = _NAME_BAD.sub("_", text).strip("_") or "value"
    return f"_{name}" if name[0].isdigit() else name


class _Families:
    """Samples grouped by family, so each family's HELP/TYPE comes once, before its samples."""

    def __init__(self) -> None:
        self.meta: dict[str, tuple[str, str]] = {}
        self.samples: dict[str, list[str]] = {}

    def add(self, name: str, mtype: str, help_text: str, labels: Mapping[str, object], value: object) -> None:
        num = _number(value)
        if num is None:
            return
        self.meta.setdefault(name, (mtype, help_text))
        self.samples.setdefault(name, []).append(f"{name}{_labels(labels)} {_fmt(num)}")

    def lines(self) -> Iterator[str]:
        for name, (mtype, help_text) in self.meta.items():
            yield f"# HELP {name} {help_text}"
            yield f"# TYPE {name} {mtype}"
            yield from self.samples[name]


def render(status: Mapping[str, Any]) -> str:
    """The text exposition of one `ps` result."""
    f = _Families()
    f.add("mediaengine_engine_info", "gauge", "The engine this endpoint describes.",
          {"engine_id": status.get("engine_id", ""), "name": status.get("name", "")}, 1)
    f.add("mediaengine_engine_stopping", "gauge", "1 while the engine is stopping.", {},
          status.get("state") == "stopping")
    for node in status.get("nodes", []):
        base = {"node": node.get("id", ""), "kind": node.get("kind", "")}
        m: Mapping[str, Any] = node.get("metrics") or {}
        f.add("mediaengine_node_up", "gauge", "1 when the node's actor process is running.", base,
              node.get("state") == "running")
        f.add("mediaengine_node_restarts_total", "counter", "Restarts of the node since the engine started.",
              base, node.get("restarts", 0))
        f.add("mediaengine_node_uptime_seconds", "gauge", "Seconds since the node's actor last started.", base,
              node.get("uptime_s", 0.0))
        for direction in ("in", "out"):
            for pad, v in (m.get(f"fps_{direction}") or {}).items():
                f.add("mediaengine_node_fps", "gauge", "Frames per second over the last second.",
                      {**base, "direction": direction, "pad": pad}, v)
            for pad, v in (m.get(f"frames_{direction}") or {}).items():
                f.add("mediaengine_node_frames_total", "counter", "Frames since the actor last started.",
                      {**base, "direction": direction, "pad": pad}, v)
        for where, v in (m.get("drops") or {}).items():
            f.add("mediaengine_node_dropped_frames_total", "counter",
                  "Frames dropped since the actor last started, per edge or pad.", {**base, "where": where}, v)
        for pad, q in (m.get("queues") or {}).items():
            if isinstance(q, Mapping):
                for what in ("held", "depth"):
                    f.add("mediaengine_node_queue_slots", "gauge",
                          "Input ring slots held by the node (held) and the ring's size (depth).",
                          {**base, "pad": pad, "what": what}, q.get(what))
        for quantile, key in (("0.5", "proc_ms_median"), ("0.95", "proc_ms_p95")):
            ms = _number(m.get(key))
            if ms is not None:
                f.add("mediaengine_node_frame_processing_seconds", "gauge",
                      "Time a frame hook takes, over the last 300 frames.", {**base, "quantile": quantile},
                      ms / 1000.0)
        f.add("mediaengine_node_cpu_percent", "gauge", "CPU use of the actor process over the last second.",
              base, m.get("cpu_pct"))
        f.add("mediaengine_node_resident_memory_bytes", "gauge", "Resident memory of the actor process.",
              base, m.get("rss_bytes"))
        actor = m.get("actor")
        if isinstance(actor, Mapping):
            for key, v in actor.items():
                if isinstance(v, Mapping):
                    for sub, sv in v.items():
                        f.add(f"mediaengine_actor_{metric_name(f'{key}_{sub}')}", "gauge",
                              "A figure the actor reports (see the actor kind's metrics()).", base, sv)
                else:
                    f.add(f"mediaengine_actor_{metric_name(str(key))}", "gauge",
                          "A figure the actor reports (see the actor kind's metrics()).", base, v)
    return "\n".join(f.lines()) + "\n"


#: a client has this long per request (socket timeout): one that connects and sends nothing, or
#: trickles its request, is dropped instead of holding a thread and a socket for good
REQUEST_TIMEOUT_S = 5.0
#: at most this many connections are served at once; more are closed at once
MAX_CONNECTIONS = 32


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.request_timeout_s)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            body, code, ctype = b"mediaengine: see /metrics\n", 404, "text/plain; charset=utf-8"
        else:
            body, code, ctype = render(self.server.status).encode(), 200, CONTENT_TYPE
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    status: Mapping[str, Any] = {}
    request_timeout_s = REQUEST_TIMEOUT_S

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # too many at once: drop this one, keep serving the others
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """`/metrics` over HTTP on a thread; `update()` hands it the latest status dict."""

    def __init__(self, host: str, port: int, *, request_timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        server_cls = _Server6 if ":" in host else _Server  # an IPv6 literal such as ::1
        try:
            self._server = server_cls((host, port), _Handler)
            self._server.request_timeout_s = request_timeout_s
        except OSError as exc:
            raise ResourceError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                                where="--metrics-port") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="mediaengine-metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def start(self) -> None:
        self._thread.start()

    def update(self, status: Mapping[str, Any]) -> None:
        self._server.status = status  # a reference swap: atomic, no lock needed

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(2.0)
        self._server.server_close()
