"""`mediaengine monitor` and the Prometheus endpoint against real engines.

What is checked is what a user reads: every node with its figures in `monitor --json --once`, two
monitors attached at once, a restart shown live (restarts, pid, events) without the monitor noticing
anything else, "engine ... is gone" with a non-zero exit when the engine stops, and the same figures
at http://127.0.0.1:N/metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.enginekit import ROOT, Engine, start_on_free_ports, wait_for
from tests.unit.test_monitor_view import parse_exposition

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEMO = "topologies/demo.yaml"
NODES = ["src", "tone", "filt", "venc", "aenc", "rec", "snap"]
FIELDS = {"id", "kind", "state", "pid", "uptime_s", "restarts", "fps_in", "fps_out", "frames_in", "frames_out",
          "dropped", "drop_pct", "drops", "queues", "proc_ms_median", "proc_ms_p95", "cpu_pct", "rss_bytes",
          "paused", "last_error", "actor"}


def cli_env(eng: Engine) -> dict[str, str]:
    return {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(eng.runtime_dir)}


def cli(eng: Engine, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mediaengine.cli", *args], cwd=ROOT, env=cli_env(eng),
                          capture_output=True, text=True, timeout=timeout)


class LiveMonitor:
    """A `monitor --json` process whose lines are read on a thread."""

    def __init__(self, eng: Engine, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "mediaengine.cli", "monitor", "--json", *args], cwd=ROOT,
                                     env=cli_env(eng), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def until(self, cond: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                view = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(view)
            if cond(view):
                return view
        raise AssertionError(f"monitor never showed {what}; last view: {self.seen[-1:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def live_monitors() -> Iterator[Callable[..., LiveMonitor]]:
    started: list[LiveMonitor] = []

    def start(eng: Engine, *args: str) -> LiveMonitor:
        mon = LiveMonitor(eng, *args)
        started.append(mon)
        return mon

    try:
        yield start
    finally:
        for mon in started:
            mon.stop()


def _run_demo(engine_runner: Callable[..., Engine], tmp_path: Path, *extra: str, metrics_port: bool = False
              ) -> Engine:
    """The demo, running with frames in every node; `metrics_port`: serve /metrics on a free port (`eng.port`)."""
    def start(*ports: int) -> Engine:
        port_args = ("--metrics-port", str(ports[0])) if ports else ()
        return engine_runner(DEMO, "--set", f"rec.path={tmp_path / 'm.mp4'}",
                             "--set", f"snap.path={tmp_path / 's.png'}", *extra, *port_args)

    eng, _ = start_on_free_ports(start, 1 if metrics_port else 0)
    # "running a few seconds": every node has reported metrics with frames flowing
    wait_for(lambda: all(n["fps"] > 0 for n in eng.ps()["nodes"]), 15, "frames flowing through every node")
    return eng


def _scrape(port: int) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = parse_exposition(r.read().decode())
    return {name: dict(samples) for name, samples in families.items()}


def test_monitor_once_shows_every_node_and_two_monitors_work_at_once(
        engine_runner: Callable[..., Engine], tmp_path: Path, live_monitors: Callable[..., LiveMonitor]) -> None:
    eng = _run_demo(engine_runner, tmp_path, metrics_port=True)
    port = eng.ports[0]
    ps = {n["id"]: n for n in eng.ps()["nodes"]}

    out = cli(eng, "monitor", "--json", "--once")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    view = json.loads(lines[0])
    info = eng.info()
    assert info is not None
    assert view["engine_id"] == info["engine_id"] and view["state"] == "running" and view["pid"] == eng.proc.pid
    nodes = {n["id"]: n for n in view["nodes"]}
    assert list(nodes) == NODES
    for nid, n in nodes.items():
        assert set(n) >= FIELDS, f"{nid} lacks {FIELDS - set(n)}"
        assert n["state"] == "running" and n["pid"] == ps[nid]["pid"] and n["restarts"] == 0
        assert n["uptime_s"] > 1.0 and n["rss_bytes"] > 10_000_000 and n["cpu_pct"] >= 0
        assert n["fps_in"] > 0 or n["fps_out"] > 0, n
        assert 0 <= n["drop_pct"] <= 100 and n["dropped"] >= 0
        assert n["proc_ms_p95"] >= n["proc_ms_median"] >= 0
    assert nodes["src"]["fps_out"] == pytest.approx(30, abs=3) and nodes["src"]["queues"] == {}
    assert nodes["venc"]["proc_ms_median"] > 0 and nodes["venc"]["actor"]["bitrate_kbps"] == 1000
    for nid in ("filt", "venc", "snap"):
        assert nodes[nid]["queues"]["in"]["depth"] == 4 and 0 <= nodes[nid]["queues"]["in"]["fill_pct"] <= 100
    assert nodes["aenc"]["queues"]["in"]["depth"] == 16
    assert [o["id"] for o in view["outputs"]] == ["rec"] and view["outputs"][0]["recording"] is True
    started = {e["node"] for e in view["events"] if e["name"] == "started"}
    assert started == set(NODES), "a late monitor still sees the start of every node (snapshot events)"
    assert view["totals"]["running"] == 7 and view["totals"]["rss_bytes"] == sum(n["rss_bytes"] for n in nodes.values())

    # the text dashboard of the same
    text = cli(eng, "monitor", "--once")
    assert text.returncode == 0, text.stderr
    for nid in NODES:
        assert any(line.startswith(nid) and "running" in line for line in text.stdout.splitlines()), nid
    assert "RECENT EVENTS" in text.stdout and "\x1b[" not in text.stdout  # not a terminal: no escapes

    # two monitors at once, both live
    a = live_monitors(eng, "--interval", "0.3")
    b = live_monitors(eng, "--interval", "0.3")
    for mon in (a, b):
        first = mon.until(lambda v: True, 15, "a first view")
        assert len(first["nodes"]) == 7
        def flowing(v: dict[str, Any], t: float = first["t"]) -> bool:
            return bool(v["t"] > t + 0.5 and all(n["fps_in"] > 0 or n["fps_out"] > 0 for n in v["nodes"]))

        later = mon.until(flowing, 10, "a later view with frames flowing")
        assert later["engine_id"] == first["engine_id"]
    eng.request("command", node="venc", command="keyframe", args={})
    eng.request("set", node="venc", options={"bitrate_kbps": 1200})
    for mon in (a, b):  # a live event reaches both
        mon.until(lambda v: any(e["name"] == "bitrate_changed" and e["node"] == "venc" for e in v["events"]), 10,
                  "the bitrate_changed event")

    # Prometheus: the same figures
    fam = _scrape(port)
    assert fam["mediaengine_engine_info"] == {f'{{engine_id="{info["engine_id"]}",name="demo"}}': 1.0}
    for nid in NODES:
        kind = ps[nid]["kind"]
        assert fam["mediaengine_node_up"][f'{{node="{nid}",kind="{kind}"}}'] == 1.0
        assert fam["mediaengine_node_resident_memory_bytes"][f'{{node="{nid}",kind="{kind}"}}'] > 10e6
    assert fam["mediaengine_node_fps"]['{node="src",kind="test_pattern",direction="out",pad="out"}'] > 20
    assert fam["mediaengine_node_queue_slots"]['{node="venc",kind="video_encoder",pad="in",what="depth"}'] == 4
    assert fam["mediaengine_node_frames_total"]['{node="rec",kind="recorder",direction="in",pad="video"}'] > 30
    wait_for(lambda: _scrape(port)["mediaengine_actor_bitrate_kbps"]['{node="venc",kind="video_encoder"}'] == 1200,
             5, "the new bitrate in /metrics")
    eng.request("stop")
    assert eng.wait(30) == 0, eng.log
    with pytest.raises(OSError):  # the metrics server went with the engine
        _scrape(port)


def test_monitor_survives_a_restart_and_reports_when_the_engine_is_gone(
        engine_runner: Callable[..., Engine], tmp_path: Path, live_monitors: Callable[..., LiveMonitor]) -> None:
    eng = _run_demo(engine_runner, tmp_path, "--allow-faults", metrics_port=True)
    port = eng.ports[0]
    mon = live_monitors(eng, "--interval", "0.25")
    first = mon.until(lambda v: True, 15, "a first view")
    old_pid = next(n["pid"] for n in first["nodes"] if n["id"] == "filt")

    out = cli(eng, "fault", "filt", "kill")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"fault": "kill", "pid": old_pid}

    def restarted(v: dict[str, Any]) -> bool:
        filt = next(n for n in v["nodes"] if n["id"] == "filt")
        return filt["restarts"] == 1 and filt["state"] == "running" and filt["pid"] not in (None, old_pid) \
            and filt["fps_in"] > 0
    view = mon.until(restarted, 15, "filt restarted and running")
    names = [(e["node"], e["name"]) for v in mon.seen for e in v["events"]]
    for expected in (("filt", "fault_injected"), ("filt", "exited"), ("filt", "restarting"), ("filt", "started")):
        assert expected in names, f"{expected} not among the monitor's events {names}"
    assert all(n["state"] == "running" for n in view["nodes"])
    wait_for(lambda: _scrape(port)["mediaengine_node_restarts_total"]['{node="filt",kind="overlay"}'] == 1, 5,
             "the restart in /metrics")

    eng.proc.send_signal(2)  # SIGINT: the engine stops in order
    assert eng.wait(30) == 0, eng.log
    assert mon.proc.wait(15) == 1
    assert mon.proc.stderr is not None
    err = mon.proc.stderr.read()
    info_id = next(iter(eng.engine_ids))
    assert f"engine {info_id} is gone" in err and "SIGINT" in err, err

    # attaching to nothing says so
    out = cli(eng, "monitor", "--once")
    assert out.returncode == 1 and "no engine is running" in out.stderr


def test_fault_is_refused_without_allow_faults(engine_runner: Callable[..., Engine], tmp_path: Path) -> None:
    eng = _run_demo(engine_runner, tmp_path, "--duration", "20")
    pid = eng.node("filt")["pid"]
    for args in (("filt", "kill"), ("venc", "slow", "200"), ("aenc", "exit", "3")):
        out = cli(eng, "fault", *args)
        assert out.returncode == 1
        assert "--allow-faults" in out.stderr and "(error 1407 NotAllowedError)" in out.stderr, out.stderr
    bad = cli(eng, "fault", "venc", "slow")
    assert bad.returncode == 1 and "needs MS" in bad.stderr and "1403" in bad.stderr
    # proof that nothing happened: the same process goes on reporting, 30 frames and a metrics message later
    # (a kill would have shown as a new pid with a restart, its frame count starting again from 0)
    frames = sum(eng.node("filt")["metrics"]["frames_in"].values())

    def reported_on() -> dict[str, Any] | None:
        n = eng.node("filt")
        return n if n["pid"] != pid or sum(n["metrics"]["frames_in"].values()) >= frames + 30 else None

    node = wait_for(reported_on, 10, "filt reporting 30 more frames")
    assert node["pid"] == pid and node["restarts"] == 0 and node["state"] == "running"
    eng.request("stop")
    assert eng.wait(30) == 0, eng.log
    with contextlib.suppress(FileNotFoundError):
        assert not any(eng.runtime_dir.iterdir())
