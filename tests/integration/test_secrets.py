"""No stream key leaves the engine, whichever way it was given and wherever it sits in the URL (issue 9.6).

Real engines pull from real URLs that fail (a port that refuses connections): `file_source` and
`rtmp_puller` make their errors from the URL, FFmpeg quotes it, and the supervisor turns the errors into
`last_error`, `error`/`exited` events, `events_recent` and, when it gives up, its `stopping` reason.
Every place the engine lets text out is then grepped for each key (tests/keyscan.py): the log (after
the stop), `ps --json`, `monitor --json --once`, the control snapshot, the PUB socket, the Prometheus
page of `--metrics-port`, and the command line of every process on the machine.

Ways a key is given: `${VAR}` in the topology, a literal `--set node.url=...`, `Engine.start(
overrides=...)`, and `mediaengine play URL` (literal, and `'${VAR}'`).  Where it sits: a path segment
(`/live/KEY`), a segment before the last (`/live/KEY/index.m3u8`), the query (`?key=KEY`), the
password (`user:KEY@host`).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
from mediaengine.control.api import Engine
from mediaengine.sdk.errors import TimeoutError_

from tests import keyscan
from tests.enginekit import ROOT, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

FORMS = ("path", "hls", "query", "userinfo")
#: forms given to an rtmp_puller too (file_source gets all four); fewer actors for a loaded machine,
#: where an actor that takes more than 20 s to start is killed as hung
PULLER_FORMS = ("path", "hls")


def new_key(form: str) -> str:
    return f"sk{form}_{secrets.token_hex(10)}"


def url_of(form: str, port: int, key: str) -> str:
    return {
        "path": f"rtmp://127.0.0.1:{port}/live/{key}",
        "hls": f"http://127.0.0.1:{port}/live/{key}/index.m3u8",
        "query": f"rtmp://127.0.0.1:{port}/live/stream?key={key}",
        "userinfo": f"rtmp://publisher:{key}@127.0.0.1:{port}/live/stream",
    }[form]


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else gets it) but not listening."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts TCP connections (in its backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@pytest.fixture
def metrics_port() -> Iterator[int]:
    """A port for `--metrics-port`, kept ours: bound with SO_REUSEADDR and not listening, so the engine's
    server (which sets SO_REUSEADDR too) can bind it and nobody else's bind(0) can take it meanwhile."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()



def failing_topology(urls: dict[str, str], restart: str = "temporary",
                     supervisor: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `file_source` per URL form and an `rtmp_puller` per PULLER_FORMS (they fail to connect), and a
    tone that keeps the engine running.  An empty URL leaves the node's `url` to `--set` or overrides."""
    nodes: list[dict[str, Any]] = [{"id": "keep", "kind": "tone"}]
    for form, url in urls.items():
        nodes.append({"id": f"f_{form}", "kind": "file_source", "restart": restart,
                      "options": {"timeout_s": 3, **({"url": url} if url else {})}})
        if form in PULLER_FORMS:
            nodes.append({"id": f"p_{form}", "kind": "rtmp_puller", "restart": restart,
                          "options": {"retries": 0, "timeout_s": 3, **({"url": url} if url else {})}})
    doc: dict[str, Any] = {"version": 1, "name": "leaky", "nodes": nodes}
    if supervisor:
        doc["supervisor"] = supervisor
    return doc


def start_with_keys(way: str, port: int, keys: dict[str, str], runtime_dir: Path,
                    args: list[str]) -> Engine:
    """An engine whose failing nodes got their URLs (holding `keys`) the way `way` says."""
    urls = {form: url_of(form, port, keys[form]) for form in FORMS}
    if way == "env":
        env = {f"URL_{form.upper()}": url for form, url in urls.items()}
        topo = failing_topology({form: f"${{URL_{form.upper()}}}" for form in FORMS})
        return Engine.start(topo, env=env, runtime_dir=runtime_dir, args=args)
    topo = failing_topology(dict.fromkeys(FORMS, ""))
    items = [f"{prefix}_{form}.url={url}" for form, url in urls.items() for prefix in ("f", "p")
             if prefix == "f" or form in PULLER_FORMS]
    if way == "set":  # typed on the engine's command line
        return Engine.start(topo, runtime_dir=runtime_dir, args=[*args, *(a for i in items for a in ("--set", i))])
    assert way == "overrides"
    return Engine.start(topo, runtime_dir=runtime_dir, args=args,
                        overrides={i.partition("=")[0]: i.partition("=")[2] for i in items})


def wait_failed(eng: Engine, timeout_s: float = 120.0) -> dict[str, dict[str, Any]]:
    """Every pulling node once it has failed (stopped, with a last_error)."""
    deadline = time.monotonic() + timeout_s
    nodes: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        assert eng.returncode is None, eng.log
        try:
            status = eng.request("ps")
        except TimeoutError_:  # a loaded machine: the supervisor may be busy starting actors
            continue
        nodes = {n["id"]: n for n in status["nodes"] if n["id"] != "keep"}
        if all(n["state"] in ("stopped", "failed") and n["last_error"] for n in nodes.values()):
            return nodes
        time.sleep(0.2)
    raise AssertionError(f"not every node failed within {timeout_s:g} s: "
                         f"{[(n['id'], n['state'], n['last_error']) for n in nodes.values()]}\n{eng.log}")


def assert_no_key(keys: dict[str, str], sources: dict[str, Any]) -> None:
    leaks = {form: keyscan.where_is(key, sources) for form, key in keys.items()}
    assert not any(leaks.values()), f"stream keys found: {leaks}"


@pytest.mark.parametrize("way", ["env", "set", "overrides"])
def test_no_key_in_anything_the_engine_emits_or_any_command_line(way: str, refusing_port: int, metrics_port: int,
                                                                 runtime_dir: Path) -> None:
    keys = {form: new_key(form) for form in FORMS}
    eng = start_with_keys(way, refusing_port, keys, runtime_dir, ["--metrics-port", str(metrics_port)])
    events: list[dict[str, Any]] = []
    try:
        nodes = wait_failed(eng)
        eng.subscribe(lambda topic, ev: events.append(ev))  # replays events_recent: every error so far
        for nid, node in nodes.items():  # the errors did quote the URL (redacted): the check is not vacuous
            assert f"127.0.0.1:{refusing_port}" in node["last_error"] and "***" in node["last_error"], (nid, node)
        assert {e["node"] for e in events if e["name"] == "error"} == set(nodes)
        info = dict(eng.info)
        status = eng.request("snapshot")
        assert len(status["events_recent"]) > len(nodes)
        sources: dict[str, Any] = {
            "the control snapshot": status,
            "`mediaengine ps --json`": keyscan.cli(runtime_dir, "ps", "--json"),
            "`mediaengine monitor --json --once`": keyscan.cli(runtime_dir, "monitor", "--json", "--once"),
            "the PUB socket": keyscan.published(str(info["events"]), ["keep"]),
            "the Prometheus /metrics page": keyscan.prometheus_page(info, eng.request("ps")),
            "process command lines": keyscan.every_cmdline(),
        }
        assert "mediaengine_node_up" in sources["the Prometheus /metrics page"]
        assert_no_key(keys, sources)
        assert eng.stop() == 0
        log = eng.log
        assert "node f_userinfo died" in log and "node p_hls died" in log, log
        assert_no_key(keys, {"the engine log after the stop": log, "events (live and replayed)": events})
    finally:
        eng.stop()


def test_no_key_in_the_stopping_reason_when_the_supervisor_gives_up(refusing_port: int,
                                                                    runtime_dir: Path) -> None:
    keys = {form: new_key(form) for form in FORMS}
    topo = failing_topology(dict.fromkeys(FORMS, ""), restart="permanent",
                            supervisor={"intensity": 2, "period_s": 60, "backoff_initial_s": 0.5})
    items = [a for form in FORMS for prefix in ("f", "p") if prefix == "f" or form in PULLER_FORMS
             for a in ("--set", f"{prefix}_{form}.url={url_of(form, refusing_port, keys[form])}")]
    eng = Engine.start(topo, runtime_dir=runtime_dir, args=items)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)  # a bare SUB socket: no control request while the supervisor is busy
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"events.")
    sub.connect(str(eng.info["events"]))
    events: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 90
        while eng.returncode is None or sub.poll(200):  # until it exits, then what is still queued
            assert time.monotonic() < deadline, eng.log
            if sub.poll(100):
                events.append(msgpack.unpackb(sub.recv_multipart()[1]))
        assert eng.wait(10) == 1, eng.log
        log = eng.log
        stop_line = next((line for line in log.splitlines() if "engine stopped: " in line), log)
        assert "(error 1501)" in stop_line and f"127.0.0.1:{refusing_port}" in stop_line, stop_line
        assert "***" in stop_line, stop_line
        stopping = [e for e in events if e["node"] == "engine" and e["name"] == "stopping"]
        assert len(stopping) == 1 and "***" in stopping[0]["data"]["reason"], stopping
        assert_no_key(keys, {"the engine log": log, "events": events, "process command lines": keyscan.every_cmdline()})
    finally:
        sub.close(0)
        ctx.term()
        eng.stop()


def play(url_arg: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mediaengine.cli", "play", url_arg, "--timeout", "4", "--json"],
                            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("form", FORMS)
def test_play_url_key_leaves_the_command_line_and_the_output(form: str, silent_port: int) -> None:
    key = new_key(form)
    proc = play(url_of(form, silent_port, key))  # typed literally: visible only until the player starts
    try:
        def masked() -> bool:
            line = cmdline(proc.pid)  # empty for a moment around exec, and once the player has exited
            return proc.poll() is None and "mediaengine.cli" in line and key not in line and "*" * len(key) in line

        wait_for(masked, 20, "the key to be masked in the player's command line while it runs")
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert proc.returncode == 1 and "error 1302" in out, out
    assert key not in out, out


def test_play_url_from_the_environment_never_reaches_a_command_line(silent_port: int) -> None:
    key = new_key("path")
    proc = play("${PLAY_URL}", env={"PLAY_URL": url_of("path", silent_port, key)})
    seen: list[str] = []
    try:
        while proc.poll() is None:  # sampled for the whole life of the player
            seen.append(cmdline(proc.pid))
            time.sleep(0.05)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert any("${PLAY_URL}" in c for c in seen)
    assert not any(key in c for c in seen)
    assert proc.returncode == 1 and "error 1302" in out and "/live/***" in out, out
    assert key not in out
