"""Everything an engine lets out, as text, so tests can grep it for a stream key (issue 9.6, 10.7).

What a user or another local user can see: the engine's log, `mediaengine ps --json`,
`mediaengine monitor --json --once`, the control `snapshot` (metrics, `events_recent`, `last_error`),
what the PUB socket publishes (events and every node's metrics), the Prometheus `/metrics` page and
the command line of every process on the machine.  Each function returns text, named by where it
came from, so a failing assertion says where the key leaked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgpack
import zmq
from mediaengine.supervision.prometheus import render

ROOT = Path(__file__).resolve().parents[1]


def cli(runtime_dir: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """stdout + stderr of `mediaengine ARGS` against the engines of `runtime_dir`."""
    return cli_started(runtime_dir, *args, env=env)()


def cli_started(runtime_dir: Path, *args: str, env: Mapping[str, str] | None = None) -> Callable[[], str]:
    """Start `mediaengine ARGS` now; the returned function waits for it and gives its stdout + stderr.
    Several started together run side by side (each is mostly Python's start-up), at a lower priority than
    the engine they look at: an observer must not make a push on a 2-core machine drop frames."""
    full = {**os.environ, **(env or {}), "MEDIAENGINE_RUNTIME_DIR": str(runtime_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "mediaengine.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=full,
                            preexec_fn=lambda: os.nice(10))

    def output() -> str:
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return out

    return output


def every_cmdline() -> dict[int, str]:
    """The command line of every process this user can see (all of them: /proc/<pid>/cmdline is public)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                out[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
            except OSError:
                continue
    return out


def published(events_endpoint: str, nodes: Iterable[str], timeout_s: float = 15.0) -> list[dict[str, Any]]:
    """What the PUB socket sends until every node in `nodes` has published its metrics at least once
    (actors report about once a second), decoded."""
    wanted = set(nodes)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(events_endpoint)
    got: list[dict[str, Any]] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while not wanted <= seen:
            assert time.monotonic() < deadline, f"no metrics from {sorted(wanted - seen)} within {timeout_s:g} s"
            if sub.poll(100):
                topic, raw = sub.recv_multipart()
                msg = msgpack.unpackb(raw)
                got.append({"topic": topic.decode(errors="replace"), "message": msg})
                if topic.startswith(b"metrics."):
                    seen.add(topic[len("metrics."):].decode())
    finally:
        sub.close(0)
        ctx.term()
    return got


def prometheus_page(info: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    """The engine's `/metrics` page when it serves one (`--metrics-port`), else the same page rendered
    here from its `ps` status by the code the server runs."""
    url = info.get("metrics")
    if url:
        with urllib.request.urlopen(str(url), timeout=10) as reply:
            return str(reply.read().decode())
    return render(status)


def where_is(key: str, sources: Mapping[str, Any]) -> list[str]:
    """Names of the sources whose text (JSON for structured ones) contains `key`."""
    found = []
    for name, value in sources.items():
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
        if key in text:
            found.append(name)
    return found
